"""tcplb.slowstart: HAProxy's slowstart ramp (server_recalc_eweight, srv_dynamic_maxconn, throttle)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb import slowstart as ss


def haproxy_eweight(uweight: int, elapsed_s: int, slowstart_s: int) -> int:
    """server_recalc_eweight with wdiv = BE_WEIGHT_SCALE = 16, wmult = 1, whole seconds (the C code)."""
    w = 16 if elapsed_s < 0 or elapsed_s >= slowstart_s else (16 * elapsed_s + slowstart_s) // slowstart_s
    return (uweight * w + 1 - 1) // 1


def test_golden_values() -> None:
    # slowstart 10 s, weight 1: 1/16 at once, 9/16 at half time, 15/16 at 9 s, full at 10 s
    assert [ss.ramp(1, 0.0, float(t), 10.0).eweight for t in (0, 5, 9, 10, 11)] == [1, 9, 15, 16, 16]
    assert ss.ramp(1, 0.0, 5.0, 10.0).throttle == 57  # ceil(100 * 9 / 16)
    assert ss.ramp(3, 100.0, 100.0, 10.0).eweight == 3 and ss.ramp(3, 100.0, 200.0, 10.0).eweight == 48
    assert ss.full_weight(3) == 48
    r = ss.ramp(1, 0.0, 5.0, 10.0, maxconn=100)
    assert r.maxconn == 50 and not r.done and r.next_at == 6.0  # max(1 s, 10 s / 20)
    assert ss.ramp(1, 0.0, 0.0, 10.0, maxconn=100).maxconn == 1  # never below 1
    assert ss.ramp(1, 0.0, 0.0, 10.0, maxconn=0).maxconn == 0  # 0 = no limit stays no limit
    assert ss.ramp(1, 0.0, 0.0, 60.0).next_at == 3.0  # 60 s / 20 = the 5 % step
    assert ss.ramp(1, 0.0, 9.5, 10.0).next_at == 10.0  # not past the end
    done = ss.ramp(2, 0.0, 10.0, 10.0, maxconn=7)
    assert (
        done.done
        and done.next_at is None
        and done.eweight == 32
        and done.throttle == 100
        and done.maxconn == 7
    )


def test_clock_backwards_means_full_weight_like_haproxy() -> None:
    assert ss.ramp(2, 10.0, 5.0, 10.0).eweight == 32


def test_drain_stays_zero() -> None:
    r = ss.ramp(0, 0.0, 1.0, 10.0)
    assert r.eweight == 0 and r.throttle == 100


@pytest.mark.parametrize(("uweight", "slowstart"), [(-1, 10.0), (1, 0.0), (1, -5.0)])
def test_bad_local_input(uweight: int, slowstart: float) -> None:
    with pytest.raises(ValueError, match=r"weight|slowstart"):
        ss.ramp(uweight, 0.0, 1.0, slowstart)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 256), st.integers(1, 3600), st.integers(-10, 4000))
def test_matches_haproxy_integer_seconds(uweight: int, slowstart: int, elapsed: int) -> None:
    assert ss.ramp(uweight, 1000.0, 1000.0 + elapsed, float(slowstart)).eweight == haproxy_eweight(
        uweight, elapsed, slowstart
    )


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 256),
    st.floats(0.001, 10_000),
    st.lists(st.floats(0, 20_000, allow_nan=False), min_size=2, max_size=30),
    st.integers(1, 100_000),
)
def test_monotonic_never_zero_full_at_end(
    uweight: int, slowstart: float, times: list[float], maxconn: int
) -> None:
    since = 50.0
    prev_w, prev_c = 0, 0
    for t in sorted(times):
        now = since + t
        r = ss.ramp(uweight, since, now, slowstart, maxconn=maxconn)
        assert uweight <= r.eweight <= 16 * uweight  # never 0 while UP
        assert 1 <= r.maxconn <= maxconn  # type: ignore[operator]
        assert r.eweight >= prev_w and r.maxconn >= prev_c  # type: ignore[operator]
        prev_w, prev_c = r.eweight, r.maxconn  # type: ignore[assignment]
        if now >= since + slowstart:
            assert r.done and r.eweight == 16 * uweight and r.maxconn == maxconn and r.next_at is None
        else:
            assert not r.done and r.next_at is not None and now < r.next_at <= since + slowstart
        assert 1 <= r.throttle <= 100


def test_deadline_always_in_the_future_while_ramping() -> None:
    # found by hypothesis: 50.0 + 0.001 - 50.0 < 0.001 in floats; "not done" with next_at == now would make
    # a driver spin on a deadline that is already due
    r = ss.ramp(1, 50.0, 50.001, 0.001)
    assert r.done or (r.next_at is not None and r.next_at > 50.001)
