"""What the readers of the old daemons' files (:mod:`rmqfd.haconf`, :mod:`rmqfd.kaconf`) share: the error
that names a file and line, reading a file, and splitting text into numbered physical lines.

* A file is read as bytes (at most 64 MiB) and decoded as UTF-8, undecodable bytes replaced.
* A line ends at LF; a trailing CR is dropped (CRLF files read as LF files); lines count from 1.
* A physical line longer than 1 MiB is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["MAX_FILE", "MAX_LINE", "At", "ReadError", "Words", "lines", "read_file"]

MAX_LINE = 1024 * 1024
MAX_FILE = 64 * 1024 * 1024


class At:
    """Mixin of what the readers return: ``file`` and ``line`` (set by the dataclass) as ``where``."""

    __slots__ = ()
    file: str
    line: int

    @property
    def where(self) -> str:
        """``file:line``, as findings and errors cite it."""
        return f"{self.file}:{self.line}"


class Words(At):
    """Mixin of a keyword line: ``words`` (set by the dataclass), its ``keyword``, the ``args`` after it."""

    __slots__ = ()
    words: tuple[str, ...]

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> tuple[str, ...]:
        return self.words[1:]


class ReadError(Exception):
    """A file that cannot be read: ``file:line: message`` (``file: message`` when the line is 0)."""

    def __init__(self, message: str, file: str, line: int) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


def read_file(
    path: str, error: type[ReadError], *, where: tuple[str, int] | None = None, what: str = ""
) -> str:
    """The text of ``path``. A file that cannot be opened raises ``error`` at ``where`` (the line that
    names it; default: the file itself, line 0), its message ``what`` + ``cannot read: REASON``."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE)
    except OSError as e:
        raise error(f"{what}cannot read: {e.strerror or e}", *(where or (path, 0))) from None
    return data.decode("utf-8", errors="replace")


def lines(text: str, name: str, error: type[ReadError]) -> Iterator[tuple[int, str]]:
    """(line number, line without its LF or trailing CRs) for each physical line of ``text``."""
    for lineno, phys in enumerate(text.split("\n"), start=1):
        if len(phys) > MAX_LINE:
            raise error("line too long", name, lineno)
        yield lineno, phys.rstrip("\r")
