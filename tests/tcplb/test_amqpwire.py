"""tcplb.amqpwire: Connection.Start recognition in any chunking, the clean probe exchange, garbage safety.

The broker side is written here by hand from the AMQP 0-9-1 spec (frame = type, channel u16, size u32,
payload, 0xCE; method payload = class u16, method u16, arguments) and RabbitMQ's field-table letters, not
with the module's encoders. The Start sample mirrors what RabbitMQ 3.10.8 sends (rabbit_reader.erl
server_properties: capabilities, cluster_name, copyright, information, platform, product, version).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb import amqpwire as aw

# --- a hand-written broker ---------------------------------------------------------------------------------


def sstr(s: str) -> bytes:
    b = s.encode()
    return bytes([len(b)]) + b


def lstr(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def table(items: dict[str, object]) -> bytes:
    out = b""
    for k, v in items.items():
        out += sstr(k)
        if isinstance(v, bool):
            out += b"t" + (b"\x01" if v else b"\x00")
        elif isinstance(v, int):
            out += b"I" + v.to_bytes(4, "big", signed=True)
        elif isinstance(v, str):
            out += b"S" + lstr(v.encode())
        elif isinstance(v, dict):
            out += b"F" + table(v)
        else:
            raise TypeError(v)
    return lstr(out)


def frame(payload: bytes, ftype: int = 1, channel: int = 0, end: int = 0xCE) -> bytes:
    return (
        bytes([ftype]) + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + bytes([end])
    )


def method(cls: int, meth: int, args: bytes = b"") -> bytes:
    return frame(cls.to_bytes(2, "big") + meth.to_bytes(2, "big") + args)


RMQ_310_PROPS: dict[str, object] = {
    "capabilities": {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "consumer_priorities": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
        "direct_reply_to": True,
    },
    "cluster_name": "rabbit@rmq1",
    "copyright": "Copyright (c) 2007-2022 VMware, Inc. or its affiliates.",
    "information": "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
    "platform": "Erlang/OTP 25.2.3",
    "product": "RabbitMQ",
    "version": "3.10.8",
}


def start_frame(props: dict[str, object] = RMQ_310_PROPS, mechs: str = "AMQPLAIN PLAIN") -> bytes:
    return method(10, 10, bytes([0, 9]) + table(props) + lstr(mechs.encode()) + lstr(b"en_US"))


START = start_frame()
TUNE = method(10, 30, struct.pack(">HIH", 2047, 131072, 60))
OPEN_OK = method(10, 41, sstr(""))
CLOSE_OK = method(10, 51)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        if p > prev:
            out.append(data[prev:p])
        prev = p
    return out


def parse_client_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(class, method, arguments) of each method frame the client wrote."""
    out = []
    while data:
        assert data[0] == 1 and data[1:3] == b"\x00\x00"
        size = int.from_bytes(data[3:7], "big")
        assert data[7 + size] == 0xCE
        payload = data[7 : 7 + size]
        out.append((int.from_bytes(payload[0:2], "big"), int.from_bytes(payload[2:4], "big"), payload[4:]))
        data = data[8 + size :]
    return out


# --- StartReader -------------------------------------------------------------------------------------------


def test_header_constant() -> None:
    assert bytes([0x41, 0x4D, 0x51, 0x50, 0, 0, 9, 1]) == aw.PROTOCOL_HEADER


def test_rabbitmq_310_start_in_one_chunk() -> None:
    r = aw.StartReader().feed(START)
    assert isinstance(r, aw.Start)
    assert (r.version_major, r.version_minor) == (0, 9)
    assert r.product == "RabbitMQ" and r.version == "3.10.8" and r.cluster_name == "rabbit@rmq1"
    assert r.mechanisms == ("AMQPLAIN", "PLAIN") and r.locales == ("en_US",)
    caps = r.server_properties["capabilities"]
    assert isinstance(caps, dict) and caps["connection.blocked"] is True
    assert r.frame_length == len(START) and r.properties_error is None
    assert r.describe() == "Connection.Start (RabbitMQ, 3.10.8, cluster rabbit@rmq1)"


