"""``vrrpd import keepalived.conf [-o node.toml]``: a keepalived configuration as vrrpd's node.toml.

Pure mapping (:func:`convert`) from the tree :mod:`rmqfd.kaconf` reads to commented TOML, with every
setting that does not carry over in a :class:`rmqfd.migrate.Report`. Values are checked the way keepalived
2.2.7 checks them (vrrp_parser.c): what keepalived calls a configuration error is an error here.

keepalived's start-up rules are applied here, so the output means the same with any vrrpd default:

* no ``priority``: 255 with ``state MASTER``, else 100;
* ``state MASTER`` clears ``nopreempt`` and ``preempt_delay``; priority 255 clears ``nopreempt``;
  ``nopreempt`` clears ``preempt_delay``;
* ``auth_pass`` longer than 8 bytes is cut to 8 (what goes on the wire);
* ``vrrp_garp_*`` / ``vrrp_*_advert`` in ``global_defs`` are the defaults of every instance.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface, ip_address
from typing import Any

from rmqfd.kaconf import Document, KaConfError, Stmt, split_command
from rmqfd.migrate import (
    Report,
    Table,
    check_with,
    comment,
    convert_with,
    document,
    import_file,
    import_parser,
    toml_key,
    toml_value,
)

__all__ = ["convert", "main"]

SHELL_CHARS = re.compile(r"[|&;<>()$`*?\[\]~{}]|^\s*\w+=")
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

_HARMLESS_GLOBAL = {
    "notification_email": "mail alerts are not sent (use notify scripts)",
    "notification_email_from": "mail alerts are not sent",
    "smtp_server": "mail alerts are not sent",
    "smtp_helo_name": "mail alerts are not sent",
    "smtp_connect_timeout": "mail alerts are not sent",
    "smtp_alert": "mail alerts are not sent",
    "smtp_alert_vrrp": "mail alerts are not sent",
    "smtp_alert_checker": "mail alerts are not sent",
    "no_email_faults": "mail alerts are not sent",
    "enable_traps": "no SNMP (vrrpd exports Prometheus metrics: global.metrics_listen)",
    "enable_snmp_vrrp": "no SNMP (vrrpd exports Prometheus metrics: global.metrics_listen)",
    "enable_snmp_keepalived": "no SNMP",
    "enable_snmp_rfc": "no SNMP",
    "enable_snmp_rfcv2": "no SNMP",
    "enable_snmp_rfcv3": "no SNMP",
    "snmp_socket": "no SNMP",
    "vrrp_skip_check_adv_addr": "vrrpd does not compare the advertised address list either",
    "vrrp_priority": "process scheduling priority (use the systemd unit's Nice=)",
    "vrrp_no_swap": "memory locking (use the systemd unit)",
    "vrrp_rt_priority": "real-time scheduling (use the systemd unit)",
    "vrrp_cpu_affinity": "CPU affinity (use the systemd unit)",
    "vrrp_rlimit_rttime": "real-time limits (use the systemd unit)",
    "checker_priority": "LVS checker process (not vrrpd's)",
    "checker_no_swap": "LVS checker process",
    "bfd_priority": "BFD process",
    "bfd_no_swap": "BFD process",
    "max_auto_priority": "real-time scheduling",
    "min_auto_priority_delay": "real-time scheduling",
    "linkbeat_use_polling": "vrrpd follows links through netlink",
    "lvs_flush": "LVS (tcplb import --keepalived)",
    "lvs_flush_onstop": "LVS",
    "lvs_timeouts": "LVS",
    "lvs_sync_daemon": "LVS connection synchronisation (tcplb proxies: clients reconnect after a failover)",
    "vrrp_check_unicast_src": "source checks of unicast adverts",
    "vrrp_iptables": "vrrpd sets no firewall rules",
    "vrrp_ipsets": "vrrpd sets no firewall rules",
    "vrrp_netlink_cmd_rcv_bufs": "netlink buffer sizes",
    "vrrp_netlink_cmd_rcv_bufs_force": "netlink buffer sizes",
    "vrrp_netlink_monitor_rcv_bufs": "netlink buffer sizes",
    "vrrp_netlink_monitor_rcv_bufs_force": "netlink buffer sizes",
    "process_names": "process names",
    "process_name": "process names",
    "vrrp_process_name": "process names",
    "checker_process_name": "process names",
    "bfd_process_name": "process names",
    "dynamic_interfaces": "interfaces are looked up when vrrpd starts",
    "vrrp_garp_interval": "the delay between gratuitous ARPs of one burst (vrrpd sends them back to back)",
    "vrrp_gna_interval": "IPv6 only",
    "vrrp_min_garp": "fewer gratuitous ARPs (vrrpd: garp_master_repeat)",
    "vrrp_notify_priority_changes": "notify on priority changes",
    "script_security_warn": "script security warnings",
    "child_wait_time": "child processes",
    "random_seed": "random seed",
    "instance": "config id (see --config-id)",
    "network_namespace": "runs in the namespace it is started in",
    "use_pid_dir": "pid files (systemd)",
    "vrrp_version": "",
}

_HARMLESS_INSTANCE = {
    "smtp_alert": "mail alerts are not sent",
    "debug": "debug level (use --log-level)",
    "accept": "vrrpd sets no firewall rules; VIPs always accept traffic",
    "no_accept": "vrrpd sets no firewall rules; VIPs always accept traffic",
    "skip_check_adv_addr": "vrrpd does not compare the advertised address list",
    "promote_secondaries": "kernel address promotion",
    "unicast_ttl": "unicast adverts use TTL 255",
    "check_unicast_src": "source checks of unicast adverts",
    "kernel_rx_buf_size": "socket buffer size",
    "linkbeat_use_polling": "vrrpd follows links through netlink",
    "garp_lower_prio_delay": "a lower-priority advert is answered by gratuitous ARPs at once",
    "garp_interval": "delay between gratuitous ARPs of one burst",
    "gna_interval": "IPv6 only",
    "lvs_sync_daemon_interface": "LVS connection synchronisation (old keyword; tcplb proxies instead)",
    "notify_priority_changes": "notify on priority changes",
    "old_unicast_checksum": "checksum of unicast adverts from keepalived < 1.3.6",
}

_UNSUPPORTED_INSTANCE = {
    "use_vmac": "no virtual MAC: the VIP moves with the host's own MAC and gratuitous ARPs "
    "(switch ARP caches update on failover instead of a stable MAC)",
    "use_vmac_addr": "no virtual MAC",
    "vmac_xmit_base": "no virtual MAC",
    "use_ipvlan": "no ipvlan interface: the VIP goes on the instance's interface",
    "virtual_routes": "routes are not added or removed with the VIP",
    "virtual_rules": "policy rules are not added or removed with the VIP",
    "virtual_ipaddress_excluded": "these addresses are not added on becoming MASTER",
    "track_file": "the instance does not follow this file",
    "track_bfd": "the instance does not follow BFD",
    "track_src_ip": "the source address is not tracked",
    "mcast_dst_ip": "adverts go to 224.0.0.18",
    "native_ipv6": "IPv4 only",
    "vrf": "no VRF support",
    "notify_deleted": "not run",
    "notify_master_rx_lower_pri": "not run",
    "unicast_fault_no_peer": "an empty unicast_peer already means FAULT in vrrpd",
    "down_timer_adverts": "the master-down timer is RFC 3768's (3 adverts + skew)",
}

_UNSUPPORTED_TOP = {
    "vrrp_sync_group": "instances fail over independently, not as a group "
    "(keep them on one VRID or track the same scripts)",
    "static_ipaddress": "these addresses are not configured (configure them with the host's network setup)",
    "static_routes": "these routes are not configured (configure them with the host's network setup)",
    "static_rules": "these rules are not configured",
    "vrrp_track_file": "no file tracking (use a vrrp_script reading the file)",
    "track_file": "no file tracking",
    "track_group": "no track groups",
    "garp_group": "no garp groups",
    "linkbeat_interfaces": "links are followed through netlink",
    "interface_up_down_delays": "interface state changes apply at once",
    "bfd_instance": "no BFD",
    "net_namespace": "vrrpd runs in the namespace it is started in",
    "net_namespace_ipvs": "LVS",
    "namespace_with_ipsets": "no ipsets",
}

_LVS_TOP = {"virtual_server", "virtual_server_group", "SSL"}


# ---------------------------------------------------------------------------------------------- values


def _uint(s: Stmt, idx: int, lo: int, hi: int, rep: Report, what: str, *, signed: bool = False) -> int | None:
    """read_unsigned_strvec() (``signed``: a leading - allowed too): a decimal integer lo..hi, else an
    error naming the line."""
    v = s.words[idx] if len(s.words) > idx else ""
    if not re.fullmatch(r"[-+]?\d{1,12}" if signed else r"\+?\d{1,12}", v) or not lo <= int(v) <= hi:
        rep.error(
            s.where, f"{what} '{v}' is not valid: must be an integer {lo}..{hi} (keepalived refuses it)"
        )
        return None
    return int(v)


def _int(s: Stmt, idx: int, lo: int, hi: int, rep: Report, what: str) -> int | None:
    return _uint(s, idx, lo, hi, rep, what, signed=True)


def _decimal(s: Stmt, idx: int, lo: float, hi: float, rep: Report, what: str) -> float | None:
    """read_decimal_unsigned_strvec(): seconds with up to 6 decimals."""
    v = s.words[idx] if len(s.words) > idx else ""
    if not re.fullmatch(r"\+?\d{1,9}(\.\d{0,6})?", v) or not lo <= float(v) <= hi:
        rep.error(s.where, f"{what} '{v}' is not valid: must be a number of seconds {lo:g}..{hi:g}")
        return None
    return float(v)


def _bool_arg(s: Stmt, rep: Report) -> bool | None:
    """keepalived's optional true/false argument (check_true_false): no argument = true."""
    if len(s.words) < 2:
        return True
    v = s.words[1].lower()
    if v in ("true", "on", "yes"):
        return True
    if v in ("false", "off", "no"):
        return False
    rep.error(s.where, f"{s.keyword} '{s.words[1]}': must be true or false")
    return None


