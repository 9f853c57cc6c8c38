"""Issue 11, defect 4: track scripts start in INIT, not OK (keepalived 2.2.7), plus the pure machines
for track_process (quorum, delays, argv matching) and the start gate (vrrp_startup_delay, weight-0 trackers).

The daemon-level scenario (a node restarting with a broken service never wins MASTER) is
test_netns_track.py::test_restart_with_a_broken_service_never_wins_master."""

from __future__ import annotations

from typing import Any

import pytest
from host_rig import Rig, config, inst
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrpd.track import ProcessQuorum, ScriptState, StartGate, effective_priority, param_match

# ----------------------------------------------------------------------------------------- scripts: INIT


def test_a_script_starts_in_init_and_its_first_failure_counts_at_once() -> None:
    # the broken service: weight 0, fall 3. Before the fix the script started OK, so the instance
    # could win MASTER and only dropped to FAULT after three failed runs.
    s = ScriptState(rise=2, fall=3)
    assert s.ok is None and not s.initialised
    assert effective_priority(100, [(0, s.verdict)]) == 100  # INIT: no FAULT, no weight either ...
    assert StartGate().open(0.0, [s.verdict]) is False  # ... but the instance does not start
    assert s.observe(False) is False  # the first failure: FAILED at once, not after fall = 3
    assert effective_priority(100, [(0, s.verdict)]) is None
    assert StartGate().open(0.0, [s.verdict])


def test_first_success_counts_at_once_then_rise_and_fall_apply() -> None:
    s = ScriptState(rise=3, fall=2)
    assert s.observe(True) is True  # keepalived: "one success is enough" from INIT
    assert [s.observe(False) for _ in range(2)] == [None, False]
    assert [s.observe(True) for _ in range(3)] == [None, None, True]


@pytest.mark.parametrize("weight", [-30, 20])
def test_no_weight_counts_before_the_first_result(weight: int) -> None:
    s = ScriptState()
    assert effective_priority(100, [(weight, s.verdict)]) == 100
    s.observe(weight > 0)  # the state in which the weight applies
    assert effective_priority(100, [(weight, s.verdict)]) == 100 + weight


def test_weighted_trackers_never_hold_the_start() -> None:
    gate = StartGate(not_before=5.0)
    assert not gate.open(4.9, [])
    assert gate.open(5.0, [])
    assert gate.waiting_for(1.0, [("chk", None), ("p", True)]) == [
        "vrrp_startup_delay (4s left)",
        "chk has no result yet",
    ]
    assert gate.waiting_for(6.0, [("p", True)]) == []


# ------------------------------------------------------------------------------------- scripts: reloads


def test_reload_keeps_the_state_unless_the_command_changed() -> None:
    s = ScriptState(rise=2, fall=2)
    s.observe(False)
    kept = s.reloaded(5, 5, command_changed=False)
    assert kept.ok is False and kept.verdict is False
    fresh = s.reloaded(1, 1, command_changed=True)
    assert fresh.ok is None and fresh.verdict is False  # held: still FAULT, never straight to OK
    assert fresh.observe(False) is None  # the new command agrees: no change
    assert fresh.ok is False
    again = s.reloaded(1, 1, command_changed=True)
    assert again.observe(True) is True  # the first new result decides


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.lists(st.booleans(), max_size=12),
    st.integers(1, 4),
    st.integers(1, 4),
    st.booleans(),
    st.lists(st.booleans(), max_size=12),
)
def test_a_reload_alone_never_changes_the_verdict(
    r1: int, f1: int, before: list[bool], r2: int, f2: int, changed: bool, after: list[bool]
) -> None:
    s = ScriptState(r1, f1)
    for ok in before:
        s.observe(ok)
    verdict = s.verdict
    n = s.reloaded(r2, f2, command_changed=changed)
    assert n.verdict == verdict  # the reload itself flips nothing
    for ok in after:
        prev = n.verdict
        got = n.observe(ok)
        assert got is None or (got == ok and got != prev)  # a flip only ever goes towards the result
        if changed and prev is not None and n.ok == ok and got is None:
            assert n.verdict == prev


# ------------------------------------------------------------------------------------ track_process


def test_process_quorum_first_scan_decides_at_once() -> None:
    q = ProcessQuorum(quorum=1, terminate_delay=5.0)
    assert q.up is None
    assert q.update(0, 0.0) is False  # no delay for the first scan
    q = ProcessQuorum(quorum=2, fork_delay=5.0)
    assert q.update(3, 0.0) is True


