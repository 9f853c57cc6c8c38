"""vrrpd Prometheus metrics: the text (parsed back with prometheus_client), the HTTP listener, the control
socket's ``metrics`` and ctl dispatch, and that none of it is imported by an idle daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netns.plugin import missing_capability
from vrrpd import fsm, metrics, wire
from vrrpd.control import query, query_text, serve_control

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def run(coro: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro()

    return asyncio.run(main())


def instance_status(name: str, state: fsm.State, **extra: Any) -> dict[str, Any]:
    """What Daemon.status() reports for one instance: the FSM's snapshot plus the daemon's fields."""
    vr = fsm.VirtualRouter(
        fsm.Params(
            vrid=51,
            priority=150,
            advert_int=1,
            src_ip=IPv4Address("192.0.2.21"),
            vips=(IPv4Address("192.0.2.100"),),
        ),
        name,
    )
    if state is not fsm.State.INIT:
        vr.handle(fsm.Startup(), 0.0)
    if state is fsm.State.MASTER:
        vr.handle(fsm.TimerDue(), 10.0)
    elif state is fsm.State.FAULT:
        vr.handle(fsm.FaultRaised("link"), 1.0)
    vr.counters.discards[wire.Reason.AUTH_PASS] = 7
    snap = vr.snapshot()
    snap.update(
        {
            "interface": "eth0",
            "vips_installed": ["192.0.2.100/24"] if state is fsm.State.MASTER else [],
            "track_scripts": [{"name": "chk", "state": "OK"}, {"name": "bad", "state": "FAIL"}],
            "track_interfaces": [{"name": "eth1", "weight": -10, "state": "DOWN"}],
            "send_errors": 0,
            "override_priority": None,
        }
    )
    snap.update(extra)
    return snap


def status_doc() -> dict[str, Any]:
    return {
        "router_id": "lb1",
        "start_time": 1795000000.25,
        "reloads": 3,
        "notify_executed": 4,
        "instances": [
            instance_status("VI_1", fsm.State.MASTER),
            instance_status(
                "VI_2", fsm.State.BACKUP, vrid=52, override_priority=1, maintenance=True, effective_priority=1
            ),
        ],
    }


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    found = [
        s.value
        for s in fams[family].samples
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (family, labels, found)
    return float(found[0])


def test_metrics_text_parses_back() -> None:
    text = metrics.render(status_doc())
    fams = families(text)
    assert value(fams, "vrrpd_up") == 1
    assert value(fams, "vrrpd_start_time_seconds") == 1795000000.25
    assert fams["vrrpd_reloads"].type == "counter"  # the parser strips _total from a counter's family name
    assert value(fams, "vrrpd_reloads", "vrrpd_reloads_total") == 3
    assert value(fams, "vrrpd_instance_state", vrrp_instance="VI_1", vrid="51", interface="eth0") == 2
    assert value(fams, "vrrpd_instance_state", vrrp_instance="VI_2", vrid="52") == 1
    assert fams["vrrpd_instance_state"].type == "gauge"
    assert value(fams, "vrrpd_instance_priority", vrrp_instance="VI_2") == 150
    assert value(fams, "vrrpd_instance_effective_priority", vrrp_instance="VI_2") == 1
    assert value(fams, "vrrpd_instance_priority_override", vrrp_instance="VI_1") == 0
    assert value(fams, "vrrpd_instance_priority_override", vrrp_instance="VI_2") == 1
    assert value(fams, "vrrpd_instance_maintenance", vrrp_instance="VI_2") == 1
    assert value(fams, "vrrpd_instance_master_transitions", vrrp_instance="VI_1") == 1
    assert value(fams, "vrrpd_adverts_sent", vrrp_instance="VI_1") == 1
    assert value(fams, "vrrpd_adverts_received", vrrp_instance="VI_1") == 0
    assert value(fams, "vrrpd_priority_zero_sent", vrrp_instance="VI_1") == 0
    assert value(fams, "vrrpd_priority_zero_received", vrrp_instance="VI_1") == 0
    assert value(fams, "vrrpd_vips_installed", vrrp_instance="VI_1") == 1
    assert value(fams, "vrrpd_vips_installed", vrrp_instance="VI_2") == 0
    assert value(fams, "vrrpd_discards", vrrp_instance="VI_1", reason="auth_pass") == 7
    assert {s.labels["reason"] for s in fams["vrrpd_discards"].samples} == {r.value for r in wire.Reason}
    assert value(fams, "vrrpd_track_script_up", vrrp_instance="VI_1", script="chk") == 1
    assert value(fams, "vrrpd_track_script_up", vrrp_instance="VI_1", script="bad") == 0
    assert value(fams, "vrrpd_track_interface_up", vrrp_instance="VI_1", tracked_interface="eth1") == 0
    # every counter is a counter, every sample name of a counter ends in _total
    for f in fams.values():
        if f.type == "counter":
            assert all(s.name == f.name + "_total" for s in f.samples), f.name
    # each family is described once (HELP/TYPE) and its samples are contiguous
    assert text.count("# TYPE vrrpd_instance_state gauge") == 1
    assert text.endswith("\n") and "\n\n" not in text


@pytest.mark.parametrize("state", list(fsm.State))
def test_state_gauge_and_one_hot(state: fsm.State) -> None:
    st = {"reloads": 0, "instances": [instance_status("VI_1", state)]}
    fams = families(metrics.render(st))
    assert value(fams, "vrrpd_instance_state") == metrics.STATE_VALUES[state.value]
    one_hot = {s.labels["state"]: s.value for s in fams["vrrpd_instance_state_info"].samples}
    assert one_hot == {s.value: float(s is state) for s in fsm.State}


def test_label_values_are_escaped() -> None:
    inst = instance_status("VI_1", fsm.State.BACKUP, interface='we"ird\\if\nx')
    fams = families(metrics.render({"instances": [inst]}))
    (sample,) = fams["vrrpd_instance_state"].samples
    assert sample.labels["interface"] == 'we"ird\\if\nx'


def test_no_instances() -> None:
    fams = families(metrics.render({"reloads": 0, "instances": []}))
    assert value(fams, "vrrpd_up") == 1 and "vrrpd_instance_state" not in fams


# ------------------------------------------------------------------------------------------ HTTP listener


async def http(port: int, raw: bytes, host: str = "127.0.0.1") -> bytes:
    """One request; what came back before the server closed (b"" when it reset the connection)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def split(resp: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def test_http_listener() -> None:
    doc = status_doc()

    async def go() -> list[bytes]:
        srv = await metrics.serve_metrics("127.0.0.1", 0, lambda: doc)
        port = srv.sockets[0].getsockname()[1]
        try:
            return [
                await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"),
                await http(port, b"GET /metrics?x=1 HTTP/1.0\n\n"),  # bare LF and a query string
                await http(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                await http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                await http(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
                await http(port, b"hello\r\n\r\n"),
                await http(port, b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n"),
                await http(port, b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: aaaa\r\n" * 1000 + b"\r\n"),
                await http(port, b"GET /metrics HTTP/1.1\r\n\r\n"),  # HTTP/1.1 needs Host (RFC 9112)
                await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \xd9\xa3\r\n\r\n"),
                await http(
                    port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
                ),
            ]
        finally:
            srv.close()
            await srv.wait_closed()

    ok, ok10, head, notfound, post, garbage, long_line, many, nohost, arabic, digits = run(go)
    status, headers, body = split(ok)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body) and headers["Connection"] == "close"
    assert body.decode() == metrics.render(doc)
    assert split(ok10)[0] == "HTTP/1.1 200 OK" and split(ok10)[2] == body
    status, headers, hbody = split(head)
    assert status == "HTTP/1.1 200 OK" and hbody == b"" and int(headers["Content-Length"]) == len(body)
    assert split(notfound)[0] == "HTTP/1.1 404 Not Found"
    status, headers, _ = split(post)
    assert status == "HTTP/1.1 405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
    assert split(garbage)[0] == "HTTP/1.1 400 Bad Request"
    assert split(long_line)[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert split(many)[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert split(nohost)[0] == "HTTP/1.1 400 Bad Request"
    assert split(arabic)[0] == "HTTP/1.1 400 Bad Request"  # non-ASCII digits: h11 says bad Content-Length
    assert split(digits)[0].split()[1] in ("400", "431")  # never a 500


def test_http_listener_bounds_time_and_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Silent clients neither lock out a scrape nor stay: the oldest one still sending its request is evicted
    to make room, and every one is closed after REQUEST_TIMEOUT."""
    # 1 s (not 0.3 s): the scrape below is a client too, and must get its request in before the timeout on a
    # busy machine; still far from the 5 s wait that tells "closed by the timeout" from "never closed"
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 1.0)
    monkeypatch.setattr(metrics, "MAX_CLIENTS", 2)

    async def go() -> tuple[list[bytes], bytes, float, bytes]:
        loop = asyncio.get_running_loop()
        srv = await metrics.serve_metrics("127.0.0.1", 0, lambda: {"instances": []})
        port = srv.sockets[0].getsockname()[1]
        try:
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            t0 = loop.time()
            scrape = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # served at once
            dropped = [await asyncio.wait_for(r.read(), 5) for r, _w in silent]  # evicted or timed out
            elapsed = loop.time() - t0
            for _r, w in silent:
                w.close()
            after = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            return dropped, scrape, elapsed, after
        finally:
            srv.close()
            await srv.wait_closed()

    dropped, scrape, elapsed, after = run(go)
    assert dropped == [b""] * 4
    assert split(scrape)[0] == "HTTP/1.1 200 OK"
    assert elapsed < 4.5  # closed by REQUEST_TIMEOUT (or eviction), not by the 5 s wait above
    assert split(after)[0] == "HTTP/1.1 200 OK"


def test_listen_socket_ipv6_loopback() -> None:
    try:
        s = metrics.listen_socket("::1", 0)
    except OSError as e:
        missing_capability(f"no IPv6 loopback (IPv6 disabled in the kernel): {e}", kernel_limit=True)
    try:
        assert s.family.name == "AF_INET6" and s.getsockname()[0] == "::1"
    finally:
        s.close()


# ------------------------------------------------------------------------------------------ control socket


def test_control_socket_metrics_and_ctl_dispatch(tmp_path: Path) -> None:
    path = str(tmp_path / "v.sock")
    doc = status_doc()
    calls: list[list[str]] = []

    def ctl(words: list[str]) -> dict[str, Any]:
        calls.append(words)
        return {"ok": True, "action": words[0]}

    async def go() -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
        server = await serve_control(path, lambda: doc, ctl)
        loop = asyncio.get_running_loop()
        try:
            text = await loop.run_in_executor(None, query_text, path, "metrics")
            m = await loop.run_in_executor(None, query, path, "maint VI_1 5")
            bad = await loop.run_in_executor(None, query, path, "reboot now")
            st = await loop.run_in_executor(None, query, path, "status")
            return text, m, bad, st
        finally:
            server.close()
            await server.wait_closed()

    text, m, bad, st = run(go)
    assert text == metrics.render(doc)
    assert m == {"ok": True, "action": "maint"} and calls == [["maint", "VI_1", "5"]]
    assert "unknown command" in bad["error"]
    assert st["router_id"] == "lb1"