def test_start_byte_by_byte_needs_more_until_the_end_byte() -> None:
    rd = aw.StartReader()
    for b in START[:-1]:
        assert rd.feed(bytes([b])) is aw.NEED_MORE
    assert isinstance(rd.feed(START[-1:]), aw.Start)
    assert isinstance(rd.feed(b"garbage after"), aw.Start)  # decided once


def test_eof_before_a_complete_start() -> None:
    for n in (0, 1, 7, 11, len(START) - 1):
        rd = aw.StartReader()
        rd.feed(START[:n])
        r = rd.feed_eof()
        assert isinstance(r, aw.NotAmqp)
        assert ("without answering" in r.reason) if n == 0 else (f"after {n} bytes" in r.reason)


def test_protocol_header_reply_is_a_version_refusal() -> None:
    rd = aw.StartReader()
    assert rd.feed(b"AMQP") is aw.NEED_MORE
    r = rd.feed(b"\x00\x00\x09\x01")
    assert isinstance(r, aw.NotAmqp) and r.header_reply == b"AMQP\x00\x00\x09\x01" and "refuses" in r.reason
    r2 = aw.StartReader().feed(b"AMQP\x01\x01\x00\x0a")  # AMQP 1.0's header
    assert isinstance(r2, aw.NotAmqp) and r2.header_reply == b"AMQP\x01\x01\x00\x0a"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "type byte 0x48"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "type byte 0x53"),
        (b"Ax", "type byte 0x41"),
        (frame(b"\x00\x0a\x00\x0b", channel=1), "channel 1"),
        (frame(b"", ftype=8), "type byte 0x08"),
        (method(10, 30, b"\x00" * 8), "method 10.30"),
        (method(20, 10)[:11], "method 20.10"),
        (START[:-1] + b"\x00", "frame end byte is 0x00"),
        (bytes([1, 0, 0, 0, 0x10, 0, 0]), "larger than"),
    ],
)
def test_not_amqp(data: bytes, words: str) -> None:
    r = aw.StartReader().feed(data)
    assert isinstance(r, aw.NotAmqp), r
    assert words in r.reason


def test_unparsable_properties_still_a_start() -> None:
    weird = method(10, 10, bytes([0, 9]) + lstr(sstr("k") + b"Z\x00") + lstr(b"PLAIN") + lstr(b"en_US"))
    r = aw.StartReader().feed(weird)
    assert (
        isinstance(r, aw.Start)
        and r.server_properties == {}
        and "unknown field type" in (r.properties_error or "")
    )


props_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-(2**31), 2**31 - 1), st.text(max_size=30)),
    lambda inner: st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
props = st.dictionaries(st.text(max_size=12), props_values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(props, st.lists(st.integers(0, 10_000), max_size=12))
def test_any_start_in_any_chunking(p: dict[str, object], cuts: list[int]) -> None:
    data = start_frame(p)
    rd = aw.StartReader()
    results = [rd.feed(c) for c in chunks(data, cuts)]
    assert all(r is aw.NEED_MORE for r in results[:-1])
    last = results[-1]
    assert isinstance(last, aw.Start) and last.server_properties == p and last.properties_error is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=10))
def test_any_bytes_parse_or_not_amqp(data: bytes, cuts: list[int]) -> None:
    rd = aw.StartReader()
    for c in chunks(data, cuts):
        assert isinstance(rd.feed(c), (aw.NeedMore, aw.Start, aw.NotAmqp))
    assert isinstance(rd.feed_eof(), (aw.Start, aw.NotAmqp))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(START) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_start_never_raises(muts: list[tuple[int, int]]) -> None:
    data = bytearray(START)
    for pos, val in muts:
        data[pos] = val
    rd = aw.StartReader()
    r = rd.feed(bytes(data))
    assert isinstance(r, (aw.NeedMore, aw.Start, aw.NotAmqp))
    assert isinstance(rd.feed_eof(), (aw.Start, aw.NotAmqp))


# --- the clean probe ---------------------------------------------------------------------------------------


