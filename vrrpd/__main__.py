"""Command line: `vrrpd -c node.toml [--check]`, `vrrpd status [--json|--prometheus] [--socket PATH]`,
`vrrpd ctl ... maint|restore|priority` (vrrpd.ctl) and `vrrpd import keepalived.conf [-o node.toml]`
(vrrpd.importer)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["main"]

LOOPS = ("uvloop", "asyncio")
LEVELS = ("debug", "info", "warning", "error")


def _run_parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="vrrpd",
        description="VRRPv2 router (keepalived-compatible). Subcommands: "
        "`vrrpd status [--json|--prometheus]`, `vrrpd ctl maint|restore|priority` (see `vrrpd ctl --help`), "
        "`vrrpd import keepalived.conf [-o node.toml]`.",
    )
    p.add_argument("-c", "--config", required=True, help="TOML configuration file (node.toml)")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--loop", choices=LOOPS, default="uvloop", help="event loop (default uvloop)")
    p.add_argument("--log-level", default="info", choices=LEVELS)
    return p


def _status_parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(prog="vrrpd status", description="show the state of a running vrrpd")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the raw JSON status")
    fmt.add_argument("--prometheus", action="store_true", help="print the Prometheus metrics (text 0.0.4)")
    p.add_argument("--socket", help="control socket path (default: from the configuration)")
    p.add_argument("-c", "--config", default=None, help="configuration file naming the control socket")
    return p


def _fast_parse(args: list[str]) -> dict[str, Any] | None:
    """The daemon's own options without importing argparse (~0.6 MiB of RSS for the life of the daemon).
    Returns None for anything unusual (help, errors, abbreviations): argparse then handles it."""
    out: dict[str, Any] = {"config": None, "check": False, "loop": "uvloop", "log_level": "info"}
    it = iter(args)
    for a in it:
        key, eq, val = a.partition("=")
        if key in ("-c", "--config", "--loop", "--log-level"):
            if not eq:
                val = next(it, "")
            if not val:
                return None
            name = {"-c": "config", "--config": "config"}.get(key, key[2:].replace("-", "_"))
            out[name] = val
        elif a == "--check":
            out["check"] = True
        else:
            return None
    if out["config"] is None or out["loop"] not in LOOPS or out["log_level"] not in LEVELS:
        return None
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "status":
        from vrrpd.control import status_main

        st = _status_parser().parse_args(args[1:])
        return status_main(st.socket, st.config, st.json, st.prometheus)
    if args and args[0] == "import":
        from vrrpd.importer import main as import_main

        return import_main(args[1:])
    if args and args[0] == "ctl":
        from vrrpd.ctl import main as ctl_main

        return ctl_main(args[1:])
    opts = _fast_parse(args)
    if opts is None:
        opts = vars(_run_parser().parse_args(args))
    from vrrpd.config import ConfigError, load, release_parser

    try:
        cfg = load(opts["config"])
    except ConfigError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return 2
    release_parser()
    if opts["check"]:
        from vrrpd.daemon import check_runtime

        for w in [*cfg.warning_lines(), *check_runtime(cfg)]:
            print(f"{cfg.source}: warning: {w}", file=sys.stderr)
        print(f"{cfg.source}: OK, {len(cfg.instances)} instance(s), {len(cfg.scripts)} script(s)")
        return 0
    from vrrpd.daemon import run

    return run(cfg, config_path=opts["config"], loop_kind=opts["loop"], log_level=opts["log_level"])


if __name__ == "__main__":
    sys.exit(main())
