"""rmqfd.cfgkit: the configuration toolkit shared by vrrpd and tcplb."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmqfd import cfgkit
from rmqfd.cfgkit import Bad, ConfigError, Errors


def test_validate_collects_every_problem_with_its_key_path() -> None:
    errs = Errors()
    spec = {"rise": cfgkit.v_int(1, 10), "check": cfgkit.v_bool, "inter": cfgkit.v_duration(positive=True)}
    out = cfgkit.validate(
        {"rise": 0, "check": True, "inter": "2s", "intre": 1, "my key": 2}, spec, "a.b", errs
    )
    assert out == {"check": True, "inter": 2.0}
    assert errs.items == [
        ("a.b.rise", "must be an integer 1..10"),
        ("a.b.intre", 'unknown key (did you mean "inter"?)'),
        ('a.b."my key"', "unknown key"),
    ]
    assert len(errs) == 3 and errs


def test_skip_keys_are_known_but_not_validated() -> None:
    errs = Errors()
    out = cfgkit.validate({"server": [1], "servr": 1}, {"x": cfgkit.v_bool}, "", errs, skip={"server"})
    assert out == {} and errs.items == [("servr", 'unknown key (did you mean "server"?)')]


def test_unknown_with_hint_and_table() -> None:
    errs = Errors()
    cfgkit.unknown("", "zzz", ["global"], errs, "top-level tables are global and listen")
    assert errs.items == [("zzz", "unknown key (top-level tables are global and listen)")]
    assert cfgkit.table(3, "t", errs, "a table [t]") is None
    assert errs.items[-1] == ("t", "must be a table [t]")
    assert cfgkit.table({"a": 1}, "t", errs) == {"a": 1}


def test_validator_suffix_points_into_lists() -> None:
    def v(x: Any) -> Any:
        raise Bad("bad element", "[2]")

    errs = Errors()
    cfgkit.validate({"bind": [1, 2, 3]}, {"bind": v}, "listen.x", errs)
    assert errs.items == [("listen.x.bind[2]", "bad element")]


def test_config_error_lines_and_str() -> None:
    e = ConfigError([("a.b", "must be x"), ("", "TOML syntax")], "lb.toml")
    assert e.lines() == ["a.b: must be x", "TOML syntax"]
    assert str(e) == "lb.toml: 2 errors\n  a.b: must be x\n  TOML syntax"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500us", 5e-4), ("200ms", 0.2), ("5s", 5.0), ("1m", 60.0), ("3h", 10800.0), ("1d", 86400.0), (2, 2.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert cfgkit.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "5 parsecs", -1, True, None, float("inf")])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        cfgkit.parse_duration(bad)


def test_duration_rules_and_choice_and_str() -> None:
    with pytest.raises(Bad, match="no unit"):
        cfgkit.v_duration()("5")
    with pytest.raises(Bad, match="greater than 0"):
        cfgkit.v_duration(positive=True)(0)
    with pytest.raises(Bad, match="at most 1m"):
        cfgkit.v_duration(maximum=60)("2m")
    with pytest.raises(Bad, match="my rule"):
        cfgkit.v_duration(maximum=60, rule="my rule")("2m")
    with pytest.raises(Bad, match='"a", "b"'):
        cfgkit.v_choice("a", "b")("c")
    with pytest.raises(Bad, match="CR, LF"):
        cfgkit.v_str()("a\nb")
    with pytest.raises(Bad, match="letters"):
        cfgkit.v_str(pattern="[a-z]+", rule="letters")("A")
    assert cfgkit.v_str(nonempty=False)("") == ""
    with pytest.raises(Bad, match=">= 3"):
        cfgkit.v_int(3)(2)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9))
def test_format_duration_round_trips(us: int) -> None:
    s = us * 1e-6
    assert cfgkit.parse_duration(cfgkit.format_duration(s)) == pytest.approx(s, rel=1e-6, abs=1e-9)


def test_both_daemons_raise_the_shared_error_type() -> None:
    from tcplb.config import ConfigError as TcplbError
    from vrrpd.config import ConfigError as VrrpdError

    assert issubclass(VrrpdError, cfgkit.ConfigError) and issubclass(TcplbError, cfgkit.ConfigError)