def run_probe(server: list[bytes], creds: aw.Credentials | None) -> tuple[bytes, aw.ProbeOutcome | None]:
    p = aw.Probe(creds)
    sent = p.start()
    for chunk in server:
        step = p.feed(chunk)
        sent += step.send
        if step.outcome is not None:
            return sent, step.outcome
    return sent, None


def test_clean_exchange() -> None:
    creds = aw.Credentials("probe", "s3cret", "/")
    sent, out = run_probe([START, TUNE, OPEN_OK, CLOSE_OK], creds)
    assert out is not None and out.ok and out.clean and out.close_code is None
    assert out.start is not None and out.start.version == "3.10.8"
    assert sent.startswith(b"AMQP\x00\x00\x09\x01")
    frames = parse_client_frames(sent[8:])
    assert [(c, m) for c, m, _ in frames] == [(10, 11), (10, 31), (10, 40), (10, 50)]
    start_ok = frames[0][2]
    n = int.from_bytes(start_ok[:4], "big")
    rest = start_ok[4 + n :]
    assert rest[: 1 + 5] == sstr("PLAIN")
    rest = rest[6:]
    rlen = int.from_bytes(rest[:4], "big")
    assert rest[4 : 4 + rlen] == b"\x00probe\x00s3cret"
    assert rest[4 + rlen :] == sstr("en_US")
    assert frames[1][2] == struct.pack(">HIH", 2047, 131072, 0)  # echo channel-max/frame-max, heartbeat 0
    assert frames[2][2] == sstr("/") + b"\x00\x00"
    assert frames[3][2] == struct.pack(">H", 200) + sstr("") + struct.pack(">HH", 0, 0)


def test_clean_exchange_in_byte_chunks_with_heartbeats() -> None:
    data = START + TUNE + frame(b"", ftype=8) + OPEN_OK + CLOSE_OK
    sent, out = run_probe([data[i : i + 1] for i in range(len(data))], aw.Credentials("u", "p", "vh"))
    assert out is not None and out.ok and out.clean
    assert [(c, m) for c, m, _ in parse_client_frames(sent[8:])] == [(10, 11), (10, 31), (10, 40), (10, 50)]


def test_everything_in_one_chunk() -> None:
    sent, out = run_probe([START + TUNE + OPEN_OK + CLOSE_OK], aw.Credentials("u", "p"))
    assert out is not None and out.ok and out.clean
    assert len(parse_client_frames(sent[8:])) == 4


def test_access_refused_is_answered_with_close_ok() -> None:
    refused = method(
        10, 50, struct.pack(">H", 403) + sstr("ACCESS_REFUSED - Login was refused") + b"\x00\x00\x00\x00"
    )
    sent, out = run_probe([START, refused], aw.Credentials("probe", "wrong"))
    assert out is not None and not out.ok and not out.clean and out.close_code == 403
    assert "ACCESS_REFUSED" in (out.close_text or "") and "Connection.Tune" in out.reason
    assert parse_client_frames(sent[8:])[-1][:2] == (10, 51)


def test_without_credentials_stops_at_start_and_says_it_is_not_clean() -> None:
    sent, out = run_probe([START], None)
    assert sent == aw.PROTOCOL_HEADER
    assert out is not None and out.ok and not out.clean


def test_no_plain_mechanism() -> None:
    _, out = run_probe([start_frame(mechs="EXTERNAL")], aw.Credentials("u", "p"))
    assert out is not None and not out.ok and "PLAIN" in out.reason


def test_eof_in_each_phase() -> None:
    for server in ([], [START], [START, TUNE], [START, TUNE, OPEN_OK]):
        p = aw.Probe(aw.Credentials("u", "p"))
        for c in server:
            p.feed(c)
        out = p.feed_eof()
        assert not out.ok
        assert p.feed_eof() is out and p.feed(b"x").outcome is out


def test_unexpected_method_after_start() -> None:
    _, out = run_probe([START, method(10, 41, sstr(""))], aw.Credentials("u", "p"))
    assert out is not None and not out.ok and "unexpected method 10.41" in out.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.lists(st.integers(0, 200), max_size=8), st.booleans())
