"""A reader of keepalived.conf as keepalived 2.2.7 reads it (lib/parser.c), for the importers.

Pure apart from reading the files named by ``include``: text in, a tree of :class:`Stmt` out. The only
exception it raises is :class:`KaConfError`, which names the file and line.

What it reproduces (facts from keepalived's parser, not its code):

* A line ends at LF; trailing CRs are dropped (CRLF files read as LF files). Empty lines are skipped.
* ``!`` and ``#`` start a comment anywhere outside double quotes (inside a word too: ``abc#1`` is ``abc``);
  ``\\!`` and ``\\#`` outside quotes stand for the characters themselves. Leading and trailing blanks go.
* ``@ID rest`` keeps ``rest`` only when ID is the configuration id (``keepalived -i``, default: the host
  name up to its first dot); ``@^ID rest`` only when it is not. A ``@`` line with nothing after ID is dropped.
* ``$NAME=value`` defines NAME (no blank before ``=``); a value ending in ``\\`` continues on the next lines.
  ``$NAME`` (followed by a blank, ``,``, ``)`` or the end of the line) and ``${NAME}`` are replaced, again
  and again while the line still holds a ``$`` that names a definition; the result is decommented again.
  A multi-line value is expanded only where ``$NAME`` ends the line: its first line replaces it, the
  others follow as lines of their own. Built in: ``$_PWD`` (the file's directory), ``$_INSTANCE`` (the
  configuration id), ``$_HASH`` (#), ``$_BANG`` (!); ``$_RANDOM`` is refused (an import must be repeatable).
* ``include PATTERN`` (also ``includer/includem/includew/includeb/includea``) reads every file matching the
  glob (with ``{a,b}`` braces), sorted, relative to the directory of the file holding the ``include``.
* ``{`` and ``}`` outside double quotes split a line, so blocks can sit on one line or on many.
* Words are separated by blanks; ``"..."`` is one word without its quotes (no escapes). A script's command
  line is re-read with quotes (single and double) and backslash escapes: :func:`split_command`.
* ``~SEQ`` and ``~LST`` (generated lines) are refused with an error naming the line.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from rmqfd import cfgfile

__all__ = [
    "Document",
    "KaConfError",
    "Note",
    "Stmt",
    "default_config_id",
    "parse_file",
    "parse_text",
    "split_command",
    "walk",
]

WHITE = " \t\f\n\r\v"
MAX_INCLUDE_DEPTH = 32
MAX_EXPANSIONS = 64
MAX_LINE = cfgfile.MAX_LINE


class KaConfError(cfgfile.ReadError):
    """A keepalived.conf that cannot be read: ``file:line: message``."""


@dataclass(frozen=True, slots=True)
class Note(cfgfile.At):
    """Something the reader dropped on purpose (a conditional line for another host, an empty include)."""

    file: str
    line: int
    message: str


@dataclass(slots=True)
class Stmt(cfgfile.Words):
    """One keyword line, with its block (``None``: no ``{ }`` followed it)."""

    words: tuple[str, ...]
    file: str
    line: int
    raw: str  # the line after comments, conditions and definitions, before brace splitting
    block: list[Stmt] | None = None

    def children(self) -> list[Stmt]:
        return self.block or []


@dataclass(slots=True)
class Document:
    stmts: list[Stmt]
    notes: list[Note] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def default_config_id() -> str:
    """keepalived's default configuration id: the host name up to its first dot."""
    return socket.gethostname().split(".", 1)[0]


# ------------------------------------------------------------------------------------------ lexical


def decomment(s: str) -> tuple[str, bool]:
    """keepalived's decomment(): drop the comment, unescape ``\\#``/``\\!`` outside quotes, strip blanks.

    Returns ``(text, continued)``; ``continued`` when the line ended in a lone ``\\`` (kept at the end)."""
    s = s.lstrip(" \t")
    out: list[str] = []
    quote = False
    cont = False
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            quote = not quote
            out.append(c)
            i += 1
            continue
        if c == "\\":
            if i + 1 < n:
                if not quote and s[i + 1] in "#!":
                    out.append(s[i + 1])
                else:
                    out.append(s[i : i + 2])
                i += 2
                continue
            cont = True
            break
        if not quote and c in "!#":
            break
        out.append(c)
        i += 1
    text = "".join(out).rstrip(" \t")
    if cont:
        text += "\\"
    return text, cont


