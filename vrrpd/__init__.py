"""vrrpd: a VRRPv2 router (RFC 3768) that can take keepalived's place.

Pure core: :mod:`vrrpd.wire` (codec), :mod:`vrrpd.fsm` (state machine), :mod:`vrrpd.track` (track-script
arithmetic). Host side: :mod:`vrrpd.config` (TOML in keepalived's vocabulary), :mod:`vrrpd.netlink` (VIPs,
link events), :mod:`vrrpd.sockets` (VRRP raw socket, GARP), :mod:`vrrpd.scripts` (track and notify scripts),
:mod:`vrrpd.control` (control socket), :mod:`vrrpd.admin` (its ctl commands), :mod:`vrrpd.metrics`
(Prometheus text and the optional HTTP listener), :mod:`vrrpd.daemon` (the asyncio driver); CLI in
:mod:`vrrpd.__main__` and :mod:`vrrpd.ctl`.
Nothing is imported here, so that the daemon's memory stays small.
"""
