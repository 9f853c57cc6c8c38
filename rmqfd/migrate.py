"""What the importers share: the report of everything that did not carry over, and TOML writing.

Findings have four kinds:

* ``error``: a value the old daemon would refuse too (a priority of 300, a VRID of 0, an unknown
  ``balance``): nothing is written.
* ``unsupported``: a setting that changes behaviour and has no equivalent; the import exits non-zero
  unless ``--force`` (the consequence is part of the message).
* ``warning``: imported, with a difference the operator should know (a truncated ``auth_pass``, an old
  keyword and its modern name, a script that needs a shell).
* ``ignored``: dropped, harmless (mail settings, pid files, labels).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO, TypeVar

from rmqfd import cfgkit

__all__ = [
    "Entry",
    "Finding",
    "Report",
    "Rows",
    "Table",
    "check_with",
    "comment",
    "convert_with",
    "document",
    "finish",
    "import_file",
    "import_parser",
    "render",
    "toml_key",
    "toml_value",
]

Kind = Literal["error", "unsupported", "warning", "ignored"]
_ORDER = {"error": 0, "unsupported": 1, "warning": 2, "ignored": 3}


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # file:line
    kind: Kind
    message: str

    def line(self) -> str:
        return f"{self.where}: {self.kind}: {self.message}"


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, where: str, kind: Kind, message: str) -> None:
        f = Finding(where, kind, message)
        if f not in self.findings:
            self.findings.append(f)

    def error(self, where: str, message: str) -> None:
        self.add(where, "error", message)

    def unsupported(self, where: str, message: str) -> None:
        self.add(where, "unsupported", message)

    def warning(self, where: str, message: str) -> None:
        self.add(where, "warning", message)

    def ignored(self, where: str, message: str) -> None:
        self.add(where, "ignored", message)

    def of(self, kind: Kind) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def errors(self) -> list[Finding]:
        return self.of("error")

    @property
    def blocking(self) -> list[Finding]:
        return self.of("unsupported")

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]

    def header(self) -> list[str]:
        """The report as TOML comment lines for the top of the output."""
        out: list[str] = []
        for kind, title in (
            ("unsupported", "NOT imported, behaviour changes"),
            ("warning", "Imported with a difference"),
            ("ignored", "Ignored (harmless)"),
        ):
            items = self.of(kind)  # type: ignore[arg-type]
            if items:
                out.append(f"# {title}:")
                out.extend(f"#   {f.where}: {f.message}" for f in items)
        return out


@dataclass
class Entry:
    key: str
    value: Any
    where: str
    note: str = ""


@dataclass
class Table:
    """One TOML table of the output: ``header`` (``[global]``, ``[[vrrp_instance]]``), a comment line
    (``title``) and entries, each with the file:line it comes from."""

    header: str
    where: str
    title: str
    entries: list[Entry] = field(default_factory=list)

    def set(self, key: str, value: Any, where: str, note: str = "") -> None:
        for e in self.entries:
            if e.key == key:
                e.value, e.where, e.note = value, where, note
                return
        self.entries.append(Entry(key, value, where, note))

    def get(self, key: str) -> Any:
        for e in self.entries:
            if e.key == key:
                return e.value
        return None

    def drop(self, key: str) -> None:
        self.entries = [e for e in self.entries if e.key != key]

    def has(self, key: str) -> bool:
        return any(e.key == key for e in self.entries)


class Rows(list[tuple[Any, str]]):
    """An array written one element a line, each with the file:line it comes from."""


def render(tables: list[Table], head: list[str]) -> str:
    out = list(head)
    for t in tables:
        out.append("")
        if t.title:
            out.append(f"# {comment(t.title)}")
        out.append(t.header)
        for e in t.entries:
            note = f"{e.where}" + (f" {e.note}" if e.note else "")
            if isinstance(e.value, Rows):
                out.append(f"{toml_key(e.key) + ' = [':<40} # {comment(note)}")
                for v, where in e.value:
                    out.append(f"{'  ' + toml_value(v) + ',':<40} # {comment(where)}")
                out.append("]")
                continue
            line = f"{toml_key(e.key)} = {toml_value(e.value)}"
            out.append(f"{line:<40} # {comment(note)}")
    return "\n".join(out) + "\n"


def document(head: list[str], report: Report, tables: list[Table]) -> str:
    """An import's output: the ``head`` comment lines, then the report as comments (:meth:`Report.header`,
    after a ``#`` line; none when it is empty), then the tables."""
    lines = list(head)
    found = report.header()
    if found:
        lines += ["#", *found]
    return render(tables, lines)