def test_process_exit_without_delay_is_instant() -> None:
    q = ProcessQuorum()
    q.update(1, 0.0)
    assert q.update(0, 1.0) is False and q.next_deadline() is None
    assert q.update(1, 2.0) is True


def test_terminate_delay_and_a_bounce_within_it() -> None:
    q = ProcessQuorum(terminate_delay=0.5, fork_delay=0.2)
    q.update(1, 0.0)
    assert q.update(0, 1.0) is None and q.next_deadline() == 1.5
    assert q.expire(1.2) is None
    assert q.update(1, 1.3) is None and q.next_deadline() is None  # restarted in time: nothing happened
    assert q.update(0, 2.0) is None
    assert q.expire(2.5) is False and q.up is False
    assert q.update(1, 3.0) is None and q.next_deadline() == pytest.approx(3.2)
    assert q.expire(3.2) is True


def test_quorum_max() -> None:
    q = ProcessQuorum(quorum=1, quorum_max=1)
    assert q.update(1, 0.0) is True
    assert q.update(2, 0.1) is False  # two instances running: a failure (keepalived quorum_max)
    q0 = ProcessQuorum(quorum=0, quorum_max=0)
    assert q0.update(0, 0.0) is True and q0.update(1, 0.1) is False
    with pytest.raises(ValueError):
        ProcessQuorum(quorum=2, quorum_max=1)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 3),
    st.none() | st.integers(3, 5),
    st.sampled_from([0.0, 0.3]),
    st.sampled_from([0.0, 0.5]),
    st.lists(st.tuples(st.integers(0, 6), st.floats(0.0, 1.0)), min_size=1, max_size=20),
)
def test_process_quorum_settles_on_the_count(
    quorum: int, qmax: int | None, fork: float, term: float, steps: list[tuple[int, float]]
) -> None:
    """After the last change and the longest delay, the state is what the count asks for; it only changes
    at an update or an expiry, never to the opposite of what the count asks for."""
    if quorum == 0 and qmax is None:
        qmax = 0
    q = ProcessQuorum(quorum, qmax, fork, term)
    now = 0.0
    for count, dt in steps:
        now += dt
        if (d := q.next_deadline()) is not None and d <= now:
            got = q.expire(d)
            assert got is None or got == q.wanted(q.count)
        got = q.update(count, now)
        assert got is None or got == q.wanted(count)
        d = q.next_deadline()
        assert d is None or d >= now
    d = q.next_deadline()
    if d is not None:
        q.expire(d)
    assert q.up == q.wanted(q.count)


@pytest.mark.parametrize(
    ("argv", "want", "mode", "ok"),
    [
        (("-c", "/etc/lb.toml"), ("-c", "/etc/lb.toml"), "exact", True),
        (("-c", "/etc/lb.toml", "-v"), ("-c", "/etc/lb.toml"), "exact", False),
        (("-c", "/etc/lb.toml", "-v"), ("-c", "/etc/lb.toml"), "partial", True),
        (("-c", "/etc/lb2.toml"), ("-c", "/etc/lb"), "initial", True),
        (("-c", "/etc/lb2.toml"), ("-c", "/etc/lb"), "partial", False),
        (("-x", "/etc/lb2.toml"), ("-c", "/etc/lb"), "initial", False),
        ((), (), "exact", True),
        (("-v",), (), "exact", False),
        (("-v",), (), "partial", True),
        ((), ("-c",), "initial", False),
    ],
)
def test_param_match(argv: tuple[str, ...], want: tuple[str, ...], mode: str, ok: bool) -> None:
    assert param_match(argv, want, mode) is ok


# ------------------------------------------------- the daemon's core (vrrpd.host) on the fake platform


def script(weight: int = 0) -> dict[str, Any]:
    return {"script": ["/bin/true"], "interval": 2, "fall": 3, "weight": weight}


def rig_with(
    track_script: list[Any] | None = None, track_process: list[Any] | None = None, **top: Any
) -> Rig:
    kw: dict[str, Any] = {}
    if track_script is not None:
        kw["track_script"] = track_script
    if track_process is not None:
        kw["track_process"] = track_process
    return Rig(config(inst(prio=150, **kw), **top))


def adverts(r: Rig) -> list[int]:
    return [int(c.args[3]) for c in r.fake.calls if c.kind == "advert"]  # type: ignore[call-overload]


