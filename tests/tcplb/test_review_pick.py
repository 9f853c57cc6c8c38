"""Review of 7d0c68e (``Frontend.pick`` goes straight to the balancer when no server is a backup): on the
path without server limits, ``pick`` must choose exactly what ``balance.select()`` chooses, while the admin
API changes servers in place (drain, maintenance, weight 0 and back: no reload, the same list of servers)
and with backups present (``allbackups`` on and off, all actives out). A shadow balancer of the same kind
is fed the same calls through ``select()``; every answer must agree."""

from __future__ import annotations

import asyncio
import random

import pytest
from tcplb_helpers import run
from test_server import make_cfg

from tcplb import admin, config
from tcplb.balance import KINDS, make_balancer, select
from tcplb.lb import LoadBalancer
from tcplb.session import FREE

NAMES = ["a", "b", "c", "d", "e"]


def _cfg(kind: str, nbackup: int, allbackups: bool, port: int = 0) -> config.Config:
    lines = "\n".join(
        f'{{ name = "{n}", address = "127.0.0.1:{i + 1}", check = false, '
        f"backup = {str(i >= len(NAMES) - nbackup).lower()} }},"
        for i, n in enumerate(NAMES)
    )
    extra = f'balance = "{kind}"\nallbackups = {str(allbackups).lower()}'
    cfg, _ = make_cfg(lines, listen_extra=extra, port=port)
    return cfg


@pytest.mark.parametrize("allbackups", [False, True])
@pytest.mark.parametrize("nbackup", [0, 1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_pick_is_select_under_admin_changes(kind: str, nbackup: int, allbackups: bool) -> None:
    async def main() -> None:
        cfg = _cfg(kind, nbackup, allbackups)
        lb = LoadBalancer(cfg, asyncio.get_running_loop())
        lb.start()
        try:
            fe = lb.frontends["t"]
            assert not fe.limited  # the path under review
            shadow = make_balancer(kind)
            rng = random.Random(f"{kind}/{nbackup}/{allbackups}")
            seen: set[str | None] = set()
            for step in range(800):
                r = rng.random()
                name = rng.choice(NAMES)
                if r < 0.12:
                    admin.set_state(lb, "t", name, rng.choice(["ready", "drain", "maint"]))
                elif r < 0.2:
                    admin.set_weight(lb, "t", name, rng.choice([0, 1, 2, 5]))
                elif r < 0.23:  # every active server out at once: the backups' turn
                    for s in fe.servers:
                        if not s.backup:
                            admin.set_state(lb, "t", s.name, rng.choice(["drain", "maint"]))
                client = (f"10.0.{rng.randrange(3)}.{rng.randrange(200)}", 1000 + step)
                exclude = set(rng.sample(NAMES, rng.choice([0, 0, 0, 1, 2])))
                want = select(shadow, fe.servers, client, exclude, allbackups)
                got, how = fe.pick(client, exclude, None)
                assert (got.name if got else None) == (want.name if want else None), (step, exclude)
                assert how == (FREE if got is not None else "SC")
                seen.add(got.name if got else None)
            # the sequence went through every case: nothing eligible, and (with backups) a backup chosen
            assert None in seen
            if nbackup:
                assert seen & set(NAMES[len(NAMES) - nbackup :])
        finally:
            lb.stop_accepting()
            lb.stop_checks()

    run("asyncio", main)


def test_backup_rule_after_admin_changes_without_reload() -> None:
    """The shortcut's "no backup" knowledge is per list of servers; admin changes never touch the list, and
    never make a server a backup: drain, maintenance and weight 0 of the actives hand over to the first
    eligible backup (the second with the first drained), and ready brings the actives back."""

    async def main() -> None:
        lb = LoadBalancer(_cfg("roundrobin", 2, False), asyncio.get_running_loop())
        lb.start()
        try:
            fe = lb.frontends["t"]

            def picks() -> list[str | None]:
                out = []
                for i in range(4):
                    s, _ = fe.pick(("10.0.0.1", i), (), None)
                    out.append(s.name if s else None)
                return out

            assert set(picks()) == {"a", "b", "c"}  # the actives only
            admin.set_state(lb, "t", "a", "drain")
            admin.set_state(lb, "t", "b", "maint")
            admin.set_weight(lb, "t", "c", 0)
            assert picks() == ["d"] * 4
            admin.set_state(lb, "t", "d", "drain")
            assert picks() == ["e"] * 4
            admin.set_state(lb, "t", "e", "maint")
            assert picks() == [None] * 4
            admin.set_weight(lb, "t", "c", 1)
            assert picks() == ["c"] * 4
        finally:
            lb.stop_accepting()
            lb.stop_checks()

    run("uvloop", main)