def _skip_blanks(s: str, i: int) -> int:
    """The index of the first non-blank character of ``s`` from ``i`` on (``len(s)`` if none)."""
    while i < len(s) and s[i] in WHITE:
        i += 1
    return i


def split_words(line: str, file: str, lineno: int) -> list[str]:
    """keepalived's alloc_strvec(): blank-separated words, ``"..."`` one word without its quotes."""
    words: list[str] = []
    i, n = 0, len(line)
    while (i := _skip_blanks(line, i)) < n:
        if line[i] == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise KaConfError(f"unmatched quote: {line!r}", file, lineno)
            words.append(line[i + 1 : end])
            i = end + 1
        else:
            j = i
            while j < n and line[j] not in WHITE and line[j] != '"':
                j += 1
            words.append(line[i:j])
            i = j
    return words


_ESC = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def split_command(text: str, file: str = "keepalived.conf", line: int = 0) -> list[str]:
    """keepalived's alloc_strvec_quoted_escaped(): words with ``'...'``/``"..."`` quoting and backslash
    escapes (``\\n``, ``\\x41``, ``\\101``, ``\\cX``...). How a script or notify command becomes an argv."""
    words: list[str] = []
    i, n = 0, len(text)
    while (i := _skip_blanks(text, i)) < n:
        cur: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if c == "\\":
                i += 1
                if i >= n:
                    raise KaConfError(f"missing escaped character at the end of {text!r}", file, line)
                e = text[i]
                if e == "x" and i + 1 < n and text[i + 1] in "0123456789abcdefABCDEF":
                    i += 1
                    v = 0
                    while i < n and text[i] in "0123456789abcdefABCDEF":
                        v = ((v << 4) | int(text[i], 16)) & 0xFF
                        i += 1
                    cur.append(chr(v))
                elif e == "c" and i + 1 < n:
                    cur.append(chr(ord(text[i + 1]) & 0x1F))
                    i += 2
                elif "0" <= e <= "7":
                    v = 0
                    k = 0
                    while k < 3 and i < n and "0" <= text[i] <= "7":
                        v = (v << 3) + int(text[i])
                        i += 1
                        k += 1
                    cur.append(chr(v & 0xFF))
                else:
                    cur.append(_ESC.get(e, e))
                    i += 1
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    cur.append(c)
                i += 1
                continue
            if c in "\"'":
                quote = c
                i += 1
                continue
            if c in WHITE:
                break
            cur.append(c)
            i += 1
        if quote:
            raise KaConfError(f"missing terminating {quote} in {text!r}", file, line)
        words.append("".join(cur))
    return words


def _split_braces(line: str) -> list[str]:
    """Split at ``{`` and ``}`` outside double quotes; each brace is a line of its own."""
    parts: list[str] = []
    cur: list[str] = []
    quote = False
    for c in line:
        if c == '"':
            quote = not quote
            cur.append(c)
        elif not quote and c in "{}":
            parts.append("".join(cur))
            parts.append(c)
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip(" \t") for p in parts if p.strip(" \t")]


