"""The pure AMQP 0-9-1 pieces a ``rabbitmq`` check and protocol-aware connect need (no I/O, no clock).

In AMQP 0-9-1 the client speaks first: it sends :data:`PROTOCOL_HEADER` and the broker answers with
``Connection.Start`` (a method frame: type 1, channel 0, class 10, method 10). Everything here works on
bytes in arbitrary chunks and never raises on what a peer sent: remote garbage becomes a :class:`NotAmqp`
value (or a failed :class:`ProbeOutcome`); :class:`AmqpWireError` is only for bad *local* input (a user
name longer than a short string allows, ...).

:class:`StartReader`
    Recognises the broker's first frame from chunks: :data:`NEED_MORE`, :class:`Start` (with the server
    properties ``product``, ``version``, ``cluster_name`` when present) or :class:`NotAmqp` (garbage, a frame
    that is not Connection.Start, or a protocol header sent back, which is how a broker refuses the protocol
    version the client asked for). Protocol-aware connect uses it to decide when a server connection is
    established; the reader only looks, so the caller relays the bytes it fed unchanged.

:class:`Probe` and the encoders
    The exchange a check uses so that **the broker logs no warning or error** (``rabbitmq-aware.md`` §3,
    read in ``rabbit_reader.erl`` of 3.10.8). What RabbitMQ 3.10 logs for each way of ending a probe:

    * connect and close without sending a byte: debug only (this is the quiet ``tcp`` check);
    * header, Connection.Start, then FIN or RST (the old ``amqp`` check): info ``accepting AMQP
      connection`` then **warning** ``client unexpectedly closed TCP connection``;
    * header, then silence: **error** ``handshake_timeout`` after 10 s;
    * Connection.Close before Start-Ok or before Open: **error** (after a 3 s silent-close delay);
    * the full handshake and a Connection.Close: **info** lines only (accepting; "has a client-provided
      name: tcplb health check", from the ``connection_name`` client property; authenticated; closing), as
      captured from the lab's 3.10.8 (``tests/tcplb/mgmt_fixtures/lab310.json``); with
      ``log.connection.level = warning`` nothing at all.

    So a clean probe answers Start with Start-Ok (PLAIN, the probe user's credentials), Tune with Tune-Ok
    (echoing channel-max and frame-max, heartbeat 0), opens the vhost, and once Open-Ok arrives sends
    Connection.Close (200) and waits for Close-Ok before closing the socket normally (FIN). Closing after the
    header is *not* clean: it costs a warning per probe. Without credentials (:class:`Probe` with
    ``credentials=None``) the probe stops at Start and the caller closes: that is the warning case, chosen
    knowingly (the docs say so). The probe user needs access to the vhost and nothing else
    (``rabbitmqctl set_permissions -p / probe '^$' '^$' '^$'``). If the broker closes the connection itself
    (``403 ACCESS_REFUSED`` for bad credentials, ``530 NOT_ALLOWED`` for the vhost), the probe answers
    Close-Ok, which is the polite end, and reports the code: the broker is alive but refuses the probe.

Its users: ``tcplb/checks.py`` (the ``amqp`` and ``rabbitmq`` checks run :class:`Probe`), the protocol-aware
connect of ``protocol = "amqp"`` listeners (:class:`StartReader`), and ``netns/`` (its "does the node answer
AMQP" probes use :class:`StartReader` too), so the first frame is parsed in one place.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

__all__ = [
    "CONNECTION_CLASS",
    "FRAME_END",
    "NEED_MORE",
    "PROTOCOL_HEADER",
    "AmqpWireError",
    "Credentials",
    "Frame",
    "FrameReader",
    "NeedMore",
    "NotAmqp",
    "Probe",
    "ProbeOutcome",
    "ProbeStep",
    "Start",
    "StartReader",
    "close",
    "close_ok",
    "connection_open",
    "method_frame",
    "start_ok",
    "tune_ok",
]

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD: Final = 1
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
CONNECTION_CLASS: Final = 10
START, START_OK, SECURE, TUNE, TUNE_OK, OPEN, OPEN_OK, CLOSE, CLOSE_OK = 10, 11, 20, 30, 31, 40, 41, 50, 51
BLOCKED, UNBLOCKED = 60, 61
REPLY_SUCCESS: Final = 200

#: Largest frame accepted before Tune. The spec only guarantees frame-min-size (4096) before the
#: negotiation; RabbitMQ's Start is about 500 bytes. Anything bigger is not taken for a broker's greeting.
MAX_HANDSHAKE_FRAME: Final = 65536
_MAX_DEPTH = 16  # nested tables/arrays in a field value

FieldValue = object  # str, bytes, int, float, bool, None, dict[str, FieldValue], list[FieldValue]


class AmqpWireError(ValueError):
    """Bad local input for an encoder (never raised for bytes a peer sent)."""


# --- results ----------------------------------------------------------------------------------------------


class NeedMore:
    """Not enough bytes yet to decide."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()