def _argv(s: Stmt, rep: Report, what: str) -> tuple[list[str] | None, str | None]:
    """A script or notify command: keepalived re-reads the raw line with quotes and escapes, takes its second
    word as the command and splits that again. Returns (argv, user spec)."""
    try:
        words = split_command(s.raw, s.file, s.line)
        if len(words) < 2 or not words[1].strip():
            rep.error(s.where, f"{what}: no command")
            return None, None
        argv = split_command(words[1], s.file, s.line)
    except KaConfError as e:
        rep.error(s.where, f"{what}: {e.message}")
        return None, None
    if not argv or not argv[0]:
        rep.error(s.where, f"{what}: no command")
        return None, None
    if any("\0" in a for a in argv):
        rep.error(s.where, f"{what}: NUL character in the command")
        return None, None
    is_sh = len(argv) >= 3 and argv[0].rsplit("/", 1)[-1] in ("sh", "bash", "dash") and argv[1] == "-c"
    if SHELL_CHARS.search(words[1]) and not is_sh:
        rep.warning(
            s.where,
            f"{what} {words[1]!r} looks like a shell command line (pipes, redirections, $, globs or "
            "variables): keepalived 1.x ran it with /bin/sh -c, keepalived 2.x and vrrpd run the words as an "
            f"argv without a shell; imported as {argv!r}. If it needs a shell, write "
            f'["/bin/sh", "-c", {toml_value(words[1])}]',
        )
    user = None
    if len(words) > 2:
        user = words[2] + (f":{words[3]}" if len(words) > 3 else "")
    return argv, user


