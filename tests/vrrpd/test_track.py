"""vrrpd.track: rise/fall debouncing and keepalived's effective-priority arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrpd.track import ScriptState, effective_priority


def test_fall_then_rise() -> None:
    s = ScriptState(rise=2, fall=3)
    assert s.ok is None  # INIT until the first result
    assert s.observe(True) is True  # the first result decides at once
    assert [s.observe(False) for _ in range(3)] == [None, None, False]
    assert not s.ok
    assert s.observe(True) is None
    assert s.observe(False) is None  # a failure resets the success run
    assert [s.observe(True) for _ in range(2)] == [None, True]
    assert s.ok


def test_interrupted_fall_does_not_fail() -> None:
    s = ScriptState(rise=1, fall=2)
    s.observe(True)
    for _ in range(10):
        assert s.observe(False) is None
        assert s.observe(True) is None
    assert s.ok and s.pending == 0


def test_init_fail_and_defaults() -> None:
    s = ScriptState(init_fail=True)
    assert s.ok is False
    assert s.observe(True) is True  # rise 1
    assert ScriptState().observe(False) is False  # INIT: the first failure counts at once
    s = ScriptState(rise=3, init_fail=True)
    assert [s.observe(True) for _ in range(3)] == [None, None, True]  # init_fail: FAILED, not INIT
    with pytest.raises(ValueError):
        ScriptState(rise=0)


@pytest.mark.parametrize(
    ("configured", "scripts", "want"),
    [
        (100, [], 100),
        (100, [(-60, True)], 100),
        (100, [(-60, False)], 40),
        (100, [(20, True)], 120),
        (100, [(20, False)], 100),
        (100, [(20, True), (-30, False)], 90),
        (100, [(-200, False)], 1),  # clamped low
        (250, [(50, True)], 254),  # clamped high: never reaches 255
        (255, [(-60, False), (10, True)], 255),  # owner untouched
        (100, [(0, True)], 100),
        (100, [(0, False)], None),  # weight 0 failing -> FAULT
        (255, [(0, False)], None),
        (100, [(-10, False), (0, False), (50, True)], None),
    ],
)
def test_effective_priority(configured: int, scripts: list[tuple[int, bool]], want: int | None) -> None:
    assert effective_priority(configured, scripts) == want


def test_effective_priority_rejects_bad_configured() -> None:
    with pytest.raises(ValueError):
        effective_priority(0, [])


scripts = st.lists(st.tuples(st.integers(-253, 253), st.none() | st.booleans()), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 255), scripts)
def test_effective_priority_properties(configured: int, tracked: list[tuple[int, bool | None]]) -> None:
    got = effective_priority(configured, tracked)
    # an INIT tracker (None) counts nothing: the same as leaving it out
    assert got == effective_priority(configured, [(w, ok) for w, ok in tracked if ok is not None])
    if any(w == 0 and ok is False for w, ok in tracked):
        assert got is None
        return
    assert got is not None
    if configured == 255:
        assert got == 255
    else:
        assert 1 <= got <= 254
        raw = configured + sum(w for w, ok in tracked if (w > 0 and ok) or (w < 0 and ok is False))
        assert got == min(254, max(1, raw))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.booleans(), st.lists(st.booleans(), max_size=40))
def test_script_state_matches_a_reference_model(
    rise: int, fall: int, init_fail: bool, results: list[bool]
) -> None:
    s = ScriptState(rise, fall, init_fail)
    state: bool | None = False if init_fail else None
    run = 0
    for ok in results:
        if state is None:  # INIT: the first result decides at once
            state = ok
            assert s.observe(ok) == ok
            assert s.ok == state
            continue
        run = run + 1 if ok != state else 0
        changed = None
        if run and run >= (rise if ok else fall):
            state, run, changed = ok, 0, ok
        assert s.observe(ok) == changed
        assert s.ok == state