def test_host_holds_the_instance_in_init_until_the_first_result_then_faults_at_once() -> None:
    r = rig_with(["chk"], vrrp_script={"chk": script()})
    r.advance(10)
    assert r.state() == "INIT" and adverts(r) == [] and r.notify_states() == []
    r.host.track("chk", False, r.now)  # the first result: a failure
    r.pump()
    assert r.state() == "FAULT" and r.notify_states() == ["FAULT"]
    r.advance(10)
    assert adverts(r) == []  # never advertised 150
    r.host.track("chk", True, r.now)
    r.pump()
    r.advance(4)
    assert r.state() == "MASTER" and r.notify_states() == ["FAULT", "BACKUP", "MASTER"]


def test_host_a_weighted_script_does_not_hold_the_start_and_adds_nothing_before_its_result() -> None:
    r = rig_with(["chk"], vrrp_script={"chk": script(weight=-60)})
    assert r.state() == "BACKUP" and r.host.describe("VI_1")["effective_priority"] == 150
    r.host.track("chk", False, r.now)
    assert r.host.describe("VI_1")["effective_priority"] == 90


def test_host_track_process_weight_zero_faults_with_priority_zero() -> None:
    r = rig_with(track_process=["tcplb"], vrrp_track_process={"tcplb": {"process": "tcplb"}})
    r.advance(5)
    assert r.state() == "INIT"  # the first /proc scan has not reported yet
    r.host.track("process:tcplb", True, r.now)
    r.pump()
    r.advance(4)
    assert r.state() == "MASTER"
    st = r.host.status({}, {"tcplb": {"name": "tcplb", "processes": 1}})[0]["track_processes"]
    assert st == [{"name": "tcplb", "processes": 1, "state": "UP"}]
    n = len(adverts(r))
    r.host.track("process:tcplb", False, r.now)
    r.pump()
    assert r.state() == "FAULT" and adverts(r)[n:] == [0]  # the backup takes over after Skew_Time
    assert any("track_process tcplb" in f for f in r.host.instance("VI_1").vr.faults)  # type: ignore[union-attr]


def test_host_weighted_process_and_a_script_with_the_same_name() -> None:
    r = rig_with(
        [{"name": "lb", "weight": 10}],
        [{"name": "lb", "weight": -20}],
        vrrp_script={"lb": script()},
        vrrp_track_process={"lb": {"process": "tcplb"}},
    )
    r.host.track("lb", True, r.now)
    r.host.track("process:lb", False, r.now)
    assert r.host.describe("VI_1")["effective_priority"] == 150 + 10 - 20


def test_host_vrrp_startup_delay() -> None:
    top: dict[str, Any] = {"global": {"router_id": "t", "vrrp_startup_delay": 5}}
    r = rig_with(None, None, **top)
    r.advance(4.9)
    assert r.state() == "INIT" and adverts(r) == []
    r.advance(0.2)
    assert r.state() == "BACKUP"
    r.advance(4)
    assert r.state() == "MASTER"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["chk", "process:p"]), st.none() | st.booleans(), st.floats(0, 3)),
        max_size=12,
    )
)
def test_host_never_starts_before_every_weight_zero_tracker_has_a_verdict(
    steps: list[tuple[str, bool | None, float]],
) -> None:
    r = rig_with(["chk"], ["p"], vrrp_script={"chk": script()}, vrrp_track_process={"p": {"process": "p"}})
    seen: dict[str, bool | None] = {"chk": None, "process:p": None}
    ever_ready = False
    for name, ok, dt in steps:
        r.host.track(name, ok, r.now)
        r.pump()
        seen[name] = ok
        ever_ready = ever_ready or all(v is not None for v in seen.values())
        r.advance(dt)
        state = r.state()
        if not ever_ready:
            assert state == "INIT" and adverts(r) == []
        elif False in seen.values():
            assert state == "FAULT"
        # a MASTER only ever with both trackers OK (no transient win while one is failing or unknown)
        if state == "MASTER":
            assert all(v is not False for v in seen.values())


def test_status_text_lists_tracked_processes() -> None:
    from vrrpd.control import format_status

    r = rig_with(track_process=["tcplb"], vrrp_track_process={"tcplb": {"process": "tcplb"}})
    r.host.track("process:tcplb", True, r.now)
    st = {
        "router_id": "t",
        "instances": r.host.status({}, {"tcplb": {"name": "tcplb", "pids": [41, 42], "weight": 0}}),
    }
    assert "  track_process tcplb: UP weight 0 pids 41 42" in format_status(st).splitlines()