def toml_value(v: Any) -> str:
    """A TOML literal: strings (basic, escaped), integers, floats, booleans, lists, inline tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, str):
        out = []
        for ch in v:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            elif 0xD800 <= ord(ch) <= 0xDFFF:
                out.append("\ufffd")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else toml_value(k)


def comment(text: str) -> str:
    """Text made safe for a TOML comment (one line, no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def finish(
    report: Report,
    text: str | None,
    *,
    output: str | None,
    force: bool,
    check: Callable[[str], Sequence[str]],
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print the report, validate and write the output; the exit status of an import command.

    0: written, nothing unsupported (or ``force``); 1: written, but unsupported settings (without ``force``);
    2: errors, nothing written. ``check(text)`` returns the target's own validation errors.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    for f in sorted(report.findings, key=lambda f: _ORDER[f.kind]):
        print(f.line(), file=err)
    if report.errors or text is None:
        print(f"import failed: {len(report.errors)} error(s); nothing written", file=err)
        return 2
    problems = list(check(text))
    if problems:
        for p in problems:
            print(f"output does not pass --check: {p}", file=err)
        print("import failed; nothing written", file=err)
        return 2
    if output is None or output == "-":
        out.write(text)
        out.flush()
    else:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            print(f"{output}: cannot write: {e.strerror or e}", file=err)
            return 2
        print(f"wrote {output}", file=err)
    n = len(report.blocking)
    if n and not force:
        print(
            f"{n} setting(s) that change behaviour could not be imported (listed above as unsupported): "
            "review them, then re-run with --force to accept",
            file=err,
        )
        return 1
    return 0


class Note(Protocol):
    """What a reader dropped on its own (``kaconf.Note``): reported as ignored."""

    @property
    def where(self) -> str: ...

    @property
    def message(self) -> str: ...


def convert_with(
    run: Callable[[Report], str | None], notes: Iterable[Note] = ()
) -> tuple[str | None, Report]:
    """A conversion with a new report: the reader's ``notes`` first (as ignored), then what ``run(report)``
    finds; returns ``run``'s text (None on errors) and the report."""
    rep = Report()
    for n in notes:
        rep.ignored(n.where, n.message)
    return run(rep), rep


def check_with(validate: Callable[[str], object], text: str) -> list[str]:
    """What the target's ``--check`` says about ``text``: ``validate(text)`` raises the daemon's
    :class:`rmqfd.cfgkit.ConfigError` (its lines) or :class:`tomllib.TOMLDecodeError`."""
    try:
        validate(text)
    except tomllib.TOMLDecodeError as e:
        return [f"invalid TOML: {e}"]
    except cfgkit.ConfigError as e:
        return e.lines()
    return []


def import_parser(
    prog: str,
    description: str,
    *,
    file_help: str,
    output_help: str,
    config_id_help: str,
    flags: Sequence[tuple[str, str]] = (),
) -> argparse.ArgumentParser:
    """The command line of an import command: FILE, ``-o/--output``, the store-true ``flags`` (name, help),
    ``--force``, ``-i/--config-id``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("file", help=file_help)
    p.add_argument("-o", "--output", help=output_help)
    for flag, help_ in flags:
        p.add_argument(flag, action="store_true", help=help_)
    p.add_argument(
        "--force",
        action="store_true",
        help="exit 0 even when settings that change behaviour could not be imported",
    )
    p.add_argument("-i", "--config-id", default=None, help=config_id_help)
    return p


D = TypeVar("D")


def import_file(
    parse: Callable[[], D],
    error: type[Exception],
    convert: Callable[[D], tuple[str | None, Report]],
    args: argparse.Namespace,
    check: Callable[[str], Sequence[str]],
) -> int:
    """Read the old daemon's file (``parse()``; its ``error`` is printed, exit 2), convert it and
    :func:`finish` as the command line (:func:`import_parser`'s ``args``) says: the exit status of an import
    command."""
    try:
        doc = parse()
    except error as e:
        print(e, file=sys.stderr)
        return 2
    text, rep = convert(doc)
    return finish(rep, text, output=args.output, force=args.force, check=check)