@dataclass(frozen=True, slots=True)
class Start:
    """The broker's Connection.Start. ``properties_error`` is set when the server-properties table could not
    be parsed (the frame is still a well-formed Start: that is what counts for "the broker answered")."""

    version_major: int
    version_minor: int
    server_properties: Mapping[str, FieldValue]
    mechanisms: tuple[str, ...]
    locales: tuple[str, ...]
    frame_length: int  # bytes the frame occupied on the wire
    properties_error: str | None = None

    def _str(self, key: str) -> str | None:
        v = self.server_properties.get(key)
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        return v if isinstance(v, str) else None

    @property
    def product(self) -> str | None:
        return self._str("product")

    @property
    def version(self) -> str | None:
        return self._str("version")

    @property
    def cluster_name(self) -> str | None:
        return self._str("cluster_name")

    def describe(self) -> str:
        parts = [p for p in (self.product, self.version) if p]
        if self.cluster_name:
            parts.append(f"cluster {self.cluster_name}")
        return "Connection.Start" + (f" ({', '.join(parts)})" if parts else "")


@dataclass(frozen=True, slots=True)
class NotAmqp:
    """The peer does not speak AMQP 0-9-1 to us. ``header_reply`` holds the protocol header the peer sent
    back (a version refusal), if that is what happened."""

    reason: str
    header_reply: bytes | None = None


StartResult = NeedMore | Start | NotAmqp


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    channel: int
    payload: bytes

    @property
    def method(self) -> tuple[int, int] | None:
        if self.type != FRAME_METHOD or len(self.payload) < 4:
            return None
        cls, meth = struct.unpack_from("!HH", self.payload)
        return cls, meth


# --- field tables (decoding never raises: _Bad stays inside this module) ------------------------------------


class _Bad(Exception):
    pass


