"""A reader of haproxy.cfg as HAProxy reads it, for the importer: sections of keyword lines.

Pure: text in, :class:`Section` list out. The only exception it raises is :class:`HaConfError`, which names
the file and line.

What it reproduces (HAProxy's configuration manual, section 2):

* A line ends at LF (a trailing CR is dropped: CRLF files read as LF files); leading blanks are ignored.
* ``#`` outside quotes starts a comment, anywhere on the line.
* Words are separated by blanks. ``"..."`` and ``'...'`` quote (the quotes are dropped; several quoted
  and unquoted pieces touching each other make one word). A backslash escapes the next character outside
  single quotes: ``\\ `` ``\\#`` ``\\\\`` ``\\"`` ``\\'`` ``\\$`` are the characters, ``\\r`` ``\\n`` ``\\t``
  CR LF TAB, ``\\xHH`` a byte.
* Inside double quotes ``$NAME`` and ``${NAME}`` are environment variables, taken from ``environ`` (an
  unset one is empty, as in HAProxy; each use is listed in ``Document.env_used``).
* A line whose first word is a section keyword (``global``, ``defaults``, ``listen``, ``frontend``,
  ``backend``, ``userlist``, ``peers``, ``resolvers``, ``mailers``, ``program``, ``http-errors``, ``ring``,
  ``cache``) starts a section; lines before the first section are an error (HAProxy: "unknown keyword
  out of section").
* The conditional blocks of 2.4+ (``.if``/``.elif``/``.else``/``.endif``) and the ``.diag``-style
  directives are refused with an error naming the line (no old configuration has them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rmqfd import cfgfile

__all__ = ["SECTIONS", "Document", "HaConfError", "Line", "Section", "parse_file", "parse_text"]

SECTIONS = frozenset(
    {
        "global",
        "defaults",
        "listen",
        "frontend",
        "backend",
        "userlist",
        "peers",
        "resolvers",
        "mailers",
        "program",
        "http-errors",
        "ring",
        "cache",
    }
)
_ESC = {"r": "\r", "n": "\n", "t": "\t"}
MAX_LINE = cfgfile.MAX_LINE


class HaConfError(cfgfile.ReadError):
    """An haproxy.cfg that cannot be read: ``file:line: message``."""


@dataclass(frozen=True, slots=True)
class Line(cfgfile.Words):
    words: tuple[str, ...]
    file: str
    line: int


@dataclass(slots=True)
class Section(cfgfile.At):
    kind: str  # "global", "defaults", "listen", ...
    args: tuple[str, ...]  # the words after the section keyword (name, old-style address, "from X")
    file: str
    line: int
    lines: list[Line] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.args[0] if self.args else ""


@dataclass(slots=True)
class Document:
    sections: list[Section]
    env_used: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, variable)
    name: str = "haproxy.cfg"


def split_line(
    text: str, file: str, lineno: int, environ: Mapping[str, str], env_used: list[tuple[str, int, str]]
) -> list[str]:
    """One configuration line -> words (comments, quotes, escapes and variables handled)."""
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    quote = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                cur.append(c)
            i += 1
            continue
        if c == "\\":
            if i + 1 >= n:
                raise HaConfError("a backslash at the end of the line escapes nothing", file, lineno)
            e = text[i + 1]
            if e == "x":
                h = text[i + 2 : i + 4]
                if len(h) != 2 or any(ch not in "0123456789abcdefABCDEF" for ch in h):
                    raise HaConfError("\\x must be followed by two hexadecimal digits", file, lineno)
                cur.append(chr(int(h, 16)))
                i += 4
            else:
                cur.append(_ESC.get(e, e))
                i += 2
            in_word = True
            continue
        if quote == '"':
            if c == '"':
                quote = ""
                i += 1
                continue
            if c == "$":
                j = i + 1
                braces = j < n and text[j] == "{"
                if braces:
                    j += 1
                k = j
                while k < n and text[k].isascii() and (text[k].isalnum() or text[k] == "_"):
                    k += 1
                name = text[j:k]
                if name and (not braces or (k < n and text[k] == "}")):
                    env_used.append((file, lineno, name))
                    cur.append(environ.get(name, ""))
                    i = k + 1 if braces else k
                    continue
            cur.append(c)
            i += 1
            continue
        if c in "\"'":
            quote = c
            in_word = True
            i += 1
            continue
        if c == "#":
            break
        if c in " \t\f\v\r":
            if in_word:
                words.append("".join(cur))
                cur = []
                in_word = False
            i += 1
            continue
        cur.append(c)
        in_word = True
        i += 1
    if quote:
        raise HaConfError(f"unterminated {quote}quote{quote}", file, lineno)
    if in_word:
        words.append("".join(cur))
    return words


def parse_text(text: str, name: str = "haproxy.cfg", *, environ: Mapping[str, str] | None = None) -> Document:
    """Read haproxy.cfg text into its sections."""
    env: Mapping[str, str] = {} if environ is None else environ
    sections: list[Section] = []
    used: list[tuple[str, int, str]] = []
    for lineno, phys in cfgfile.lines(text, name, HaConfError):
        words = split_line(phys, name, lineno, env, used)
        if not words:
            continue
        kw = words[0]
        if kw.startswith(".") and kw in (
            ".if",
            ".elif",
            ".else",
            ".endif",
            ".diag",
            ".notice",
            ".warning",
            ".alert",
        ):
            raise HaConfError(
                f"{kw}: conditional blocks and directives (HAProxy 2.4+) are not supported by the importer",
                name,
                lineno,
            )
        if kw in SECTIONS:
            sections.append(Section(kw, tuple(words[1:]), name, lineno))
            continue
        if not sections:
            raise HaConfError(f"unknown keyword '{kw}' out of section", name, lineno)
        sections[-1].lines.append(Line(tuple(words), name, lineno))
    return Document(sections, used, name)


def parse_file(path: str, *, environ: Mapping[str, str] | None = None) -> Document:
    return parse_text(cfgfile.read_file(path, HaConfError), path, environ=environ)
