"""tcplb.mgmt: management API answers as node state, and the small fetcher against a fake HTTP server.

Fixtures: tests/tcplb/mgmt_fixtures (README there says which are hand-shaped from the rabbitmq-server source
and which were captured from the lab's RabbitMQ 3.10.8).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcplb_helpers import run

from tcplb import mgmt
from tcplb.mgmt import Health

FIX = Path(__file__).parent / "mgmt_fixtures"
LOOPS = ["asyncio", "uvloop"]


def fx(name: str) -> bytes:
    return (FIX / name).read_bytes()


# --- /api/nodes --------------------------------------------------------------------------------------------


def test_node_310_running() -> None:
    s = mgmt.from_node(200, fx("node_310_running.hand.json"), "rabbit@rmq1")
    assert s.health is Health.READY and s.alarms == frozenset()
    assert "no maintenance flag" in s.reason  # 3.10: being_drained does not exist


def test_node_310_alarms_do_not_take_it_out() -> None:
    s = mgmt.from_node(200, fx("node_310_alarms.hand.json"), "rabbit@rmq1")
    assert s.health is Health.READY and s.alarms == frozenset({"memory", "disk"})


def test_node_312_being_drained() -> None:
    s = mgmt.from_node(200, fx("node_312_drained.hand.json"), "rabbit@rmq2")
    assert s.health is Health.DRAINING and "maintenance" in s.reason


def test_node_list_picks_the_node() -> None:
    body = fx("nodes_310.hand.json")
    assert mgmt.from_node(200, body, "rabbit@rmq1").health is Health.READY
    two = mgmt.from_node(200, body, "rabbit@rmq2")
    assert two.health is Health.READY and two.alarms == frozenset({"memory"})
    three = mgmt.from_node(200, body, "rabbit@rmq3")
    assert three.health is Health.DOWN and three.alarms is None  # no stats for a stopped node
    missing = mgmt.from_node(200, body, "rabbit@rmq9")
    assert missing.health is Health.UNKNOWN and "not in the cluster's node list" in missing.reason
    assert mgmt.from_node(200, body).health is Health.UNKNOWN


def test_node_answer_about_another_node() -> None:
    s = mgmt.from_node(200, fx("node_310_running.hand.json"), "rabbit@rmq2")
    assert s.health is Health.UNKNOWN and "not rabbit@rmq2" in s.reason


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (401, b'{"error":"not_authorised","reason":"Login failed"}', "refused the credentials"),
        (404, b'{"error":"Object Not Found","reason":"Not Found"}', "no such node"),
        (500, b"", "unexpected HTTP status 500"),
        (301, b"", "redirect"),
        (200, b"<html>proxy error</html>", "not a JSON object"),
        (200, b'{"name":"rabbit@rmq1"}', "no boolean 'running'"),
        (200, b'{"name":"rabbit@rmq1","running":"yes"}', "no boolean 'running'"),
        (200, b"[" * 100_000, "not a JSON object"),
        (200, b"\xff\xfe{", "not a JSON object"),
    ],
)
def test_node_garbage_is_unknown(status: int, body: bytes, words: str) -> None:
    s = mgmt.from_node(status, body, "rabbit@rmq1")
    assert s.health is Health.UNKNOWN and words in s.reason


def test_node_path_encodes_the_name() -> None:
    assert mgmt.node_path("rabbit@rmq1") == "/api/nodes/rabbit%40rmq1"


# --- 4.1.1 health checks -----------------------------------------------------------------------------------


def test_service_checks() -> None:
    ok = mgmt.from_service_check(200, fx("health_ok.hand.json"))
    assert ok.health is Health.READY and ok.alarms is None
    out = mgmt.from_service_check(503, fx("is_in_service_503.hand.json"))
    assert out.health is Health.DRAINING and "not currently available to serve" in out.reason
    full = mgmt.from_service_check(503, fx("ready_to_serve_503_limit.hand.json"), mgmt.READY_TO_SERVE_CLIENTS)
    assert full.health is Health.DRAINING and full.reason.startswith(
        "ready-to-serve-clients: node connection"
    )


def test_service_check_missing_on_old_brokers() -> None:
    # 3.10's management answers unknown paths with 404
    s = mgmt.from_service_check(404, b'{"error":"Object Not Found","reason":"Not Found"}')
    assert s.health is Health.UNKNOWN and not s.supported and "4.1.1" in s.reason


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b'{"status":"failed"}'), (503, b'{"status":"ok"}'), (503, b"Service Unavailable")],
)
def test_service_check_contradictions_are_unknown(status: int, body: bytes) -> None:
    assert mgmt.from_service_check(status, body).health is Health.UNKNOWN


# --- alarms ------------------------------------------------------------------------------------------------


def test_cluster_alarms_for_one_node() -> None:
    body = fx("alarms_503.hand.json")
    one = mgmt.from_alarms(503, body, "rabbit@rmq1")
    assert one.health is Health.UNKNOWN and one.alarms == frozenset({"disk"})
    assert "memory on rabbit@rmq2" in one.reason
    assert mgmt.from_alarms(503, body).alarms == frozenset({"disk", "memory"})
    assert mgmt.from_alarms(503, body, "rabbit@rmq3").alarms == frozenset()


def test_local_alarms_and_no_alarm() -> None:
    s = mgmt.from_alarms(503, fx("local_alarms_503.hand.json"), "rabbit@rmq2", mgmt.LOCAL_ALARMS)
    assert s.alarms == frozenset({"memory"}) and s.reason.startswith("local-alarms:")
    assert mgmt.from_alarms(200, fx("health_ok.hand.json")).alarms == frozenset()
    fd = json.dumps({"status": "failed", "alarms": [{"resource": "file descriptors", "node": "n"}]}).encode()
    assert mgmt.from_alarms(503, fd, "n").alarms == frozenset({"file_descriptors"})


# --- merge -------------------------------------------------------------------------------------------------


def test_merge() -> None:
    node = mgmt.from_node(200, fx("node_310_running.hand.json"), "rabbit@rmq1")
    alarms = mgmt.from_alarms(503, fx("alarms_503.hand.json"), "rabbit@rmq1")
    m = mgmt.merge([node, alarms])
    assert m.health is Health.READY and m.alarms == frozenset({"disk"})
    drained = mgmt.from_service_check(503, fx("is_in_service_503.hand.json"))
    assert mgmt.merge([node, drained, alarms]).health is Health.DRAINING
    down = mgmt.from_node(200, fx("nodes_310.hand.json"), "rabbit@rmq3")
    assert mgmt.merge([drained, down]).health is Health.DOWN
    nothing = mgmt.merge([mgmt.from_failure(mgmt.FetchFailed("refused"))])
    assert nothing.health is Health.UNKNOWN and nothing.alarms is None and "refused" in nothing.reason
    assert mgmt.merge([]).health is Health.UNKNOWN


# --- garbage never raises ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=20,
)
node_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["rabbit@rmq1", "rabbit@rmq2"]) | json_values,
        "running": st.booleans() | json_values,
        "being_drained": st.booleans() | json_values,
        "mem_alarm": st.booleans() | json_values,
        "disk_free_alarm": st.booleans() | json_values,
        "status": st.sampled_from(["ok", "failed"]) | json_values,
        "reason": json_values,
        "alarms": st.lists(
            st.fixed_dictionaries({}, optional={"resource": json_values, "node": json_values}), max_size=3
        )
        | json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    node_like.map(lambda v: json.dumps(v).encode()),
    st.lists(node_like, max_size=3).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([200, 301, 401, 403, 404, 500, 503, 0, 999]),
    bodies,
    st.sampled_from([None, "rabbit@rmq1"]),
)
def test_any_answer_gives_a_state(status: int, body: bytes, node: str | None) -> None:
    for s in (
        mgmt.from_node(status, body, node),
        mgmt.from_service_check(status, body),
        mgmt.from_alarms(status, body, node),
    ):
        assert isinstance(s, mgmt.NodeState) and isinstance(s.health, Health) and s.reason
        assert s.alarms is None or all(isinstance(a, str) for a in s.alarms)
    if status not in (200, 503):
        assert mgmt.from_service_check(status, body).health is Health.UNKNOWN


# --- the fetcher, against a fake HTTP server ---------------------------------------------------------------


class FakeHttp:
    """Answers each request with ``respond(request_head) -> raw bytes``; records the request heads."""

    def __init__(self, respond: Callable[[bytes], Awaitable[bytes]]) -> None:
        self.respond = respond
        self.heads: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> FakeHttp:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            head = await r.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            w.write(await self.respond(head))
            await w.drain()
        w.close()


def answer(status: int, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


async def const(data: bytes) -> bytes:
    return data


def replay(data: bytes) -> Callable[[bytes], Awaitable[bytes]]:
    return lambda head: const(data)


@pytest.mark.parametrize("loop", LOOPS)
def test_fetch_node_with_basic_auth(loop: str) -> None:
    body = fx("node_310_running.hand.json")

    async def main() -> None:
        async with FakeHttp(lambda head: const(answer(200, body))) as srv:
            got = await mgmt.fetch(
                "127.0.0.1", srv.port, mgmt.node_path("rabbit@rmq1"), user="mon", password="pw"
            )
            assert isinstance(got, mgmt.HttpAnswer) and got.status == 200 and got.body == body
            head = srv.heads[0].decode()
            assert head.startswith("GET /api/nodes/rabbit%40rmq1 HTTP/1.1\r\n")
            assert f"Authorization: Basic {base64.b64encode(b'mon:pw').decode()}" in head
            assert f"Host: 127.0.0.1:{srv.port}" in head and "Connection: close" in head
            assert mgmt.from_node(got.status, got.body, "rabbit@rmq1").health is Health.READY
            # 4.1.1 endpoints need no auth: no header then
            await mgmt.fetch("127.0.0.1", srv.port, mgmt.IS_IN_SERVICE)
            assert "Authorization" not in srv.heads[1].decode()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_fetch_chunked_and_eof_delimited(loop: str) -> None:
    body = fx("is_in_service_503.hand.json")
    chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n"
    chunked += b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 10]), body[i : i + 10]) for i in range(0, len(body), 10)
    )
    chunked += b"0\r\n\r\n"
    eof = b"HTTP/1.0 503 Service Unavailable\r\n\r\n" + body

    async def main() -> None:
        for raw in (chunked, eof):
            async with FakeHttp(replay(raw)) as srv:
                got = await mgmt.fetch("127.0.0.1", srv.port, mgmt.IS_IN_SERVICE)
                assert isinstance(got, mgmt.HttpAnswer) and got.status == 503 and got.body == body, got
                assert mgmt.from_service_check(got.status, got.body).health is Health.DRAINING

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_fetch_failures_are_values(loop: str) -> None:
    async def silent(head: bytes) -> bytes:
        await asyncio.sleep(30)
        return b""

    async def main() -> None:
        cases: list[tuple[Callable[[bytes], Awaitable[bytes]], str]] = [
            (lambda h: const(b"SSH-2.0-OpenSSH\r\n\r\n"), "not an HTTP answer"),
            (lambda h: const(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}"), "incomplete answer"),
            (lambda h: const(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n"), "larger than"),
            (lambda h: const(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"), "bad Content-Length"),
            (
                lambda h: const(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
                "bad chunk size",
            ),
            (lambda h: const(b""), "incomplete answer"),
            (silent, "within 0.3 s"),
        ]
        for respond, words in cases:
            async with FakeHttp(respond) as srv:
                # 0.3 s for the silent one; the others' reason must not depend on the timer (a busy
                # machine's stall of the loop outlasted 0.3 s: "within 0.3 s" instead of theirs)
                timeout = 0.3 if respond is silent else 10.0
                got = await mgmt.fetch("127.0.0.1", srv.port, "/api/nodes", timeout=timeout)
                assert isinstance(got, mgmt.FetchFailed) and words in got.reason, (words, got)
        # refused: a port nobody listens on (bound, never listening)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            got = await mgmt.fetch("127.0.0.1", s.getsockname()[1], "/api/nodes", timeout=10)
        assert isinstance(got, mgmt.FetchFailed) and "refused" in got.reason.lower(), got
        assert mgmt.from_failure(got).health is Health.UNKNOWN

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_fetch_body_cap_without_length(loop: str) -> None:
    async def main() -> None:
        async with FakeHttp(lambda h: const(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 5000)) as srv:
            got = await mgmt.fetch("127.0.0.1", srv.port, "/", max_body=1000)
            assert isinstance(got, mgmt.FetchFailed) and "larger than 1000" in got.reason

    run(loop, main)


# --- real answers from the lab's RabbitMQ 3.10.8 (mgmt_fixtures/capture_lab310.py) ------------------------


def lab(name: str) -> tuple[int, bytes]:
    entries = [e for e in json.loads((FIX / "lab310.json").read_text()) if e["name"] == name]
    assert entries and "status" in entries[0], f"{name} not captured"
    return int(entries[0]["status"]), (FIX / f"{name}.lab310.body").read_bytes()


def test_lab310_normal() -> None:
    s = mgmt.from_node(*lab("normal_node_rmq1"), "rabbit@rmq1")
    assert s.health is Health.READY and s.alarms == frozenset() and "no maintenance flag" in s.reason
    assert mgmt.from_node(*lab("normal_nodes"), "rabbit@rmq1").health is Health.READY
    assert mgmt.from_alarms(*lab("normal_alarms")).alarms == frozenset()
    assert mgmt.from_alarms(*lab("normal_local_alarms"), endpoint=mgmt.LOCAL_ALARMS).alarms == frozenset()


def test_lab310_has_no_411_endpoints_and_answers_406() -> None:
    for name, endpoint in (
        ("normal_is_in_service", mgmt.IS_IN_SERVICE),
        ("normal_ready_to_serve_clients", mgmt.READY_TO_SERVE_CLIENTS),
    ):
        status, body = lab(name)
        assert status == 406  # not 404: a fact of 3.10.8, found by this capture
        s = mgmt.from_service_check(status, body, endpoint)
        assert s.health is Health.UNKNOWN and not s.supported


def test_lab310_without_credentials() -> None:
    s = mgmt.from_node(*lab("normal_no_auth_node"), "rabbit@rmq1")
    assert s.health is Health.UNKNOWN and "401" in s.reason


def test_lab310_memory_alarm_on_rmq2() -> None:
    # /api/nodes is a periodic stats snapshot: taken right after the alarm it still shows mem_alarm false
    # (and the old mem_limit); the alarm checks below see the alarm at once. So alarms come from the checks.
    status, body = lab("memalarm_node_rmq2")
    assert json.loads(body)["mem_alarm"] is False and json.loads(body)["mem_limit"] == 268435456
    two = mgmt.from_node(status, body, "rabbit@rmq2")
    assert two.health is Health.READY and two.alarms == frozenset()
    cluster = lab("memalarm_alarms")
    assert cluster[0] == 503
    assert mgmt.from_alarms(*cluster, "rabbit@rmq2").alarms == frozenset({"memory"})
    one = mgmt.from_alarms(*cluster, "rabbit@rmq1")
    assert one.alarms == frozenset() and "memory on rabbit@rmq2" in one.reason
    assert mgmt.from_alarms(*lab("memalarm_local_alarms_rmq2"), "rabbit@rmq2").alarms == frozenset({"memory"})
    assert mgmt.from_alarms(*lab("memalarm_local_alarms_rmq1"), "rabbit@rmq1").alarms == frozenset()


def test_lab310_drain_is_invisible_in_the_api() -> None:
    # rabbitmq-upgrade drain on rmq2: 3.10 still says running, no being_drained; rmq2's own ports refuse
    s = mgmt.from_node(*lab("drained_nodes"), "rabbit@rmq2")
    assert s.health is Health.READY and "no maintenance flag" in s.reason
    entries = {e["name"]: e for e in json.loads((FIX / "lab310.json").read_text())}
    assert "refused" in entries["drained_self"]["failed"].lower()
    assert "refused" in entries["drained_amqp_connect"]["result"].lower()


def test_lab310_stopped_app() -> None:
    assert mgmt.from_node(*lab("stopped_nodes"), "rabbit@rmq2").health is Health.DOWN
    assert mgmt.from_node(*lab("stopped_nodes"), "rabbit@rmq1").health is Health.READY
    alone = mgmt.from_node(
        *lab("stopped_node_rmq2"), "rabbit@rmq2"
    )  # {"name", "running": false, "type", ...}
    assert alone.health is Health.DOWN and alone.alarms is None


# --- connection names and the graceful close ---------------------------------------------------------------


def test_connection_name_as_rabbitmq_prints_it() -> None:
    # rabbitmq-aware.md §5: the name, and its URL-encoded form in the DELETE path
    name = mgmt.connection_name(("198.51.100.7", 40000), ("192.0.2.100", 5672))
    assert name == "198.51.100.7:40000 -> 192.0.2.100:5672"
    assert mgmt.connection_path(name) == "/api/connections/198.51.100.7%3A40000%20-%3E%20192.0.2.100%3A5672"
    assert mgmt.connection_name(("2001:db8::7", 1, 0, 0), ("2001:db8::1", 5672, 0, 0)) == (
        "[2001:db8::7]:1 -> [2001:db8::1]:5672"
    )
    assert mgmt.connection_name(("::ffff:192.0.2.21", 51234, 0, 0), ("::ffff:192.0.2.11", 5672, 0, 0)) == (
        "192.0.2.21:51234 -> 192.0.2.11:5672"
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_close_connection(loop: str) -> None:
    async def main() -> None:
        for status, closed in ((204, True), (404, False), (401, False), (500, False)):
            async with FakeHttp(replay(answer(status, b""))) as srv:
                r = await mgmt.close_connection(
                    "127.0.0.1",
                    srv.port,
                    "198.51.100.7:40000 -> 192.0.2.100:5672",
                    "rebalance: rmq1 above its limit\r\nX-Evil: 1 é",
                    user="admin",
                    password="pw",
                )
                assert r.closed is closed, (status, r)
                head = srv.heads[0].decode()
                assert head.startswith(
                    "DELETE /api/connections/198.51.100.7%3A40000%20-%3E%20192.0.2.100%3A5672 HTTP/1.1\r\n"
                )
                # one header line, printable ASCII: no header injection through the reason
                assert "\r\nX-Reason: rebalance: rmq1 above its limit??X-Evil: 1 ?\r\n" in head
                assert "\r\nX-Evil" not in head
        with pytest.raises(ValueError, match="bad HTTP header"):
            await mgmt.request("127.0.0.1", 1, "GET", "/", headers={"X-A": "b\r\nc"})
        refused = mgmt.close_result(mgmt.FetchFailed("Connection refused"))
        assert not refused.closed and "refused" in refused.reason

    run(loop, main)