class _Cursor:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Bad(f"truncated: need {n} bytes at offset {self.pos} of {len(self.buf)}")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str) -> tuple[object, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def octet(self) -> int:
        return self.take(1)[0]

    def short(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def long(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def shortstr(self) -> str:
        return self.take(self.octet()).decode("utf-8", "replace")

    def longstr(self) -> bytes:
        return self.take(self.long())


def _value(c: _Cursor, depth: int) -> FieldValue:
    # type letters as RabbitMQ (rabbit_binary_parser) and pika read them
    t = c.take(1)
    if t == b"S":
        raw = c.longstr()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if t == b"t":
        return c.octet() != 0
    if t == b"b":
        return c.unpack("!b")[0]
    if t == b"B":
        return c.octet()
    if t == b"s":
        return c.unpack("!h")[0]
    if t == b"u":
        return c.short()
    if t == b"I":
        return c.unpack("!i")[0]
    if t == b"i":
        return c.long()
    if t == b"l":
        return c.unpack("!q")[0]
    if t == b"T":
        return c.unpack("!Q")[0]
    if t == b"f":
        return c.unpack("!f")[0]
    if t == b"d":
        return c.unpack("!d")[0]
    if t == b"D":
        scale = c.octet()
        val = int.from_bytes(c.take(4), "big", signed=True)
        return val / (10**scale)
    if t == b"x":
        return c.longstr()
    if t == b"V":
        return None
    if t == b"F":
        return _table(c, depth + 1)
    if t == b"A":
        if depth >= _MAX_DEPTH:
            raise _Bad("field values nested too deep")
        end = c.long()
        sub = _Cursor(c.take(end))
        out: list[FieldValue] = []
        while sub.pos < len(sub.buf):
            out.append(_value(sub, depth + 1))
        return out
    raise _Bad(f"unknown field type {t!r}")


def _table(c: _Cursor, depth: int = 0) -> dict[str, FieldValue]:
    if depth >= _MAX_DEPTH:
        raise _Bad("field tables nested too deep")
    sub = _Cursor(c.take(c.long()))
    out: dict[str, FieldValue] = {}
    while sub.pos < len(sub.buf):
        key = sub.shortstr()
        out[key] = _value(sub, depth)
    return out


# --- frames -----------------------------------------------------------------------------------------------


def _split_frame(buf: bytes | bytearray, max_frame: int) -> Frame | NeedMore | NotAmqp:
    """The first frame of ``buf``, or why there is none (yet)."""
    if len(buf) < 7:
        return NEED_MORE
    ftype, channel, size = struct.unpack_from("!BHI", buf)
    if ftype not in (FRAME_METHOD, 2, 3, FRAME_HEARTBEAT):
        return NotAmqp(f"not an AMQP frame: type byte {ftype:#04x}")
    if size > max_frame:
        return NotAmqp(f"frame of {size} bytes (type {ftype}, channel {channel}) is larger than {max_frame}")
    if len(buf) < 8 + size:
        return NEED_MORE
    if buf[7 + size] != FRAME_END:
        return NotAmqp(f"frame end byte is {buf[7 + size]:#04x}, not 0xce")
    return Frame(ftype, channel, bytes(buf[7 : 7 + size]))


class FrameReader:
    """Splits a byte stream into frames; after the first :class:`NotAmqp` it stays failed."""

    def __init__(self, max_frame: int = MAX_HANDSHAKE_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self.failed: NotAmqp | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame] | NotAmqp:
        if self.failed is not None:
            return self.failed
        self._buf += data
        frames: list[Frame] = []
        while True:
            r = _split_frame(self._buf, self._max)
            if isinstance(r, NeedMore):
                return frames
            if isinstance(r, NotAmqp):
                self.failed = r
                return r
            del self._buf[: 8 + len(r.payload)]
            frames.append(r)


def _decode_start(frame: Frame, length: int) -> Start | NotAmqp:
    c = _Cursor(frame.payload, 4)
    try:
        major, minor = c.octet(), c.octet()
    except _Bad as e:
        return NotAmqp(f"Connection.Start too short: {e}")
    try:
        props: dict[str, FieldValue] = _table(c)
    except _Bad as e:
        return Start(major, minor, {}, (), (), length, f"server properties: {e}")
    try:
        mechs = c.longstr().decode("utf-8", "replace").split()
        locales = c.longstr().decode("utf-8", "replace").split()
    except _Bad as e:
        return Start(major, minor, props, (), (), length, f"mechanisms/locales: {e}")
    return Start(major, minor, props, tuple(mechs), tuple(locales), length)


def _describe_frame(f: Frame) -> str:
    m = f.method
    if m is not None:
        return f"method {m[0]}.{m[1]} on channel {f.channel}"
    return f"frame type {f.type} on channel {f.channel}"


def _start_or_not(buf: bytes | bytearray, max_frame: int) -> StartResult:
    first = buf[0]
    if first != FRAME_METHOD:
        if first == 0x41:  # "A": a protocol header instead of a frame is how a broker refuses our version
            if len(buf) < 8 and b"AMQP".startswith(bytes(buf[:4])):
                return NEED_MORE
            hdr = bytes(buf[:8])
            if hdr[:4] == b"AMQP":
                return NotAmqp(
                    f"the server answered with the protocol header {hdr!r}: it refuses AMQP 0-9-1 "
                    "(a version mismatch, or a server that is not an AMQP 0-9-1 broker)",
                    hdr,
                )
        return NotAmqp(f"type byte {first:#04x}: the first frame is not a method frame, not Connection.Start")
    # reject as early as possible what can never become Connection.Start
    if len(buf) >= 3 and (channel := int.from_bytes(buf[1:3], "big")) != 0:
        return NotAmqp(f"first frame is on channel {channel}, not Connection.Start (channel 0)")
    if len(buf) >= 7 and (size := int.from_bytes(buf[3:7], "big")) > max_frame:
        return NotAmqp(f"first frame of {size} bytes is larger than {max_frame}: not a broker's greeting")
    if len(buf) >= 11:
        cls, meth = int.from_bytes(buf[7:9], "big"), int.from_bytes(buf[9:11], "big")
        if (cls, meth) != (CONNECTION_CLASS, START):
            return NotAmqp(f"first frame is method {cls}.{meth}, not Connection.Start (10.10)")
    r = _split_frame(buf, max_frame)
    if not isinstance(r, Frame):
        return r
    if r.method != (CONNECTION_CLASS, START):  # a frame shorter than its class and method ids
        return NotAmqp(f"first frame is {_describe_frame(r)}, not Connection.Start (10.10 on channel 0)")
    return _decode_start(r, 8 + len(r.payload))


class StartReader:
    """Recognises Connection.Start at the start of a server's byte stream, fed in any chunking.

    ``feed`` returns :data:`NEED_MORE` until it can decide, then the decision (and the same decision for any
    later call). ``feed_eof`` turns an undecided stream into :class:`NotAmqp`. It never raises."""

    def __init__(self, max_frame: int = MAX_HANDSHAKE_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self.result: StartResult = NEED_MORE
        self.rest = b""  # bytes that followed a complete Connection.Start in what was fed

    def feed(self, data: bytes) -> StartResult:
        if not isinstance(self.result, NeedMore):
            return self.result
        self._buf += data
        if self._buf:
            self.result = _start_or_not(self._buf, self._max)
            if isinstance(self.result, Start):
                self.rest = bytes(self._buf[self.result.frame_length :])
            if not isinstance(self.result, NeedMore):
                self._buf = bytearray()
        return self.result

    def feed_eof(self) -> Start | NotAmqp:
        if isinstance(self.result, NeedMore):
            n = len(self._buf)
            self.result = NotAmqp(
                "the server closed the connection without answering"
                if n == 0
                else f"the server closed the connection after {n} bytes, before a complete Connection.Start"
            )
            self._buf = bytearray()
        return self.result


# --- encoders ---------------------------------------------------------------------------------------------


def _shortstr(s: str, what: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 255:
        raise AmqpWireError(f"{what} is {len(b)} bytes; an AMQP short string holds at most 255")
    return bytes([len(b)]) + b


def _longstr(b: bytes) -> bytes:
    return struct.pack("!I", len(b)) + b


def _encode_value(v: FieldValue, what: str) -> bytes:
    if isinstance(v, bool):
        return b"t" + bytes([v])
    if isinstance(v, int):
        if -(2**31) <= v < 2**31:
            return b"I" + struct.pack("!i", v)
        if -(2**63) <= v < 2**63:
            return b"l" + struct.pack("!q", v)
        raise AmqpWireError(f"{what}: integer {v} does not fit 64 bits")
    if isinstance(v, str):
        return b"S" + _longstr(v.encode("utf-8"))
    if isinstance(v, bytes):
        return b"x" + _longstr(v)
    if isinstance(v, Mapping):
        return b"F" + encode_table(v)
    raise AmqpWireError(f"{what}: cannot encode {type(v).__name__} in a field table")


def encode_table(t: Mapping[str, FieldValue]) -> bytes:
    """A field table (str, bytes, bool, int and nested mappings)."""
    body = b"".join(
        _shortstr(k, f"table key {k[:20]!r}") + _encode_value(v, f"table key {k!r}") for k, v in t.items()
    )
    return _longstr(body)


def method_frame(class_id: int, method_id: int, args: bytes = b"", channel: int = 0) -> bytes:
    payload = struct.pack("!HH", class_id, method_id) + args
    return struct.pack("!BHI", FRAME_METHOD, channel, len(payload)) + payload + bytes([FRAME_END])


@dataclass(frozen=True, slots=True)
class Credentials:
    """The probe user (PLAIN). Checked when built, so a bad configuration fails at load time, naming the
    field, and never in the middle of a probe."""

    user: str
    password: str = field(repr=False)
    vhost: str = "/"

    def __post_init__(self) -> None:
        for name, value in (("user", self.user), ("password", self.password)):
            if "\0" in value:
                raise AmqpWireError(f"{name}: PLAIN credentials cannot contain NUL")
        for name, value in (("user", self.user), ("vhost", self.vhost)):
            if len(value.encode("utf-8")) > 255:
                raise AmqpWireError(f"{name}: longer than 255 bytes (an AMQP short string)")


DEFAULT_CLIENT_PROPERTIES: Final[Mapping[str, FieldValue]] = {
    "product": "tcplb",
    "connection_name": "tcplb health check",
}


def start_ok(
    user: str,
    password: str,
    *,
    client_properties: Mapping[str, FieldValue] = DEFAULT_CLIENT_PROPERTIES,
    locale: str = "en_US",
) -> bytes:
    """Connection.Start-Ok with the PLAIN mechanism (response ``\\0user\\0password``)."""
    if "\0" in user or "\0" in password:
        raise AmqpWireError("PLAIN credentials cannot contain NUL")
    response = b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
    args = encode_table(client_properties) + _shortstr("PLAIN", "mechanism") + _longstr(response)
    return method_frame(CONNECTION_CLASS, START_OK, args + _shortstr(locale, "locale"))


def tune_ok(channel_max: int, frame_max: int, heartbeat: int = 0) -> bytes:
    """Connection.Tune-Ok. A probe echoes the server's channel-max and frame-max and asks heartbeat 0."""
    if not (0 <= channel_max <= 0xFFFF and 0 <= frame_max <= 0xFFFFFFFF and 0 <= heartbeat <= 0xFFFF):
        raise AmqpWireError(f"tune values out of range: {channel_max}, {frame_max}, {heartbeat}")
    return method_frame(CONNECTION_CLASS, TUNE_OK, struct.pack("!HIH", channel_max, frame_max, heartbeat))


def connection_open(vhost: str = "/") -> bytes:
    """Connection.Open of ``vhost`` (capabilities empty, insist 0: both reserved in 0-9-1)."""
    return method_frame(CONNECTION_CLASS, OPEN, _shortstr(vhost, "vhost") + b"\x00\x00")


def close(code: int = REPLY_SUCCESS, text: str = "", class_id: int = 0, method_id: int = 0) -> bytes:
    """Connection.Close; a probe sends 200 with an empty text."""
    if not 0 <= code <= 0xFFFF:
        raise AmqpWireError(f"reply code {code} out of range")
    args = struct.pack("!H", code) + _shortstr(text, "reply text") + struct.pack("!HH", class_id, method_id)
    return method_frame(CONNECTION_CLASS, CLOSE, args)


def close_ok() -> bytes:
    return method_frame(CONNECTION_CLASS, CLOSE_OK)


# --- the probe machine ------------------------------------------------------------------------------------


class Phase(Enum):
    START = "waiting for Connection.Start"
    TUNE = "waiting for Connection.Tune"
    OPEN_OK = "waiting for Connection.Open-Ok"
    CLOSE_OK = "waiting for Connection.Close-Ok"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """How a probe ended. ``ok``: the broker answered AMQP as expected. ``clean``: the exchange was the full
    handshake and close, which leaves nothing above info in the broker's log (only then).
    ``close_code``/``close_text``: the broker closed the connection itself (e.g. 403 for bad credentials,
    which it logs as an error): it is alive, but refused the probe; the probe answered Close-Ok."""

    ok: bool
    reason: str
    clean: bool
    start: Start | None = None
    close_code: int | None = None
    close_text: str | None = None


@dataclass(frozen=True, slots=True)
class ProbeStep:
    send: bytes = b""  # bytes to write now
    outcome: ProbeOutcome | None = None  # set when the probe is over: then close the socket (FIN)


class Probe:
    """The clean check exchange as a sans-IO machine: write :meth:`start`, then :meth:`feed` each chunk
    received and write ``step.send``; when ``step.outcome`` is set, close the socket normally. EOF goes to
    :meth:`feed_eof`. Never raises on received bytes."""

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self.phase = Phase.START
        self._frames = FrameReader()
        self._start_reader = StartReader()
        self.start_frame: Start | None = None
        self.outcome: ProbeOutcome | None = None

    def start(self) -> bytes:
        return PROTOCOL_HEADER

    def _end(self, outcome: ProbeOutcome, send: bytes = b"") -> ProbeStep:
        self.phase = Phase.DONE
        self.outcome = outcome
        return ProbeStep(send, outcome)

    def _finish(self, outcome: ProbeOutcome) -> ProbeOutcome:
        self.phase = Phase.DONE
        self.outcome = outcome
        return outcome

    def feed(self, data: bytes) -> ProbeStep:
        if self.outcome is not None:
            return ProbeStep(b"", self.outcome)
        if self.phase is Phase.START:
            r = self._start_reader.feed(data)
            if isinstance(r, NeedMore):
                return ProbeStep()
            if isinstance(r, NotAmqp):
                return self._end(ProbeOutcome(False, r.reason, clean=False))
            self.start_frame = r
            if self.credentials is None:
                return self._end(ProbeOutcome(True, r.describe(), clean=False, start=r))
            if "PLAIN" not in r.mechanisms:
                return self._end(
                    ProbeOutcome(False, f"the broker offers no PLAIN mechanism ({r.mechanisms})", False, r)
                )
            self.phase = Phase.TUNE
            c = self.credentials
            sent = start_ok(c.user, c.password)
            if not self._start_reader.rest:
                return ProbeStep(sent)
            # bytes after Start in the same chunk (never from a real broker, which waits for Start-Ok)
            later = self._after_start(self._start_reader.rest)
            return ProbeStep(sent + later.send, later.outcome)
        return self._after_start(data)

    def _after_start(self, data: bytes) -> ProbeStep:
        got = self._frames.feed(data)
        if isinstance(got, NotAmqp):
            return self._end(self._fail(f"after Connection.Start: {got.reason}"))
        out = bytearray()
        for f in got:
            step = self._frame(f)
            out += step.send
            if step.outcome is not None:
                return self._end(step.outcome, bytes(out))
        return ProbeStep(bytes(out))

    def _fail(
        self, reason: str, close_code: int | None = None, close_text: str | None = None
    ) -> ProbeOutcome:
        return ProbeOutcome(
            False, f"{self.phase.value}: {reason}", False, self.start_frame, close_code, close_text
        )

    def _frame(self, f: Frame) -> ProbeStep:
        if f.type == FRAME_HEARTBEAT:
            return ProbeStep()
        m = f.method
        if f.channel != 0 or m is None or m[0] != CONNECTION_CLASS:
            return ProbeStep(outcome=self._fail(f"unexpected {_describe_frame(f)}"))
        c = _Cursor(f.payload, 4)
        try:
            if m[1] == CLOSE:
                code, text = c.short(), c.shortstr()
                return ProbeStep(
                    close_ok(),
                    self._fail(
                        f"the broker closed the connection: {code} {text}",
                        close_code=code,
                        close_text=text,
                    ),
                )
            if m[1] in (BLOCKED, UNBLOCKED):
                return ProbeStep()
            if self.phase is Phase.TUNE and m[1] == TUNE:
                channel_max, frame_max = c.short(), c.long()
                self.phase = Phase.OPEN_OK
                vhost = self.credentials.vhost if self.credentials else "/"
                return ProbeStep(tune_ok(channel_max, frame_max, 0) + connection_open(vhost))
            if self.phase is Phase.OPEN_OK and m[1] == OPEN_OK:
                self.phase = Phase.CLOSE_OK
                return ProbeStep(close())
            if self.phase is Phase.CLOSE_OK and m[1] == CLOSE_OK:
                start = self.start_frame
                return ProbeStep(
                    outcome=ProbeOutcome(True, start.describe() if start else "Connection.Start", True, start)
                )
            if m[1] == SECURE:
                return ProbeStep(
                    outcome=self._fail("the broker sent Connection.Secure (a challenge); PLAIN only")
                )
        except _Bad as e:
            return ProbeStep(outcome=self._fail(f"bad method arguments: {e}"))
        return ProbeStep(outcome=self._fail(f"unexpected {_describe_frame(f)}"))

    def feed_eof(self) -> ProbeOutcome:
        if self.outcome is not None:
            return self.outcome
        if self.phase is Phase.START:
            r = self._start_reader.feed_eof()
            reason = r.reason if isinstance(r, NotAmqp) else "the server closed the connection"
            return self._finish(ProbeOutcome(False, reason, clean=False))
        return self._finish(self._fail("the broker closed the TCP connection"))