def test_probe_after_start_never_raises(data: bytes, cuts: list[int], with_creds: bool) -> None:
    p = aw.Probe(aw.Credentials("u", "p") if with_creds else None)
    p.feed(START)
    for c in chunks(data, cuts):
        step = p.feed(c)
        assert isinstance(step.send, bytes)
    assert isinstance(p.feed_eof(), aw.ProbeOutcome)


# --- encoders: local misuse --------------------------------------------------------------------------------


def test_encoder_errors_name_the_field() -> None:
    with pytest.raises(aw.AmqpWireError, match="vhost"):
        aw.connection_open("v" * 300)
    with pytest.raises(aw.AmqpWireError, match="NUL"):
        aw.start_ok("a\0b", "p")
    with pytest.raises(aw.AmqpWireError, match="password: PLAIN credentials cannot contain NUL"):
        aw.Credentials("u", "p\0")
    with pytest.raises(aw.AmqpWireError, match="vhost: longer than 255"):
        aw.Credentials("u", "p", "v" * 256)
    with pytest.raises(aw.AmqpWireError, match="tune values"):
        aw.tune_ok(70000, 1)
    with pytest.raises(aw.AmqpWireError, match="cannot encode float"):
        aw.start_ok("u", "p", client_properties={"x": 1.5})
    with pytest.raises(aw.AmqpWireError, match="reply code"):
        aw.close(-1)


def test_encoded_client_properties_decode_back() -> None:
    cp = {"product": "tcplb", "n": 5, "big": 2**40, "flag": True, "raw": b"\x00\x01", "nested": {"a": "b"}}
    payload = aw.start_ok("u", "p", client_properties=cp)[7 + 4 : -1]
    # decode with the module's reader through a fake Start carrying the same table
    r = aw.StartReader().feed(
        method(
            10,
            10,
            bytes([0, 9])
            + payload[: 4 + int.from_bytes(payload[:4], "big")]
            + lstr(b"PLAIN")
            + lstr(b"en_US"),
        )
    )
    assert isinstance(r, aw.Start) and r.server_properties == cp


# --- real bytes from the lab's RabbitMQ 3.10.8 (tests/tcplb/mgmt_fixtures/capture_lab310.py) ---------------

LAB = Path(__file__).parent / "mgmt_fixtures" / "lab310.json"


def lab_entry(name: str) -> dict[str, Any]:
    entries = [e for e in json.loads(LAB.read_text()) if e["name"] == name]
    assert entries, f"{name} missing from {LAB}"
    entry: dict[str, Any] = entries[0]
    return entry


def test_real_rabbitmq_310_start() -> None:
    raw = bytes.fromhex(lab_entry("probe_header_only")["raw_hex"])
    r = aw.StartReader().feed(raw)
    assert isinstance(r, aw.Start) and r.properties_error is None
    assert r.product == "RabbitMQ" and r.version == "3.10.8" and r.cluster_name
    assert set(r.mechanisms) == {"PLAIN", "AMQPLAIN"} and r.frame_length == len(raw)
    rd = aw.StartReader()
    for i in range(len(raw) - 1):
        assert rd.feed(raw[i : i + 1]) is aw.NEED_MORE
    assert isinstance(rd.feed(raw[-1:]), aw.Start)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2000), max_size=10))
def test_real_broker_bytes_replayed_in_any_chunking(cuts: list[int]) -> None:
    # everything the real broker sent during the clean probe: Start, Tune, Open-Ok, Close-Ok
    raw = bytes.fromhex(lab_entry("probe_clean")["raw_hex"])
    _, out = run_probe(chunks(raw, cuts), aw.Credentials("probe", "probe-pw"))
    assert out is not None and out.ok and out.clean


def test_real_broker_log_clean_probe_vs_header_only() -> None:
    # what RabbitMQ 3.10.8 logged (log.console.level = info) for each probe, captured with the probe's run
    clean = lab_entry("probe_clean")
    assert clean["ok"] and clean["clean"]
    assert clean["log"] and all("[info]" in line for line in clean["log"])
    assert any("authenticated and granted access" in line for line in clean["log"])
    header_only = lab_entry("probe_header_only")
    assert any(
        "[warning]" in line and "client unexpectedly closed TCP connection" in line
        for line in header_only["log"]
    )
