"""``tcplb ctl rebalance LISTENER`` and ``POST /api/rebalance/<listener>``: the command grammar, and the whole
path (ctl -> admin API -> driver -> management API DELETE -> the broker's 320 close) against an in-process
load balancer with its stats server, fake brokers and a fake management API (test_rebalancer_wired's); the
errors: unknown listener, a server without management (the key to set is named), no credentials, admin off.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from tcplb_helpers import run, wait_for
from test_rebalancer_wired import Client, _close, _setup

from tcplb import ctl, stats
from tcplb.config import StatsConfig, StatsUser
from tcplb.server import LoadBalancer


def test_parse() -> None:
    assert ctl.parse(["rebalance", "rabbitmq"]) == ctl.Command(rebalance="rabbitmq")
    for bad in (["rebalance"], ["rebalance", "a", "b"], ["rebalance", "a/b"]):
        with pytest.raises(ctl.Usage, match="rebalance"):
            ctl.parse(bad)
    assert "rebalance L" in ctl.COMMANDS


def _ctl(url: str, *words: str, user: str = "admin:s3cret") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ctl.main(["--url", url, "--user", user, *words])
    return code, out.getvalue(), err.getvalue()


async def _env(r2_check: str = "", admin: bool = True) -> tuple[Any, ...]:
    rb = "rate = 100\ntolerance = 0.0"
    b1, b2, api, lport, lb, events = await _setup(rb, ", disabled = true", r2_check)
    st = stats.StatsServer(
        lb, StatsConfig(bind=("127.0.0.1", 0), auth=(StatsUser("admin", "s3cret"),), admin=admin)
    )
    await st.start()
    return b1, b2, api, lport, lb, st, events


async def _stop(lb: LoadBalancer, st: stats.StatsServer, clients: list[Client], *rest: Any) -> None:
    await st.close()
    _close(lb, clients, *rest)


def test_ctl_rebalance_end_to_end() -> None:
    async def main() -> None:
        b1, b2, api, lport, lb, st, events = await _env()
        clients = [await Client().open(lport) for _ in range(8)]
        lb.set_state("t", "r2", "ready")  # enabled = false: nothing moves on its own
        url = f"http://127.0.0.1:{st.port}"
        code, out, err = await asyncio.to_thread(_ctl, url, "rebalance", "t")
        assert code == 0, err
        assert out.startswith("t: rebalancing: 4 closing now, surplus 0; connections r1=8 r2=0"), out
        assert "limits r1<=4 r2<=4" in out and "at most 100 closes/s" in out
        await wait_for(lambda: sum(1 for c in clients if c.ended) == 4, 10, "4 closed")
        assert all(c.ended in (None, "close320") for c in clients)
        assert len(api.deletes) == 4 and all("tcplb rebalance" in r for _, r, _ in api.deletes)
        assert any("admin: user admin from" in e and "rebalance t (4 closing now)" in e for e in events)
        snap = lb.snapshot()
        r1 = next(s for s in snap["listeners"][0]["servers"] if s["name"] == "r1")
        assert r1["rebalance_closes"] == 4 and r1["close_failures"] == 0
        csv_text = stats.render_csv(snap)
        assert "rebalance_closes,lifetime_closes,close_failures" in csv_text.splitlines()[0]
        metrics = stats.render_metrics(snap)
        assert 'tcplb_server_connection_closes_total{proxy="t",server="r1",reason="rebalance"} 4' in metrics
        assert 'tcplb_server_connection_close_failures_total{proxy="t",server="r1"} 0' in metrics

        code, out, err = await asyncio.to_thread(_ctl, url, "rebalance", "nope")
        assert code == 1 and "rebalance refused: no listener nope" in err, err
        code, out, err = await asyncio.to_thread(_ctl, url, "rebalance", "t", user="admin:wrong")
        assert code == 1 and "401" in err, err
        await _stop(lb, st, clients, b1, b2, api)

    run("asyncio", main)


def test_ctl_rebalance_without_management_names_the_key() -> None:
    async def main() -> None:
        b1, b2, api, lport, lb, st, _ = await _env(r2_check=", check = { management = false }")
        clients = [await Client().open(lport) for _ in range(4)]
        lb.set_state("t", "r2", "ready")
        url = f"http://127.0.0.1:{st.port}"
        code, out, err = await asyncio.to_thread(_ctl, url, "rebalance", "t")
        assert code == 1 and out == ""
        assert "rebalance refused: server t/r2 has no management API" in err, err
        assert "listen.t.server[1].check.management" in err and "never resets" in err
        # the raw API: 409 with the same text as JSON
        req = urllib.request.Request(f"{url}/api/rebalance/t", data=b"", method="POST")
        req.add_header("Authorization", "Basic YWRtaW46czNjcmV0")
        with pytest.raises(urllib.error.HTTPError) as ei:
            await asyncio.to_thread(urllib.request.urlopen, req, timeout=5)
        assert ei.value.code == 409
        assert "check.management" in json.loads(ei.value.read())["error"]
        await asyncio.sleep(0.2)
        assert api.deletes == [] and not any(c.ended for c in clients)
        await _stop(lb, st, clients, b1, b2, api)

    run("asyncio", main)


def test_admin_api_off_refuses_rebalance() -> None:
    async def main() -> None:
        b1, b2, api, _lport, lb, st, _ = await _env(admin=False)
        code, _, err = await asyncio.to_thread(_ctl, f"http://127.0.0.1:{st.port}", "rebalance", "t")
        assert code == 1 and "403" in err and "admin API disabled" in err, err
        assert api.deletes == []
        await _stop(lb, st, [], b1, b2, api)

    run("asyncio", main)