def _brace_expand(pattern: str) -> list[str]:
    """GLOB_BRACE: ``a{b,c}d`` -> ``abd``, ``acd`` (nested braces, first group outermost)."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth = 0
    parts: list[str] = []
    last = start + 1
    for i in range(start, len(pattern)):
        c = pattern[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                parts.append(pattern[last:i])
                head, tail = pattern[:start], pattern[i + 1 :]
                out: list[str] = []
                for p in parts:
                    out.extend(_brace_expand(head + p + tail))
                return out
        elif c == "," and depth == 1:
            parts.append(pattern[last:i])
            last = i + 1
    return [pattern]


_INCLUDE_RE = re.compile(r"^include[rmwba]?[ \t\f\n\r\v]")
_DEF_RE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


@dataclass(slots=True)
class _Def:
    value: str
    multiline: bool = False


@dataclass(slots=True)
class _Item:
    text: str
    file: str
    line: int
    decommented: bool


class _Reader:
    def __init__(self, config_id: str, includes: bool) -> None:
        self.config_id = config_id
        self.includes = includes
        self.defs: dict[str, _Def] = {}
        self.notes: list[Note] = []
        self.files: list[str] = []
        self.lines: list[tuple[str, str, int]] = []  # (logical line, file, line)
        self.depth = 0

    # --- files
    def read_path(self, path: str, where: tuple[str, int] | None) -> None:
        text = cfgfile.read_file(path, KaConfError, where=where, what=f"include {path}: " if where else "")
        self.read_text(text, path, os.path.dirname(os.path.abspath(path)))

    def read_text(self, text: str, name: str, base_dir: str) -> None:
        self.depth += 1
        if self.depth > MAX_INCLUDE_DEPTH:
            raise KaConfError(f"includes nested deeper than {MAX_INCLUDE_DEPTH} (an include loop?)", name, 0)
        self.files.append(name)
        pending: list[_Item] = []
        multi: _Def | None = None
        for lineno, phys in cfgfile.lines(text, name, KaConfError):
            if not phys:
                if multi is not None:
                    multi = None
                continue
            buf, cont = decomment(phys)
            if multi is not None:
                if cont:
                    seg = buf[:-1].rstrip(" \t")
                    if seg:
                        multi.value += seg + "\n"
                else:
                    multi.value += buf
                    multi = None
                continue
            if not buf:
                continue
            pending.append(_Item(buf, name, lineno, True))
            while pending:
                item = pending.pop(0)
                started = self._process(item, base_dir, pending)
                if started is not None:
                    multi = started
        self.depth -= 1

    # --- one logical line
    def _process(self, item: _Item, base_dir: str, pending: list[_Item]) -> _Def | None:
        buf = item.text
        file, line = item.file, item.line
        rounds = 0
        while True:
            rounds += 1
            if rounds > MAX_EXPANSIONS:
                raise KaConfError(
                    "definitions expand without end (a definition that names itself?)", file, line
                )
            if buf.startswith("@"):
                rev = buf.startswith("@^")
                ofs = 2 if rev else 1
                m = re.search(r"[ \t]", buf[ofs:])
                if m is None:
                    self.notes.append(Note(file, line, "conditional line with nothing after its id: dropped"))
                    return None
                ident = buf[ofs : ofs + m.start()]
                if (ident == self.config_id) == rev:
                    self.notes.append(
                        Note(
                            file,
                            line,
                            f"conditional line for config id {'not ' if rev else ''}{ident!r} "
                            f"skipped (this config id: {self.config_id!r}; see --config-id)",
                        )
                    )
                    return None
                buf = buf[ofs + m.end() :].lstrip(" \t")
            if buf.startswith("$"):
                md = _DEF_RE.match(buf)
                if md is not None:
                    name, value = md.group(1), md.group(2).lstrip(" \t")
                    if value.endswith("\\"):
                        d = _Def(value[:-1].rstrip(" \t"), multiline=True)
                        if d.value:
                            d.value += "\n"
                        self.defs[name] = d
                        return d
                    self.defs[name] = _Def(value)
                    return None
            if buf.startswith("~SEQ") or buf.startswith("~LST"):
                raise KaConfError(
                    f"{buf[:4]} (generated lines) is not supported by the importer: expand it by hand",
                    file,
                    line,
                )
            if buf.startswith("~") or "$" not in buf:
                break
            new, extra = self._expand(buf, base_dir, file, line)
            if new is None:
                break
            for k, text in enumerate(extra):
                pending.insert(k, _Item(text, file, line, False))
            buf, _ = decomment(new)
            if not (buf.startswith("@") or "$" in buf):
                break
        if not buf:
            return None
        if _INCLUDE_RE.match(buf):
            self._include(buf, base_dir, file, line)
            return None
        for part in _split_braces(buf):
            self.lines.append((part, file, line))
        return None

    def _lookup(self, s: str, i: int) -> tuple[str, _Def, int] | None:
        """The definition named at s[i] (just after a ``$``): (name, def, end index) or None."""
        braces = i < len(s) and s[i] == "{"
        j = i + 1 if braces else i
        if j >= len(s) or not (s[j].isalpha() or s[j] == "_") or not s[j].isascii():
            return None
        k = j + 1
        while k < len(s) and s[k].isascii() and (s[k].isalnum() or s[k] == "_"):
            k += 1
        name = s[j:k]
        if braces:
            if k >= len(s) or s[k] != "}":
                return None
            end = k + 1
        else:
            if k < len(s) and s[k] not in " \t,)":
                return None
            end = k
        d = self._builtin(name) if name.startswith("_") and name not in self.defs else self.defs.get(name)
        if d is None:
            return None
        if d.multiline and end != len(s):
            return None
        return name, d, end

    def _builtin(self, name: str) -> _Def | None:
        return {
            "_HASH": _Def("#"),
            "_BANG": _Def("!"),
            "_INSTANCE": _Def(self.config_id),
            "_PWD": _Def(self._pwd),
        }.get(name)

    _pwd = ""

    def _expand(self, s: str, base_dir: str, file: str, line: int) -> tuple[str | None, list[str]]:
        self._pwd = base_dir
        if re.search(r"\$\{?_RANDOM\b", s) and "_RANDOM" not in self.defs:
            raise KaConfError(
                "$_RANDOM is not supported by the importer (the result must be repeatable)", file, line
            )
        found = False
        extra: list[str] = []
        i = 0
        while True:
            i = s.find("$", i)
            if i < 0 or i + 1 >= len(s):
                break
            hit = self._lookup(s, i + 1)
            if hit is None:
                i += 1
                continue
            found = True
            _, d, end = hit
            if d.multiline:
                first, *rest = d.value.split("\n")
                s = s[:i] + first
                extra = [r for r in rest if r]
                break
            s = s[:i] + d.value + s[end:]
            if len(s) > MAX_LINE:
                raise KaConfError("definitions expand to a line that is too long", file, line)
            if d.value.lstrip(" \t").startswith("~"):
                break
            i += len(d.value)
        return (s if found else None), extra

    def _include(self, buf: str, base_dir: str, file: str, line: int) -> None:
        if not self.includes:
            raise KaConfError("include is not allowed here", file, line)
        pattern = buf[8 if buf[7] in WHITE else 9 :].lstrip(" \t")
        if not pattern:
            raise KaConfError("include without a file name", file, line)
        matches: list[str] = []
        for p in _brace_expand(pattern):
            full = p if os.path.isabs(p) else os.path.join(base_dir, p)
            matches.extend(sorted(m for m in glob.glob(full) if os.path.isfile(m)))
        if not matches:
            self.notes.append(Note(file, line, f"include {pattern}: no file matched"))
        for m in matches:
            self.read_path(m, (file, line))


def _tree(lines: list[tuple[str, str, int]]) -> list[Stmt]:
    root: list[Stmt] = []
    stack: list[tuple[list[Stmt], Stmt | None]] = [(root, None)]
    for text, file, line in lines:
        cur = stack[-1][0]
        if text == "{":
            if not cur or cur[-1].block is not None:
                raise KaConfError("'{' without a keyword before it", file, line)
            cur[-1].block = []
            stack.append((cur[-1].block, cur[-1]))
            continue
        if text == "}":
            if len(stack) == 1:
                raise KaConfError("extra '}'", file, line)
            stack.pop()
            continue
        words = split_words(text, file, line)
        if words:
            cur.append(Stmt(tuple(words), file, line, text))
    if len(stack) > 1:
        opener = stack[-1][1]
        assert opener is not None
        raise KaConfError(
            f"block of '{opener.keyword}' is not closed (missing '}}')", opener.file, opener.line
        )
    return root


def parse_text(
    text: str,
    name: str = "keepalived.conf",
    *,
    config_id: str | None = None,
    base_dir: str | None = None,
    includes: bool = True,
) -> Document:
    """Read keepalived.conf text. ``includes=False``: an ``include`` line is an error (no file access)."""
    r = _Reader(default_config_id() if config_id is None else config_id, includes)
    r.read_text(text, name, base_dir if base_dir is not None else os.getcwd())
    return Document(_tree(r.lines), r.notes, r.files)


def parse_file(path: str, *, config_id: str | None = None) -> Document:
    """Read a keepalived.conf and everything it includes."""
    r = _Reader(default_config_id() if config_id is None else config_id, True)
    r.read_path(path, None)
    return Document(_tree(r.lines), r.notes, r.files)


def walk(stmts: list[Stmt]) -> Iterator[Stmt]:
    for s in stmts:
        yield s
        if s.block:
            yield from walk(s.block)
