"""One configuration toolkit for both daemons (vrrpd and tcplb): errors with key paths, table-driven
validation, unknown keys with suggestions, durations.

Pure and small (no I/O, no heavy imports: vrrpd keeps it loaded for the life of the daemon).

* A *validator* is a callable ``value -> parsed value`` that raises :class:`Bad` with the rule the value
  broke (and optionally a path suffix such as ``"[2]"`` for the bad element of a list).
* :func:`validate` runs a ``{key: validator}`` spec over one table and collects every problem into an
  :class:`Errors` as ``(key path, rule)``; an unknown key gets ``unknown key (did you mean "x"?)``.
* :class:`ConfigError` carries all problems of one file; both daemons raise it (vrrpd subclasses it to
  prefix each line with the file name, as its ``--check`` always did).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias

__all__ = [
    "DURATION_RULE",
    "Bad",
    "ConfigError",
    "Errors",
    "Validator",
    "format_duration",
    "join",
    "parse_duration",
    "suggest",
    "table",
    "unknown",
    "v_bool",
    "v_choice",
    "v_duration",
    "v_int",
    "v_str",
    "validate",
]


class ConfigError(Exception):
    """All problems found in one configuration: ``errors`` is a list of ``(key path, rule)``."""

    def __init__(self, errors: Iterable[tuple[str, str]], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(self.__str__())

    def lines(self) -> list[str]:
        """One line per error: ``key.path: rule`` (a rule alone when the path is empty)."""
        return [f"{path}: {rule}" if path else rule for path, rule in self.errors]

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{self.source}: {n} error{'s' if n != 1 else ''}" if self.source else f"{n} error(s)"
        return head + "".join("\n  " + line for line in ConfigError.lines(self))


class Bad(Exception):
    """One value broke its rule (raised by validators, collected by :func:`validate`)."""

    def __init__(self, rule: str, path_suffix: str = "") -> None:
        super().__init__(rule)
        self.rule = rule
        self.suffix = path_suffix


class Errors:
    """The ``(key path, rule)`` pairs collected while validating one document."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, rule: str) -> None:
        self.items.append((path, rule))

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


Validator: TypeAlias = Callable[[Any], Any]

# ----------------------------------------------------------------------------------------------- paths

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def join(path: str, key: str) -> str:
    """``path.key``; a key that is not a bare TOML key is quoted (``listen."my app"``)."""
    if _BARE_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f'{path}."{key}"' if path else f'"{key}"'


def suggest(key: str, known: Iterable[str]) -> str | None:
    """The known key closest to ``key`` (typos, ``-`` for ``_``), or None."""
    import difflib  # here: only a bad file pays for it

    close = difflib.get_close_matches(key.replace("-", "_").replace(" ", "_"), list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown(path: str, key: str, known: Iterable[str], errs: Errors, hint: str = "") -> None:
    """Record ``path.key: unknown key (did you mean "x"?)`` (or the hint when nothing is close)."""
    close = suggest(key, known)
    rule = "unknown key"
    if close:
        rule += f' (did you mean "{close}"?)'
    elif hint:
        rule += f" ({hint})"
    errs.add(join(path, key), rule)


def table(raw: Any, path: str, errs: Errors, what: str = "a table") -> dict[str, Any] | None:
    """``raw`` when it is a table, else record ``path: must be <what>`` and return None."""
    if not isinstance(raw, dict):
        errs.add(path, f"must be {what}")
        return None
    return raw


def validate(
    raw: Mapping[str, Any],
    spec: Mapping[str, Validator],
    path: str,
    errs: Errors,
    *,
    skip: Iterable[str] = frozenset(),
) -> dict[str, Any]:
    """Run ``spec`` over the table ``raw``: the valid keys' parsed values; every problem goes to ``errs``.

    Keys in ``skip`` are known but handled by the caller (no validation, no "unknown key")."""
    skip = frozenset(skip)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in skip:
            continue
        v = spec.get(key)
        if v is None:
            unknown(path, key, [*spec, *skip], errs)
            continue
        try:
            out[key] = v(value)
        except Bad as b:
            errs.add(join(path, key) + b.suffix, b.rule)
    return out


# ------------------------------------------------------------------------------------------- durations

_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)\s*$")
DURATION_RULE: Final = 'must be a duration such as "5s", "200ms", "3h", "1d" or a number of seconds'