# ---------------------------------------------------------------------------------------------- model


# ---------------------------------------------------------------------------------------------- convert

_GLOBAL_INSTANCE_DEFAULTS = {
    "vrrp_garp_master_delay": "garp_master_delay",
    "vrrp_garp_master_repeat": "garp_master_repeat",
    "vrrp_garp_master_refresh": "garp_master_refresh",
    "vrrp_garp_master_refresh_repeat": "garp_master_refresh_repeat",
    "vrrp_garp_lower_prio_repeat": "garp_lower_prio_repeat",
    "vrrp_lower_prio_no_advert": "lower_prio_no_advert",
    "vrrp_higher_prio_send_advert": "higher_prio_send_advert",
}


class _Converter:
    def __init__(self, doc: Document, rep: Report) -> None:
        self.doc = doc
        self.rep = rep
        self.processes: list[Table] = []
        self.cur_iface: str | None = None
        self.script_where: dict[str, str] = {}
        self.instance_names: dict[str, str] = {}
        self.process_names: dict[str, str] = {}
        self.glob = Table("[global]", "", "")
        self.instances: list[Table] = []
        self.scripts: list[Table] = []
        self.script_names: dict[str, str] = {}
        self.inst_defaults: dict[str, tuple[Any, str]] = {}
        self.any_scripts = False

    def run(self) -> str | None:
        tops = self.doc.stmts
        for s in tops:
            if s.keyword == "global_defs":
                self.global_defs(s)
        for s in tops:
            if s.keyword == "vrrp_script":
                self.script(s)
            elif s.keyword == "vrrp_track_process":
                self.process(s)
        for s in tops:
            k = s.keyword
            if k in ("global_defs", "vrrp_script", "vrrp_track_process"):
                continue
            if k == "vrrp_instance":
                self.instance(s)
            elif k in _LVS_TOP:
                self.rep.warning(
                    s.where, f"{k}: LVS is not vrrpd's: import it with `tcplb import --keepalived`"
                )
            elif k in _UNSUPPORTED_TOP:
                self.rep.unsupported(s.where, f"{k}: {_UNSUPPORTED_TOP[k]}")
            else:
                self.rep.unsupported(s.where, f"unknown keyword '{k}' (keepalived reports it too)")
        if not self.instances and not self.rep.errors:
            self.rep.error(
                self.doc.files[0] + ":1" if self.doc.files else "?:1", "no vrrp_instance to import"
            )
        if self.any_scripts and self.glob.get("script_user") is None:
            self.rep.warning(
                self.doc.files[0] + ":1" if self.doc.files else "?:1",
                "no script_user: keepalived ran scripts as keepalived_script (when that user exists) or "
                "root; vrrpd runs them as its own user (root under systemd). Set global.script_user",
            )
        if self.rep.errors:
            return None
        head = [
            f"# vrrpd configuration imported from {comment(', '.join(self.doc.files))} by `vrrpd import`.",
            "# Each entry cites the keepalived.conf line it comes from. Check with: vrrpd -c FILE --check",
        ]
        tables = [self.glob] if self.glob.entries else []
        return document(head, self.rep, [*tables, *self.instances, *self.scripts, *self.processes])

    # --- global_defs
    def global_defs(self, g: Stmt) -> None:
        rep = self.rep
        for s in g.children():
            k = s.keyword
            if k in ("router_id", "lvs_id"):
                if len(s.words) < 2:
                    rep.error(s.where, f"{k} needs a value")
                    continue
                rid = s.words[1]
                if k == "lvs_id":
                    rep.warning(
                        s.where,
                        "lvs_id is the keepalived 1.x name of router_id (2.x refuses it): imported as "
                        "router_id",
                    )
                if NAME_RE.match(rid):
                    self.glob.set("router_id", rid, s.where)
                else:
                    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", rid)[:64]
                    rep.warning(
                        s.where,
                        f"router_id {rid!r} has characters vrrpd does not allow in a name; "
                        f"imported as {safe!r} (it names the control socket)",
                    )
                    self.glob.set("router_id", safe, s.where)
            elif k == "script_user":
                if len(s.words) < 2:
                    rep.error(s.where, "script_user needs a user name")
                    continue
                spec = s.words[1] + (f":{s.words[2]}" if len(s.words) > 2 else "")
                if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?", spec):
                    rep.error(s.where, f"script_user {spec!r}: not a user[:group] name")
                    continue
                self.glob.set("script_user", spec, s.where)
            elif k == "enable_script_security":
                self.glob.set("enable_script_security", True, s.where)
            elif k == "vrrp_startup_delay":
                d = _decimal(s, 1, 0, 3600, rep, k)
                if d is not None:
                    self.glob.set(k, d, s.where)
            elif k in _GLOBAL_INSTANCE_DEFAULTS:
                self.global_instance_default(s)
            elif k in ("vrrp_mcast_group4", "vrrp_mcast_group6"):
                rep.unsupported(
                    s.where,
                    f"{k}: adverts go to 224.0.0.18 (RFC 3768); peers on another group will not hear vrrpd",
                )
            elif k == "vrrp_strict":
                rep.warning(
                    s.where,
                    "vrrp_strict: vrrpd is not strict (it accepts authentication, unicast and "
                    "no firewall rules); adverts on the wire are the same",
                )
            elif k == "vrrp_version":
                if s.args[:1] != ("2",):
                    rep.unsupported(
                        s.where,
                        f"vrrp_version {' '.join(s.args)}: vrrpd speaks VRRPv2 only; a "
                        "VRRPv3 peer will not interoperate",
                    )
                else:
                    rep.ignored(s.where, "vrrp_version 2: vrrpd speaks VRRPv2")
            elif k in ("vrrp_notify_fifo", "notify_fifo", "vrrp_notify_fifo_script", "notify_fifo_script"):
                rep.unsupported(
                    s.where,
                    f"{k}: no notify FIFO; use notify scripts (notify_master/backup/fault and notify)",
                )
            elif k == "vrrp_garp_interval" and s.args[:1] in (("0",), ("0.0",)):
                rep.warning(
                    s.where,
                    "vrrp_garp_interval 0: written for an older keepalived (2.2.7 refuses 0); no delay "
                    "between gratuitous ARPs is the default: drop it",
                )
            elif k in _HARMLESS_GLOBAL:
                rep.ignored(s.where, f"{k}" + (f": {_HARMLESS_GLOBAL[k]}" if _HARMLESS_GLOBAL[k] else ""))
            elif k.startswith("smtp_") or k.startswith("notification_"):
                rep.ignored(s.where, f"{k}: mail alerts are not sent")
            elif k.startswith("lvs_") or k.startswith("checker_") or k.startswith("bfd_"):
                rep.ignored(s.where, f"{k}: not vrrpd's (LVS / checker / BFD)")
            else:
                rep.unsupported(s.where, f"unknown global_defs keyword '{k}'")

    def global_instance_default(self, s: Stmt) -> None:
        key = _GLOBAL_INSTANCE_DEFAULTS[s.keyword]
        val = self.value_of(key, s, 1)
        if val is not None:
            self.inst_defaults[key] = (val, s.where)

    def value_of(self, key: str, s: Stmt, idx: int) -> Any:
        rep = self.rep
        if key == "garp_master_delay":
            return _uint(s, idx, 0, 1000, rep, s.keyword)
        if key in ("garp_master_repeat", "garp_master_refresh_repeat"):
            v = _uint(s, idx, 0, 255, rep, s.keyword)
            if v == 0:
                rep.warning(
                    s.where,
                    f"{s.keyword} 0: accepted by keepalived before 2.0.7; now 1 (the minimum, "
                    "what keepalived 2.x uses)",
                )
                v = 1
            return v
        if key == "garp_master_refresh":
            return _uint(s, idx, 0, 86400, rep, s.keyword)
        if key == "garp_lower_prio_repeat":
            return _uint(s, idx, 0, 255, rep, s.keyword)
        if key in ("lower_prio_no_advert", "higher_prio_send_advert"):
            sub = Stmt((s.keyword, *s.words[idx:]), s.file, s.line, s.raw)
            return _bool_arg(sub, rep)
        raise AssertionError(key)

    # --- vrrp_script
    def script(self, s: Stmt) -> None:
        rep = self.rep
        names = self.block_name(s)
        if names is None:
            return
        orig, name = names
        if any(v == name and o != orig for o, v in self.script_names.items()):
            rep.error(s.where, f"vrrp_script {orig}: its vrrpd name {name!r} is also another script's")
            return
        if orig in self.script_names:
            rep.warning(
                s.where,
                f"vrrp_script {orig} defined again (also {self.script_where[orig]}); "
                "the later one is kept, as keepalived does",
            )
            self.scripts = [t for t in self.scripts if t.header != f"[vrrp_script.{toml_key(name)}]"]
        t = Table(f"[vrrp_script.{toml_key(name)}]", s.where, f"{s.where} vrrp_script {name}")
        for c in s.children():
            k = c.keyword
            if k == "script":
                argv, extra = _argv(c, rep, "script")
                if argv is not None:
                    t.set("script", argv, c.where)
                if extra is not None:
                    rep.warning(
                        c.where,
                        f"script: words after the command ({extra.replace(':', ' ')}...) are ignored by "
                        "keepalived (only the first word or quoted string is the command); imported as "
                        f"keepalived runs it: {argv!r}. Quote the whole command line to pass them",
                    )
            elif k in ("interval", "timeout"):
                v = _uint(c, 1, 0, 86400, rep, f"vrrp_script {name} {k}")
                if v == 0:
                    rep.warning(
                        c.where,
                        f"{k} 0: accepted by keepalived before 2.0.7; now 1 (the minimum, what "
                        "keepalived 2.x uses)",
                    )
                    v = 1
                if v is not None:
                    t.set(k, v, c.where)
            elif k == "weight":
                v = _int(c, 1, -253, 253, rep, f"vrrp_script {name} weight")
                if v is not None:
                    t.set("weight", v, c.where)
                if len(c.words) > 2:
                    if c.words[2] == "reverse":
                        rep.unsupported(
                            c.where,
                            "weight ... reverse: vrrpd has no reversed weights; the weight "
                            "is imported unreversed (the priority moves the other way)",
                        )
                    else:
                        rep.error(c.where, f"unknown weight option '{c.words[2]}'")
            elif k in ("rise", "fall"):
                v = _uint(c, 1, 1, 1000, rep, f"vrrp_script {name} {k}")
                if v is not None:
                    t.set(k, v, c.where)
            elif k == "user":
                if len(c.words) < 2:
                    rep.error(c.where, "user needs a name")
                else:
                    t.set("user", c.words[1] + (f":{c.words[2]}" if len(c.words) > 2 else ""), c.where)
            elif k == "init_fail":
                t.set("init_fail", True, c.where)
            else:
                rep.unsupported(c.where, f"unknown vrrp_script keyword '{k}'")
        if not t.has("script"):
            rep.error(s.where, f"vrrp_script {name}: no script")
            return
        if t.has("interval") and not t.has("timeout"):
            pass  # keepalived and vrrpd: the timeout defaults to the interval
        self.script_names[orig] = name
        self.script_where[orig] = s.where
        self.scripts.append(t)
        self.any_scripts = True

    # --- vrrp_track_process
    def process(self, s: Stmt) -> None:
        rep = self.rep
        names = self.block_name(s)
        if names is None:
            return
        orig, name = names
        if name in self.process_names.values():
            rep.error(
                s.where, f"vrrp_track_process {orig}: defined twice (or its name {name!r} is another's)"
            )
            return
        t = Table(f"[vrrp_track_process.{toml_key(name)}]", s.where, f"{s.where} vrrp_track_process {name}")
        for c in s.children():
            k = c.keyword
            if k == "process":
                if len(c.words) < 2:
                    rep.error(c.where, "process needs a process name")
                    continue
                t.set("process", c.words[1] if len(c.words) == 2 else list(c.words[1:]), c.where)
            elif k == "param_match":
                if c.args[:1] not in (("exact",), ("partial",), ("initial",)):
                    rep.error(c.where, "param_match must be exact, partial or initial")
                else:
                    t.set(k, c.words[1], c.where)
            elif k == "full_command":
                t.set(k, True, c.where)
            elif k in ("quorum", "quorum_max"):
                v = _uint(c, 1, 0, 65535, rep, k)
                if v is not None:
                    t.set(k, v, c.where)
            elif k == "weight":
                v = _int(c, 1, -254, 254, rep, "weight")
                if v is not None:
                    t.set(k, v, c.where)
                if len(c.words) > 2:
                    rep.unsupported(c.where, "weight ... reverse: vrrpd has no reversed weights")
            elif k in ("delay", "fork_delay", "terminate_delay"):
                d = _decimal(c, 1, 0, 3600, rep, k)
                if d is not None:
                    t.set(k, d, c.where)
            else:
                rep.unsupported(c.where, f"unknown vrrp_track_process keyword '{k}'")
        if not t.has("process"):
            rep.error(s.where, f"vrrp_track_process {name}: no process")
            return
        self.process_names[orig] = name
        self.processes.append(t)

    # --- vrrp_instance
    def instance(self, s: Stmt) -> None:
        rep = self.rep
        names = self.block_name(s)
        if names is None:
            return
        name = names[1]
        if name in self.instance_names:
            rep.error(s.where, f"vrrp_instance {name} defined twice (also {self.instance_names[name]})")
            return
        self.instance_names[name] = s.where
        t = Table("[[vrrp_instance]]", s.where, f"{s.where} vrrp_instance {name}")
        t.set("name", name, s.where)
        state: tuple[str, str] | None = None
        prio: int | None = None
        prio_where = s.where
        nopreempt: str | None = None
        preempt_delay: tuple[float, str] | None = None
        self.cur_iface = next(
            (c.words[1] for c in s.children() if c.keyword == "interface" and len(c.words) > 1), None
        )
        for key, (val, where) in self.inst_defaults.items():
            t.set(key, val, where, "(global_defs)")
        for c in s.children():
            k = c.keyword
            if k == "state":
                st = c.words[1] if len(c.words) > 1 else ""
                if st not in ("MASTER", "BACKUP"):
                    rep.error(c.where, f"state '{st}': must be MASTER or BACKUP")
                elif st == "BACKUP" and state is not None and state[0] == "MASTER":
                    rep.warning(c.where, "state BACKUP after state MASTER: keepalived keeps MASTER")
                else:
                    state = (st, c.where)
            elif k == "interface":
                if len(c.words) < 2 or not re.fullmatch(r"[^/\s:]{1,15}", c.words[1]):
                    rep.error(c.where, "interface: needs an interface name of 1..15 characters")
                else:
                    t.set("interface", c.words[1], c.where)
            elif k == "virtual_router_id":
                v = _uint(c, 1, 1, 255, rep, "virtual_router_id")
                if v is not None:
                    t.set("virtual_router_id", v, c.where)
            elif k == "priority":
                v = _uint(c, 1, 1, 255, rep, "priority")
                if v is not None:
                    prio, prio_where = v, c.where
            elif k == "advert_int":
                d = _decimal(c, 1, 0.01, 255, rep, "advert_int")
                if d is not None:
                    if not d.is_integer():
                        rep.unsupported(
                            c.where,
                            f"advert_int {c.words[1]}: VRRPv2 adverts carry whole seconds; "
                            f"imported as {max(1, round(d))}",
                        )
                    t.set("advert_int", max(1, round(d)), c.where)
            elif k == "nopreempt":
                nopreempt = c.where
            elif k == "preempt":
                rep.warning(c.where, "preempt: the default (old keyword); nothing to import")
                nopreempt = None
            elif k == "preempt_delay":
                d = _decimal(c, 1, 0, 1000, rep, "preempt_delay")
                if d is not None:
                    preempt_delay = (d, c.where)
            elif k == "authentication":
                self.auth(c, t)
            elif k == "virtual_ipaddress":
                self.vips(c, t)
            elif k in ("mcast_src_ip", "unicast_src_ip"):
                a = self.ipv4(c, 1)
                if a is not None:
                    t.set(k, a, c.where)
            elif k == "unicast_peer":
                peers: list[str] = []
                for p in self.items(c):
                    a = self.ipv4(p, 0)
                    if a is None:
                        continue
                    if a in peers:
                        rep.warning(p.where, f"unicast peer {a} listed twice")
                        continue
                    extra = p.words[1:]
                    if extra:
                        rep.ignored(
                            p.where,
                            f"unicast peer options {' '.join(extra)}: adverts are checked for TTL 255",
                        )
                    peers.append(a)
                t.set("unicast_peer", peers, c.where)
            elif k == "track_script":
                self.track_script(c, t)
            elif k == "track_interface":
                self.track_interface(c, t)
            elif k == "track_process":
                self.track_refs(c, t, "track_process", self.process_names, "vrrp_track_process", 254)
            elif k in ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify"):
                if t.has(k):
                    rep.warning(
                        c.where, f"{k} given twice: keepalived keeps the first one, so does the import"
                    )
                    continue
                argv, user = _argv(c, rep, k)
                if argv is not None:
                    t.set(k, argv, c.where)
                if user is not None:
                    rep.unsupported(
                        c.where,
                        f"{k}: the script's own user {user} (vrrpd runs every notify script "
                        "as global.script_user)",
                    )
            elif k in (
                "garp_master_delay",
                "garp_master_repeat",
                "garp_master_refresh",
                "garp_master_refresh_repeat",
                "garp_lower_prio_repeat",
                "lower_prio_no_advert",
                "higher_prio_send_advert",
            ):
                v = self.value_of(k, c, 1)
                if v is not None:
                    t.set(k, v, c.where)
            elif k == "dont_track_primary":
                rep.unsupported(
                    c.where, "dont_track_primary: vrrpd goes to FAULT when the instance's interface goes down"
                )
            elif k == "strict_mode":
                rep.warning(c.where, "strict_mode: vrrpd is not strict (adverts on the wire are the same)")
            elif k == "version":
                if c.args[:1] != ("2",):
                    rep.unsupported(c.where, f"version {' '.join(c.args)}: vrrpd speaks VRRPv2 only")
            elif k in _HARMLESS_INSTANCE:
                rep.ignored(c.where, f"{k}: {_HARMLESS_INSTANCE[k]}")
            elif k in _UNSUPPORTED_INSTANCE:
                rep.unsupported(c.where, f"{k}: {_UNSUPPORTED_INSTANCE[k]}")
            else:
                rep.unsupported(c.where, f"unknown vrrp_instance keyword '{k}'")
        for req in ("interface", "virtual_router_id"):
            if not t.has(req):
                rep.error(s.where, f"vrrp_instance {name}: no {req} (keepalived refuses the instance)")
        if not t.has("virtual_ipaddress"):
            rep.warning(
                s.where,
                f"vrrp_instance {name}: no virtual_ipaddress (keepalived: 'at least one is sensible')",
            )
        # keepalived's start-up rules (vrrp.c vrrp_complete_instance)
        master = state is not None and state[0] == "MASTER"
        if prio is None:
            prio = 255 if master else 100
            t.set(
                "priority",
                prio,
                state[1] if state else s.where,
                f"(keepalived: no priority = {'255 with state MASTER' if master else '100'})",
            )
        else:
            t.set("priority", prio, prio_where)
        if nopreempt is not None and (prio == 255 or master):
            why = "priority 255 (the address owner)" if prio == 255 else "state MASTER"
            rep.warning(
                nopreempt, f"nopreempt does not work with {why}: keepalived clears it, so does the import"
            )
            nopreempt = None
        if preempt_delay is not None and preempt_delay[0] > 0:
            if master:
                rep.warning(
                    preempt_delay[1],
                    "preempt_delay does not work with state MASTER: keepalived clears it, so does the import",
                )
                preempt_delay = None
            elif nopreempt is not None:
                rep.warning(
                    preempt_delay[1],
                    "preempt_delay does nothing with nopreempt: keepalived resets it, so does the import",
                )
                preempt_delay = None
        if state is not None:
            t.set("state", state[0], state[1])
        t.set(
            "nopreempt",
            nopreempt is not None,
            nopreempt or s.where,
            "" if nopreempt is not None else "(keepalived's default: preempt)",
        )
        if preempt_delay is not None:
            t.set("preempt_delay", preempt_delay[0], preempt_delay[1])
        order = [
            "name",
            "interface",
            "virtual_router_id",
            "state",
            "priority",
            "advert_int",
            "nopreempt",
            "preempt_delay",
        ]
        t.entries.sort(key=lambda e: order.index(e.key) if e.key in order else len(order))
        self.instances.append(t)

    def block_name(self, s: Stmt) -> tuple[str, str] | None:
        """(the name in keepalived.conf, the name in vrrpd: :meth:`safe_name`) of a named block (``vrrp_script
        NAME {``...); None, with an error, when it has none."""
        if len(s.words) < 2:
            self.rep.error(s.where, f"{s.keyword} needs a name")
            return None
        return s.words[1], self.safe_name(s.words[1], s.where, s.keyword)

    def safe_name(self, orig: str, where: str, what: str) -> str:
        """The name as vrrpd allows it (1..64 of A-Z a-z 0-9 _ . @ -), with a warning when it changes."""
        if NAME_RE.match(orig):
            return orig
        safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", orig)[:64] or "_"
        self.rep.warning(
            where, f"{what} name {orig!r} has characters vrrpd does not allow in a name; imported as {safe!r}"
        )
        return safe

    def items(self, c: Stmt) -> list[Stmt]:
        """The entries of a value block (``virtual_ipaddress { ... }``); words after the keyword are an error,
        as keepalived's "Block ... has extra parameters"."""
        if len(c.words) > 1:
            self.rep.error(
                c.where,
                f"{c.keyword} has extra parameters {' '.join(c.words[1:])!r}: the entries go "
                "in a { } block",
            )
        return c.children()

    def ipv4(self, s: Stmt, idx: int) -> str | None:
        v = s.words[idx] if len(s.words) > idx else ""
        try:
            a = ip_address(v)
        except ValueError:
            self.rep.error(s.where, f"'{v}' is not an IP address")
            return None
        if not isinstance(a, IPv4Address):
            self.rep.unsupported(s.where, f"{v}: vrrpd is IPv4 only (this entry is not imported)")
            return None
        if a.is_multicast or a.is_unspecified or a.is_loopback or a == IPv4Address("255.255.255.255"):
            self.rep.error(s.where, f"{v}: must be a unicast IPv4 address")
            return None
        return str(a)

    def auth(self, c: Stmt, t: Table) -> None:
        rep = self.rep
        typ = None
        pw: tuple[str, Stmt] | None = None
        for a in c.children():
            if a.keyword == "auth_type":
                typ = a.words[1] if len(a.words) > 1 else ""
                if typ == "AH":
                    rep.unsupported(
                        a.where,
                        "auth_type AH: vrrpd has PASS authentication only; a keepalived peer "
                        "with AH will not accept vrrpd's adverts",
                    )
                elif typ != "PASS":
                    rep.error(a.where, f"unknown authentication type '{typ}'")
            elif a.keyword == "auth_pass":
                if len(a.words) < 2:
                    rep.error(a.where, "auth_pass needs a password")
                    continue
                pw = (a.words[1], a)
            else:
                rep.unsupported(a.where, f"unknown authentication keyword '{a.keyword}'")
        if pw is None:
            if typ == "PASS":
                rep.warning(
                    c.where,
                    "auth_type PASS without auth_pass: keepalived ignores the authentication, "
                    "so does the import",
                )
            return
        if typ != "PASS":
            if typ is None:
                rep.warning(
                    pw[1].where,
                    "auth_pass without auth_type: keepalived sends no authentication; not imported",
                )
            return
        raw = pw[0].encode("utf-8", errors="surrogateescape")
        text = pw[0]
        if len(raw) > 8:
            cut = raw[:8]
            try:
                text = cut.decode("utf-8")
            except UnicodeDecodeError:
                rep.error(
                    pw[1].where,
                    "auth_pass: its first 8 bytes (what keepalived sends) end inside a "
                    "UTF-8 character; vrrpd needs a text password",
                )
                return
            rep.warning(
                pw[1].where,
                f"auth_pass is {len(raw)} bytes: keepalived sends only the first 8, "
                f"imported as those 8 ({text!r})",
            )
        t.set("auth_pass", text, pw[1].where)

    def vips(self, c: Stmt, t: Table) -> None:
        rep = self.rep
        out: list[Any] = []
        seen: set[str] = set()
        items = self.items(c)
        for v in items:
            words = list(v.words)
            addr = words[0]
            if "/" not in addr:
                pfx = None
                ip_s = addr
            else:
                ip_s, pfx = addr.split("/", 1)
            try:
                ip = ip_address(ip_s)
            except ValueError:
                rep.error(v.where, f"'{addr}' is not an IP address")
                continue
            if not isinstance(ip, IPv4Address):
                rep.unsupported(v.where, f"{addr}: vrrpd is IPv4 only (this VIP is not imported)")
                continue
            try:
                iface = IPv4Interface(f"{ip}/{pfx if pfx is not None else 32}")
            except ValueError:
                rep.error(v.where, f"'{addr}': bad prefix length")
                continue
            entry: dict[str, str] = {"address": str(iface)}
            i = 1
            ok = True
            while i < len(words):
                w = words[i]
                nxt = words[i + 1] if i + 1 < len(words) else None
                if w in ("dev", "label") and nxt is not None:
                    entry[w] = nxt
                    i += 2
                elif w in ("brd", "broadcast", "scope") and nxt is not None:
                    rep.ignored(v.where, f"{w} {nxt}: vrrpd adds the address with the kernel's defaults")
                    i += 2
                elif w in ("no_track", "home", "nodad", "noprefixroute", "autojoin"):
                    rep.ignored(v.where, f"{w}: no effect for an IPv4 VIP in vrrpd")
                    i += 1
                elif w in ("preferred_lft", "valid_lft") and nxt is not None:
                    rep.ignored(v.where, f"{w} {nxt}: VIPs are added without lifetimes")
                    i += 2
                elif w in ("peer", "metric", "mtu"):
                    rep.unsupported(
                        v.where, f"{w}: not supported on a VIP (the entry is imported without it)"
                    )
                    i += 2
                else:
                    rep.error(v.where, f"unknown virtual_ipaddress option '{w}'")
                    ok = False
                    break
            if not ok:
                continue
            if "label" in entry:
                d = entry.get("dev") or self.cur_iface
                lab = entry["label"]
                if not re.fullmatch(r"[^/\s]{1,15}", lab) or (d and lab != d and not lab.startswith(d + ":")):
                    rep.error(
                        v.where,
                        f"label {lab!r}: the kernel refuses it (a label is the device name or "
                        f'starts with "{d}:", at most 15 characters)',
                    )
                    continue
            if "dev" in entry and not re.fullmatch(r"[^/\s:]{1,15}", entry["dev"]):
                rep.error(v.where, f"dev {entry['dev']!r}: not an interface name")
                continue
            if str(ip) in seen:
                rep.warning(v.where, f"VIP {ip} listed twice")
                continue
            seen.add(str(ip))
            if pfx is None:
                rep.warning(
                    v.where, f"{addr} without a prefix length: keepalived adds it as /32, so does the import"
                )
            out.append(entry if len(entry) > 1 else entry["address"])
        if len(out) > 255:
            rep.error(c.where, "more than 255 VIPs (the advert's count is 8 bits)")
            return
        t.set("virtual_ipaddress", out, c.where)

    def track_script(self, c: Stmt, t: Table) -> None:
        self.track_refs(c, t, "track_script", self.script_names, "vrrp_script", 253)

    def track_refs(self, c: Stmt, t: Table, key: str, known: dict[str, str], what: str, lim: int) -> None:
        rep = self.rep
        refs: list[Any] = []
        items = self.items(c)
        for r in items:
            name = r.words[0]
            if name not in known:
                rep.warning(
                    r.where,
                    f"{key} {name}: no {what} of that name; keepalived ignores the "
                    "reference, so does the import",
                )
                continue
            name = known[name]
            if any((x if isinstance(x, str) else x["name"]) == name for x in refs):
                rep.warning(r.where, f"{key} {name} listed twice")
                continue
            if len(r.words) >= 3 and r.words[1] == "weight":
                w = _int(r, 2, -lim, lim, rep, f"{key} weight")
                if w is None:
                    continue
                if len(r.words) > 3:
                    rep.unsupported(r.where, f"weight ... {r.words[3]}: vrrpd has no reversed weights")
                refs.append({"name": name, "weight": w})
            elif len(r.words) > 1:
                rep.error(r.where, f"{key} {name}: unknown option '{r.words[1]}'")
            else:
                refs.append(name)
        t.set(key, refs, c.where)

    def track_interface(self, c: Stmt, t: Table) -> None:
        rep = self.rep
        refs: list[Any] = []
        items = self.items(c)
        for r in items:
            name = r.words[0]
            if not re.fullmatch(r"[^/\s:]{1,15}", name):
                rep.error(r.where, f"track_interface '{name}': not an interface name")
                continue
            if name == self.cur_iface:
                rep.warning(
                    r.where,
                    f"track_interface {name}: the instance's own interface; keepalived ignores "
                    "it (the instance goes to FAULT when it is down anyway), so does the import",
                )
                continue
            if len(r.words) >= 3 and r.words[1] == "weight":
                w = _int(r, 2, -253, 253, rep, "track_interface weight")
                if w is None:
                    continue
                if len(r.words) > 3:
                    rep.unsupported(r.where, f"weight ... {r.words[3]}: vrrpd has no reversed weights")
                refs.append({"name": name, "weight": w} if w else name)
            elif len(r.words) > 1:
                rep.error(r.where, f"track_interface {name}: unknown option '{r.words[1]}'")
            else:
                refs.append(name)
        t.set("track_interface", refs, c.where)


def convert(doc: Document) -> tuple[str | None, Report]:
    """keepalived.conf (read by kaconf) -> (node.toml text or None on errors, report)."""
    return convert_with(lambda rep: _Converter(doc, rep).run(), doc.notes)


def _validate(text: str) -> None:
    import tomllib

    from vrrpd.config import parse

    parse(tomllib.loads(text), "imported")


def check_text(text: str) -> list[str]:
    """What ``vrrpd --check`` says about ``text`` (the TOML validation only)."""
    return check_with(_validate, text)


def main(argv: list[str]) -> int:
    from rmqfd import kaconf

    a = import_parser(
        "vrrpd import",
        "Write the vrrpd configuration (node.toml) equivalent to a keepalived.conf. Everything "
        "that does not carry over is listed on stderr with its file:line.",
        file_help="keepalived.conf (its includes are read too)",
        output_help="write node.toml here (default: standard output)",
        config_id_help="keepalived's config id for @ID lines (keepalived -i; default: this host's short "
        "name)",
    ).parse_args(argv)
    return import_file(
        lambda: kaconf.parse_file(a.file, config_id=a.config_id), KaConfError, convert, a, check_text
    )
