"""``tcplb -c lb.toml [--check] [--loop uvloop|asyncio]``; ``tcplb ctl ...`` is the admin client (ctl.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from . import config as cfgmod
from .config import ConfigError


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["import"]:
        from .importer import main as import_main

        return import_main(args_in[1:])
    if args_in[:1] == ["ctl"]:
        from . import ctl

        return ctl.main(args_in[1:])
    ap = argparse.ArgumentParser(
        prog="tcplb", description="Layer-4 load balancer for RabbitMQ (HAProxy mode tcp)"
    )
    ap.epilog = (
        "tcplb ctl -h: the command-line client of the admin API (show stat, set server ...); "
        "tcplb import -h: lb.toml from an haproxy.cfg or keepalived's virtual_server blocks"
    )
    ap.add_argument("-c", "--config", required=True, help="configuration file (TOML)")
    ap.add_argument("--check", action="store_true", help="validate the configuration and exit (0: valid)")
    ap.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (default uvloop)"
    )
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = ap.parse_args(args_in)
    try:
        cfg = cfgmod.load(args.config)
    except ConfigError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{args.config}: {e.strerror or e}", file=sys.stderr)
        return 1
    if args.check:
        for w in cfgmod.warnings(cfg):
            print(f"warning: {w}", file=sys.stderr)
        print(f"{args.config}: configuration is valid")
        return 0
    from .daemon import run
    from .procstart import setup_logging

    setup_logging(cfg, getattr(logging, args.log_level.upper()))
    log = logging.getLogger("tcplb")
    for w in cfgmod.warnings(cfg):
        log.warning("%s", w)
    return run(cfg, args.config, args.loop)


if __name__ == "__main__":
    sys.exit(main())
