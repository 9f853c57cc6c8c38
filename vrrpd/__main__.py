"""Command line: `vrrpd -c node.toml [--check]` and `vrrpd status [--json] [--socket PATH]`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vrrpd",
        description="VRRPv2 router (keepalived-compatible). Subcommand: `vrrpd status [--json]`.",
    )
    p.add_argument("-c", "--config", required=True, help="TOML configuration file (node.toml)")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (default uvloop)"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def _status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vrrpd status", description="show the state of a running vrrpd")
    p.add_argument("--json", action="store_true", help="print the raw JSON status")
    p.add_argument("--socket", help="control socket path (default: from the configuration)")
    p.add_argument("-c", "--config", default=None, help="configuration file naming the control socket")
    return p


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "status":
        from vrrpd.control import status_main

        st = _status_parser().parse_args(args[1:])
        return status_main(socket_path=st.socket, config_path=st.config, as_json=st.json)
    ns = _run_parser().parse_args(args)
    from vrrpd.config import ConfigError, load

    try:
        cfg = load(ns.config)
    except ConfigError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return 2
    if ns.check:
        from vrrpd.daemon import check_runtime

        for w in check_runtime(cfg):
            print(f"{cfg.source}: warning: {w}", file=sys.stderr)
        print(f"{cfg.source}: OK, {len(cfg.instances)} instance(s), {len(cfg.scripts)} script(s)")
        return 0
    from vrrpd.daemon import run

    return run(cfg, config_path=ns.config, loop_kind=ns.loop, log_level=ns.log_level)


if __name__ == "__main__":
    sys.exit(main())
