"""The keepalived.conf and haproxy.cfg readers: grammar facts (keepalived 2.2.7 lib/parser.c, HAProxy's
manual section 2) and, under Hypothesis, that they raise nothing but their own error type, with a line number,
on arbitrary input; and that whatever the importers write from what the readers return passes --check."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmqfd import haconf, kaconf
from tcplb import importer as tcplb_importer
from vrrpd import importer as vrrpd_importer


def words(text: str, **kw: object) -> list[tuple[str, ...]]:
    doc = kaconf.parse_text(text, "k.conf", config_id="lbA", includes=False, **kw)  # type: ignore[arg-type]
    return [s.words for s in kaconf.walk(doc.stmts)]


# ------------------------------------------------------------------------------------------- keepalived


def test_comments_anywhere_outside_double_quotes() -> None:
    assert words("auth_pass abc#123\nx y!z\n") == [("auth_pass", "abc"), ("x", "y")]
    assert words('script "a # b" ! c\n') == [("script", "a # b")]
    assert words("auth_pass abc\\#1\\!2\n") == [("auth_pass", "abc#1!2")]
    assert words("x 'a # b'\n") == [("x", "'a")]  # single quotes do not protect from comments


def test_blocks_on_one_line_or_many_and_crlf() -> None:
    one = "vrrp_instance V { interface eth0 }\r\n"
    many = "vrrp_instance V\r\n{\r\n  interface eth0\r\n}\r\n"
    for text in (one, many):
        doc = kaconf.parse_text(text, "k.conf", includes=False)
        (v,) = doc.stmts
        assert v.words == ("vrrp_instance", "V") and [c.words for c in v.children()] == [
            ("interface", "eth0")
        ]
    assert words('a "x { y }" {\nb\n}\n') == [("a", "x { y }"), ("b",)]


def test_definitions_and_expansion() -> None:
    assert words("$A=1\nx $A ${A} $AB $A,\n") == [("x", "1", "1", "$AB", "1,")]
    assert words("$A=$B\n$B=2\nx $A\n") == [("x", "2")]  # expanded again while a known name is left
    assert words("$A = 1\nx $A\n") == [("$A", "=", "1"), ("x", "$A")]  # a blank before = is no definition
    assert words("$M=a \\\n  b \\\n  c\nblock {\n$M\n}\n") == [("block",), ("a",), ("b",), ("c",)]
    assert words("x $_HASH y\n") == [("x",)]  # $_HASH is "#" and the line is decommented again
    assert words("x $_INSTANCE\n") == [("x", "lbA")]
    with pytest.raises(kaconf.KaConfError) as e:
        words("$A=$A\nx $A\n")
    assert e.value.line == 2
    with pytest.raises(kaconf.KaConfError, match="_RANDOM"):
        words("x $_RANDOM\n")


def test_conditional_lines() -> None:
    assert words("@lbA a\n@lbB b\n@^lbA c\n@^lbB d\n@lbA\n") == [("a",), ("d",)]
    doc = kaconf.parse_text("@lbB b\n", "k.conf", config_id="lbA", includes=False)
    assert [n.where for n in doc.notes] == ["k.conf:1"]


def test_include_globs_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.conf").write_text("b 1\ninclude ../c.{x,y}\n")
    (tmp_path / "d" / "a.conf").write_text("a 1\n")
    (tmp_path / "c.x").write_text("cx\n")
    (tmp_path / "c.y").write_text("cy\n")
    (tmp_path / "main.conf").write_text("m\ninclude d/*.conf\ninclude nothing*.conf\nz\n")
    doc = kaconf.parse_file(str(tmp_path / "main.conf"), config_id="x")
    got = [(s.words[0], Path(s.file).name, s.line) for s in doc.stmts]
    assert got == [
        ("m", "main.conf", 1),
        ("a", "a.conf", 1),
        ("b", "b.conf", 1),
        ("cx", "c.x", 1),
        ("cy", "c.y", 1),
        ("z", "main.conf", 4),
    ]
    assert any("no file matched" in n.message for n in doc.notes)
    (tmp_path / "loop.conf").write_text("include loop.conf\n")
    with pytest.raises(kaconf.KaConfError, match="nested deeper"):
        kaconf.parse_file(str(tmp_path / "loop.conf"))


def test_structure_errors_name_their_line() -> None:
    for text, line in (("a {\nb\n", 1), ("a\n}\n", 2), ("{\n", 1), ('x "abc\n', 1), ("~SEQ(i,1,3)\n", 1)):
        with pytest.raises(kaconf.KaConfError) as e:
            words(text)
        assert e.value.line == line, text


def test_split_command_quotes_and_escapes() -> None:
    assert kaconf.split_command(r"""/bin/x 'a b' "c\"d" e\x41 \101 f\ g""") == [
        "/bin/x",
        "a b",
        'c"d',
        "eA",
        "A",
        "f g",
    ]
    with pytest.raises(kaconf.KaConfError):
        kaconf.split_command("/bin/x 'open")


# ------------------------------------------------------------------------------------------- HAProxy


def test_haproxy_words() -> None:
    doc = haconf.parse_text(
        "global\n  log /dev/log local0 # comment\nlisten a\n  stats realm HAProxy\\ Stats\n"
        "  server 'x y' \"192.0.2.1\":80 # c\n  option httpchk GET / HTTP/1.0\\r\\nHost:\\ h\n"
        "  acl a hdr(host) -i \"${HOSTNAME}x\" '$HOME'\n",
        "h.cfg",
        environ={"HOSTNAME": "n1"},
    )
    g, li = doc.sections
    assert g.lines[0].words == ("log", "/dev/log", "local0")
    assert [ln.words for ln in li.lines] == [
        ("stats", "realm", "HAProxy Stats"),
        ("server", "x y", "192.0.2.1:80"),
        ("option", "httpchk", "GET", "/", "HTTP/1.0\r\nHost: h"),
        ("acl", "a", "hdr(host)", "-i", "n1x", "$HOME"),
    ]
    assert doc.env_used == [("h.cfg", 7, "HOSTNAME")]


def test_haproxy_errors_name_their_line() -> None:
    for text, line in (
        ("maxconn 1\n", 1),
        ("global\n x 'a\n", 2),
        ("global\n.if defined(X)\n", 2),
        ("global\n x \\\n", 2),
    ):
        with pytest.raises(haconf.HaConfError) as e:
            haconf.parse_text(text, "h.cfg")
        assert e.value.line == line, text


# ------------------------------------------------------------------------------------------- shared


def test_both_readers_share_lines_crlf_and_line_numbers() -> None:
    from rmqfd import cfgfile

    class E(cfgfile.ReadError):
        pass

    assert list(cfgfile.lines("a\r\nb\r\r\n\nc", "f", E)) == [(1, "a"), (2, "b"), (3, ""), (4, "c")]
    long = "x" * (cfgfile.MAX_LINE + 1)
    with pytest.raises(E) as e:
        list(cfgfile.lines(f"a\n{long}\n", "f", E))
    assert (e.value.file, e.value.line, str(e.value)) == ("f", 2, "f:2: line too long")
    # the readers raise their own error type (a ReadError) at the same line
    for parse, err in (
        (lambda t: haconf.parse_text(t, "f"), haconf.HaConfError),
        (lambda t: kaconf.parse_text(t, "f", includes=False), kaconf.KaConfError),
    ):
        with pytest.raises(err) as e2:
            parse(f"global\r\n{long}\n")
        assert isinstance(e2.value, cfgfile.ReadError) and str(e2.value) == "f:2: line too long"


def test_both_readers_share_file_reading(tmp_path: Path) -> None:
    from rmqfd import cfgfile

    (tmp_path / "x.cfg").write_bytes(b"global\r\n  log \xff\r\n")
    assert cfgfile.read_file(str(tmp_path / "x.cfg"), cfgfile.ReadError) == "global\r\n  log \ufffd\r\n"
    missing = str(tmp_path / "none.cfg")
    with pytest.raises(haconf.HaConfError) as h:
        haconf.parse_file(missing)
    assert (h.value.file, h.value.line) == (missing, 0) and str(h.value).endswith(
        "none.cfg: cannot read: No such file or directory"
    )
    (tmp_path / "none.cfg").mkdir()
    with pytest.raises(kaconf.KaConfError) as k:
        kaconf.parse_file(missing)
    assert str(k.value) == f"{missing}: cannot read: Is a directory"
    with pytest.raises(kaconf.KaConfError) as k:
        cfgfile.read_file(missing, kaconf.KaConfError, where=("main.conf", 3), what=f"include {missing}: ")
    assert str(k.value) == f"main.conf:3: include {missing}: cannot read: Is a directory"


# ------------------------------------------------------------------------------------------- Hypothesis

KA_TOKENS = [
    "{",
    "}",
    '"',
    "'",
    "!",
    "#",
    "$",
    "@",
    "@^",
    "\\",
    "~",
    " ",
    "\t",
    "\r",
    "\n",
    "\n",
    "\n",
    "=",
    ",",
    ")",
    "$A=",
    "$B=",
    "$A",
    "${A}",
    "$B",
    "@lbA ",
    "@^lbA ",
    "include ",
    "~SEQ",
    "x",
    "1",
    "300",
    "eth0",
    "vrrp_instance ",
    "vrrp_script ",
    "virtual_server ",
    "real_server ",
    "TCP_CHECK",
    "HTTP_GET",
    "url",
    "path",
    "interface ",
    "virtual_router_id ",
    "priority ",
    "state ",
    "MASTER",
    "BACKUP",
    "virtual_ipaddress ",
    "192.0.2.1",
    "192.0.2.1/24",
    " 80",
    " dev ",
    " label ",
    "eth0:v",
    "track_script ",
    "weight ",
    "-20",
    "script ",
    "interval ",
    "auth_pass ",
    "authentication ",
    "auth_type ",
    "PASS",
    "nopreempt",
    "unicast_peer ",
    "notify_master ",
    "global_defs ",
    "router_id ",
    "lb_algo ",
    "rr",
    "lb_kind ",
    "DR",
    "delay_loop ",
    "retry ",
    "connect_timeout ",
    "sorry_server ",
    "persistence_timeout ",
    "é",
    "\x00",
    "\x0b",
]
HA_TOKENS = [
    "global\n",
    "defaults\n",
    "listen ",
    "frontend ",
    "backend ",
    "\n",
    "\n",
    " ",
    "\t",
    "#",
    '"',
    "'",
    "\\",
    "\\x4",
    "\\x41",
    "$",
    "${X}",
    "\r",
    "bind ",
    ":5672",
    "192.0.2.1",
    ":80",
    "server ",
    "s1 ",
    " check",
    " inter ",
    "2000",
    "1s",
    " rise ",
    " fall ",
    " weight ",
    "300",
    "balance ",
    "roundrobin",
    "source",
    "leastconn",
    "mode ",
    "http",
    "tcp",
    "timeout ",
    "connect ",
    "client ",
    "server ",
    "contimeout ",
    "option ",
    "httpchk",
    "tcpka",
    "redispatch",
    "stats ",
    "enable",
    "uri ",
    "/x",
    "auth ",
    "a:b",
    "default_backend ",
    "use_backend ",
    "b",
    "a",
    "if ",
    "x",
    "maxconn ",
    "10",
    "log ",
    "/dev/log",
    "no ",
    "default-server ",
    " backup",
    " port ",
    ".if",
    "é",
    "\x00",
]


def text_from(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(tokens), st.text(max_size=3)), max_size=80).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_from(KA_TOKENS))
def test_keepalived_reader_raises_only_its_error_and_output_passes_check(text: str) -> None:
    try:
        doc = kaconf.parse_text(text, "k.conf", config_id="lbA", includes=False)
    except kaconf.KaConfError as e:
        assert e.file == "k.conf" and 1 <= e.line <= text.count("\n") + 1
        return
    for s in kaconf.walk(doc.stmts):
        assert 1 <= s.line <= text.count("\n") + 1 and s.words
    out, rep = vrrpd_importer.convert(doc)
    if out is not None:
        assert vrrpd_importer.check_text(out) == [], out
    else:
        assert rep.errors
    out, rep = tcplb_importer.convert_lvs(doc)
    if out is not None:
        assert tcplb_importer.check_text(out) == [], out
    else:
        assert rep.errors


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_from(HA_TOKENS))
def test_haproxy_reader_raises_only_its_error_and_output_passes_check(text: str) -> None:
    try:
        doc = haconf.parse_text(text, "h.cfg", environ={"X": "1"})
    except haconf.HaConfError as e:
        assert e.file == "h.cfg" and 1 <= e.line <= text.count("\n") + 1
        return
    out, rep = tcplb_importer.convert_haproxy(doc)
    if out is not None:
        assert tcplb_importer.check_text(out) == [], out
    else:
        assert rep.errors


HA_KEYWORDS = [
    "bind",
    "server",
    "balance",
    "mode",
    "timeout",
    "option",
    "no option",
    "default-server",
    "maxconn",
    "retries",
    "log",
    "stats",
    "default_backend",
    "use_backend",
    "contimeout",
    "clitimeout",
    "hash-type",
    "source",
    "backlog",
    "tcp-check",
    "http-check",
    "acl",
    "nbproc",
    "spread-checks",
    "hard-stop-after",
]
HA_ARGS = [
    "192.0.2.1:5672",
    ":5672",
    "*:80",
    "192.0.2.2",
    "s1",
    "s2",
    "check",
    "inter",
    "2s",
    "500",
    "rise",
    "fall",
    "3",
    "weight",
    "0",
    "backup",
    "disabled",
    "port",
    "15672",
    "roundrobin",
    "source",
    "leastconn",
    "static-rr",
    "tcp",
    "http",
    "connect",
    "client",
    "server",
    "check",
    "queue",
    "tunnel",
    "httpchk",
    "GET",
    "/h",
    "tcpka",
    "redispatch",
    "tcplog",
    "dontlognull",
    "observe",
    "layer4",
    "on-error",
    "mark-down",
    "enable",
    "uri",
    "/st",
    "auth",
    "u:p",
    "admin",
    "if",
    "TRUE",
    "global",
    "b1",
    "consistent",
    "expect",
    "status",
    "200",
    "maxconn",
    "10",
    "-1",
    "addr",
    "192.0.2.3",
    "name",
    "ssl",
    "send-proxy",
    "0",
]
HA_HEADERS = [
    "global",
    "defaults",
    "listen l1",
    "listen l2 192.0.2.9:5672",
    "frontend f1",
    "backend b1",
    "backend b2",
    "frontend f2",
]


@st.composite
def ha_config(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.sampled_from(HA_HEADERS)))
        else:
            kw = draw(st.sampled_from(HA_KEYWORDS))
            args = draw(st.lists(st.sampled_from(HA_ARGS), max_size=6))
            lines.append("    " + " ".join([kw, *args]))
    return "\n".join(lines) + "\n"


KA_KEYWORDS = [
    "state",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_int",
    "nopreempt",
    "preempt_delay",
    "auth_pass",
    "auth_type",
    "mcast_src_ip",
    "unicast_src_ip",
    "garp_master_delay",
    "garp_master_repeat",
    "notify_master",
    "notify",
    "script",
    "interval",
    "timeout",
    "weight",
    "rise",
    "fall",
    "user",
    "router_id",
    "script_user",
    "enable_script_security",
    "lb_algo",
    "lb_kind",
    "delay_loop",
    "retry",
    "nb_get_retry",
    "connect_timeout",
    "delay_before_retry",
    "connect_port",
    "persistence_timeout",
    "protocol",
    "sorry_server",
    "path",
    "status_code",
    "use_vmac",
    "track_interface",
    "alpha",
]
KA_BLOCKS = [
    "vrrp_instance VI_1",
    "vrrp_instance VI_2",
    "vrrp_script chk",
    "global_defs",
    "virtual_ipaddress",
    "track_script",
    "unicast_peer",
    "authentication",
    "virtual_server 192.0.2.9 5672",
    "real_server 192.0.2.11 5672",
    "TCP_CHECK",
    "HTTP_GET",
    "url",
    "vrrp_sync_group G",
    "track_interface",
]
KA_ARGS = [
    "MASTER",
    "BACKUP",
    "eth0",
    "eth1",
    "51",
    "0",
    "255",
    "300",
    "1",
    "2",
    "-20",
    "PASS",
    "AH",
    "secret",
    "averylongpassword",
    "192.0.2.100/24",
    "192.0.2.21",
    "dev",
    "label",
    "eth0:v",
    "chk",
    "weight",
    '"/bin/true"',
    '"/bin/x a | b"',
    "rr",
    "wrr",
    "lc",
    "sh",
    "DR",
    "NAT",
    "TCP",
    "UDP",
    "/",
    "200",
    "x",
    "reverse",
    "192.0.2.12 5672",
    "1.5",
]


def ka_block(depth: int) -> st.SearchStrategy[str]:
    line = st.builds(
        lambda k, a: " ".join([k, *a]),
        st.sampled_from(KA_KEYWORDS),
        st.lists(st.sampled_from(KA_ARGS), max_size=3),
    )
    if depth == 0:
        return line
    block = st.builds(
        lambda h, body, one: (
            f"{h} {{{' ' if one else chr(10)}{(' ' if one else chr(10)).join(body)}"
            f"{' ' if one else chr(10)}}}"
        ),
        st.sampled_from(KA_BLOCKS),
        st.lists(ka_block(depth - 1), max_size=6),
        st.booleans(),
    )
    return st.one_of(line, block, block)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ha_config())
def test_haproxy_structured_configs_import_to_valid_toml(text: str) -> None:
    test_haproxy_reader_raises_only_its_error_and_output_passes_check.hypothesis.inner_test(text)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ka_block(3), min_size=1, max_size=6).map("\n".join))
def test_keepalived_structured_configs_import_to_valid_toml(text: str) -> None:
    test_keepalived_reader_raises_only_its_error_and_output_passes_check.hypothesis.inner_test(text)  # type: ignore[attr-defined]


CORPUS = Path(__file__).parent / "corpus"
KA_FILES = sorted(p for d in ("keepalived", "lvs") for p in (CORPUS / d).glob("*.conf"))
HA_FILES = sorted((CORPUS / "haproxy").glob("*.cfg"))


@st.composite
def mutated(draw: st.DrawFn, files: list[Path], args: list[str], keywords: list[str]) -> str:
    """A corpus file with a few lines deleted, duplicated, or with a word replaced or a line added."""
    lines = draw(st.sampled_from(files)).read_text(encoding="utf-8").split("\n")
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            ws = lines[i].split(" ")
            ws[draw(st.integers(0, len(ws) - 1))] = draw(st.sampled_from(args))
            lines[i] = " ".join(ws)
        else:
            lines.insert(
                i,
                " ".join(
                    [draw(st.sampled_from(keywords)), *draw(st.lists(st.sampled_from(args), max_size=3))]
                ),
            )
        if not lines:
            lines = [""]
    return "\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(KA_FILES, KA_ARGS, KA_KEYWORDS))
def test_keepalived_mutated_corpus_imports_to_valid_toml(text: str) -> None:
    test_keepalived_reader_raises_only_its_error_and_output_passes_check.hypothesis.inner_test(text)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(HA_FILES, HA_ARGS, HA_KEYWORDS))
def test_haproxy_mutated_corpus_imports_to_valid_toml(text: str) -> None:
    test_haproxy_reader_raises_only_its_error_and_output_passes_check.hypothesis.inner_test(text)  # type: ignore[attr-defined]