def parse_duration(value: object) -> float:
    """Seconds from ``"500us"``, ``"200ms"``, ``"5s"``, ``"1m"``, ``"3h"``, ``"1d"`` or a number of seconds.

    Raises ``ValueError`` (with the rule as message) for anything else, negative values included.
    """
    if isinstance(value, bool):
        raise ValueError(DURATION_RULE)
    if isinstance(value, int | float):
        f = float(value)
        if not math.isfinite(f) or f < 0:
            raise ValueError(DURATION_RULE + " (>= 0)")
        return f
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m is None:
            if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
                raise ValueError(
                    f'"{value.strip()}" has no unit: write "{value.strip()}ms" or "{value.strip()}s", '
                    "or a bare number of seconds"
                )
            raise ValueError(DURATION_RULE)
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(DURATION_RULE)


def format_duration(seconds: float) -> str:
    """The shortest exact unit string for ``seconds`` (``"5s"``, ``"200ms"``, ``"3h"``), for display."""
    for unit in ("d", "h", "m", "s", "ms", "us"):
        n = seconds / _UNITS[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)}{unit}"
    if seconds < 1e-6:
        return f"{seconds:g}s"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"  # exact to the microsecond


# ------------------------------------------------------------------------------------------ validators


def v_int(lo: int, hi: int | None = None, rule: str | None = None) -> Validator:
    """An integer (never a bool) in ``lo..hi`` (``hi`` None: no upper bound)."""
    if rule is None:
        rule = f"must be an integer {lo}..{hi}" if hi is not None else f"must be an integer >= {lo}"

    def v(x: Any) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or x < lo or (hi is not None and x > hi):
            raise Bad(rule)
        return x

    return v


def v_bool(x: Any) -> bool:
    if not isinstance(x, bool):
        raise Bad("must be true or false")
    return x


def v_choice(*options: str, rule: str | None = None) -> Validator:
    """One of ``options`` (exact, case-sensitive)."""
    if rule is None:
        rule = "must be one of " + ", ".join(f'"{o}"' for o in options)

    def v(x: Any) -> str:
        if not isinstance(x, str) or x not in options:
            raise Bad(rule)
        return x

    return v


def v_duration(*, positive: bool = False, maximum: float | None = None, rule: str | None = None) -> Validator:
    """A duration (:func:`parse_duration`), > 0 with ``positive``, at most ``maximum``.

    ``rule`` replaces every message (a daemon whose keys were numbers of seconds keeps its wording)."""

    def v(x: Any) -> float:
        try:
            d = parse_duration(x)
        except ValueError as e:
            raise Bad(rule or str(e)) from None
        if positive and d <= 0:
            raise Bad(rule or DURATION_RULE + ", greater than 0")
        if maximum is not None and d > maximum:
            raise Bad(rule or f"must be at most {format_duration(maximum)}")
        return d

    return v


def v_str(
    *, nonempty: bool = True, maxlen: int = 1024, pattern: str | None = None, rule: str = ""
) -> Validator:
    """A string without CR, LF or NUL; with ``pattern``, one that fully matches it (else ``rule``)."""
    pat = re.compile(pattern) if pattern is not None else None

    def v(x: Any) -> str:
        if not isinstance(x, str) or (nonempty and not x) or len(x) > maxlen:
            raise Bad("must be a non-empty string" if nonempty else "must be a string")
        if any(c in x for c in "\r\n\0"):
            raise Bad("must not contain CR, LF or NUL")
        if pat is not None and not pat.fullmatch(x):
            raise Bad(rule or f"must match {pattern}")
        return x

    return v
