"""tcplb.health: the rise/fall machine, init states, passive health, intervals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb.health import CheckStatus, Health, Transition, describe

INIT = ["fully-up", "up", "down", "fully-down"]


def oracle(rise: int, fall: int, init: str, results: list[bool]) -> list[bool]:
    """State after each result, from run lengths: a different formulation of "consecutive"."""
    up = init in ("fully-up", "up")
    ok_run = rise - 1 if init == "down" else 0
    fail_run = fall - 1 if init == "up" else 0
    states = []
    for ok in results:
        if ok:
            ok_run, fail_run = ok_run + 1, 0
        else:
            ok_run, fail_run = 0, fail_run + 1
        if up and fail_run >= fall:
            up, fail_run = False, 0
        elif not up and ok_run >= rise:
            up, ok_run = True, 0
        states.append(up)
    return states


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.sampled_from(INIT), st.lists(st.booleans(), max_size=60))
def test_rise_fall_matches_run_length_oracle(rise: int, fall: int, init: str, results: list[bool]) -> None:
    h = Health(rise, fall, init)  # type: ignore[arg-type]
    expected = oracle(rise, fall, init, results)
    prev = h.up
    for t, (ok, exp) in enumerate(zip(results, expected, strict=True)):
        tr = h.observe(ok, CheckStatus.L4OK if ok else CheckStatus.L4CON, float(t))
        assert h.up == exp
        assert (tr is not None) == (prev != exp)
        if tr is not None:
            assert tr.up == exp and tr.at == float(t) and not tr.passive
            assert tr.status == (CheckStatus.L4OK if exp else CheckStatus.L4CON)
            assert h.last_change == float(t)
        assert 0 <= h.health <= rise + fall - 1
        assert (h.health >= rise) == h.up
        prev = exp


@pytest.mark.parametrize(
    ("init", "results", "flips_at"),
    [
        ("fully-up", [False, False, False], 2),  # fall = 3
        ("up", [False], 0),
        ("down", [True], 0),
        ("fully-down", [True, True], 1),  # rise = 2
    ],
)
def test_init_states(init: str, results: list[bool], flips_at: int) -> None:
    h = Health(2, 3, init)  # type: ignore[arg-type]
    assert h.up == (init in ("fully-up", "up"))
    assert h.status is CheckStatus.INI and not h.checked
    for i, ok in enumerate(results):
        tr = h.observe(ok, "L4OK" if ok else "L4TOUT", i)
        assert (tr is not None) == (i == flips_at)
    assert h.checked


def test_intervals() -> None:
    h = Health(2, 3)
    assert h.interval(2.0, 0.5, 5.0) == 2.0  # fully up
    h.observe(False, "L4CON", 0)
    assert h.transitional and h.interval(2.0, 0.5, 5.0) == 0.5  # going down
    h.observe(False, "L4CON", 1)
    h.observe(False, "L4CON", 2)
    assert not h.up and h.interval(2.0, 0.5, 5.0) == 5.0  # fully down
    h.observe(True, "L4OK", 3)
    assert h.interval(2.0, 0.5, 5.0) == 0.5  # going up
    assert h.interval(2.0) == 2.0  # fastinter/downinter default to inter
    h.observe(False, "L4CON", 4)
    assert h.interval(2.0) == 2.0


def test_status_text_and_health_counter() -> None:
    h = Health(2, 3)
    assert (h.status_text(), h.health) == ("UP", 4)
    h.observe(False, "L4CON", 0)
    assert (h.status_text(), h.health) == ("UP 2/3", 3)
    h.observe(False, "L4CON", 1)
    h.observe(False, "L4CON", 2)
    assert (h.status_text(), h.health) == ("DOWN", 0)
    h.observe(True, "L4OK", 3)
    assert (h.status_text(), h.health) == ("DOWN 1/2", 1)
    snap = h.snapshot()
    assert snap["status"] == "DOWN 1/2" and snap["check_status"] == "L4OK" and snap["up"] is False


# -------------------------------------------------------------------------------------------- passive


def test_passive_failure_marks_down_at_once_and_rise_brings_back() -> None:
    h = Health(2, 3)
    tr = h.passive_failure(CheckStatus.HANA, 10.0, "Connection refused")
    assert tr == Transition(
        up=False, status=CheckStatus.HANA, info="Connection refused", at=10.0, passive=True
    )
    assert tr.reason == "Health analyze"
    assert h.interval(1.0, 0.25, 3.0) == 0.25  # hurry: check again soon
    assert h.passive_failure(CheckStatus.HANA, 10.5) is None  # already down
    assert h.observe(True, "L4OK", 11) is None
    tr2 = h.observe(True, "L4OK", 12)
    assert tr2 is not None and tr2.up and not tr2.passive


def test_force_down_when_down_resets_progress() -> None:
    h = Health(2, 3, "fully-down")
    h.observe(True, "L4OK", 0)
    assert h.force_down("L4CON", 1) is None
    assert h.observe(True, "L4OK", 2) is None  # progress was reset: needs rise again
    assert h.observe(True, "L4OK", 3) is not None


def test_force_up() -> None:
    h = Health(2, 3, "fully-down")
    tr = h.force_up(CheckStatus.MAINT, 1.0)
    assert tr is not None and tr.up and tr.passive
    assert h.force_up("MAINT", 2.0) is None


def test_error_limit_and_passive_success() -> None:
    h = Health(2, 3, error_limit=3)
    assert h.passive_failure("HANA", 0) is None
    assert h.passive_failure("HANA", 1) is None
    h.passive_success()
    assert h.passive_failure("HANA", 2) is None
    assert h.passive_failure("HANA", 3) is None
    tr = h.passive_failure("L4TOUT", 4)
    assert tr is not None and not tr.up and tr.status is CheckStatus.L4TOUT


def test_on_error_fail_check() -> None:
    h = Health(2, 2, on_error="fail-check")
    assert h.passive_failure("HANA", 0) is None and h.up
    assert h.interval(2.0, 0.5) == 0.5
    tr = h.passive_failure("HANA", 1)
    assert tr is not None and not tr.up and not tr.passive


def test_on_error_sudden_death() -> None:
    h = Health(2, 3, on_error="sudden-death")
    assert h.passive_failure("HANA", 0) is None and h.up
    tr = h.observe(False, "L4CON", 1)
    assert tr is not None and not tr.up
    assert h.passive_failure("HANA", 2) is None  # already down: nothing


def test_on_error_fastinter_and_ignore() -> None:
    h = Health(2, 3, on_error="fastinter")
    assert h.passive_failure("HANA", 0) is None and h.up
    assert h.interval(2.0, 0.5) == 0.5
    h.observe(True, "L4OK", 1)
    assert h.interval(2.0, 0.5) == 2.0
    h2 = Health(on_error="ignore")
    for i in range(10):
        assert h2.passive_failure("HANA", i) is None
    assert h2.up and h2.interval(2.0, 0.5) == 2.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Health(0, 3)
    with pytest.raises(ValueError):
        Health(2, 3, "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Health(2, 3, on_error="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Health().observe(True, "L9OK", 0)


def test_descriptions() -> None:
    assert describe("L4CON") == "Layer4 connection problem"
    assert describe(CheckStatus.L7STS) == "Layer7 wrong status"
    assert all(describe(s) for s in CheckStatus)
