"""pytest plugin: the ``lab`` fixture, the missing-capability policy, ``--stress``, artifacts.

Loaded by ``tests/conftest.py`` (``pytest_plugins = ["netns.plugin"]``).

* ``lab``: a fresh :class:`netns.Lab` per test, torn down in a finalizer. Its logs and captures are copied
  to ``netns-artifacts/<test>/`` when the test fails (or always with ``--keep-artifacts``).
* Tests marked ``netns`` need root and working network namespaces; ``rabbitmq``, ``keepalived`` and
  ``haproxy`` tests need the Debian package. When one is missing, :func:`missing_capability` decides:
  a skip for ``make test-unit`` and ad-hoc runs, a FAILURE when capabilities are required (``make test``
  exports ``RMQFD_REQUIRE_ALL=1``; a set ``CI`` variable means the same unless ``RMQFD_REQUIRE_ALL=0``).
  Only documented kernel limits (``kernel_limit=True``: no ``sch_netem``, no IPv6) still skip then.
* ``stress`` tests run only with ``--stress``; ``--stress-count N`` sets their repetitions (default 10).
* Under pytest-xdist (``make test``: ``-n 2 --dist loadgroup``) every test that uses the session's RabbitMQ
  lab (``session_lab``, ``rabbit``, ``stack``) or is marked ``rabbitmq`` gets ``xdist_group("rabbitmq-lab")``:
  all of them run on one worker, so the 3-node cluster is built once and no two RabbitMQ clusters boot at
  the same time. Everything else in the lab is per process already (random lab ``uid`` for namespaces,
  ``tempfile`` work directories, pid files and sockets inside them; ``free_port`` in tests/helpers.py
  partitions ports by worker).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from netns.lab import Lab

try:  # pytest >= 9.2 keeps a node's id as a NodeId (see xdist_group_suffix)
    from _pytest.nodeid import NodeId
except ImportError:  # pragma: no cover - older pytest
    NodeId = None  # type: ignore[assignment,misc]

ARTIFACTS_DIR = "netns-artifacts"
_REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netns", "network-namespace labs")
    group.addoption(
        "--stress",
        action="store_true",
        default=False,
        help="run the stress scenarios (marker 'stress'), e.g. the LB crash >= 10 times",
    )
    group.addoption(
        "--stress-count", type=int, default=10, help="repetitions of each stress scenario (default 10)"
    )
    group.addoption(
        "--keep-artifacts",
        action="store_true",
        default=False,
        help="keep lab logs and captures under netns-artifacts/ even for passing tests",
    )


REQUIRE_ENV = "RMQFD_REQUIRE_ALL"
_FALSE = ("", "0", "false", "no", "off")


def capabilities_required(environ: Mapping[str, str] | None = None) -> bool:
    """True under ``make test`` (``RMQFD_REQUIRE_ALL=1``) or in CI (``CI`` set), unless
    ``RMQFD_REQUIRE_ALL=0`` (``make test-unit``) says otherwise."""
    env = os.environ if environ is None else environ
    if REQUIRE_ENV in env:
        return env[REQUIRE_ENV].strip().lower() not in _FALSE
    return env.get("CI", "").strip().lower() not in _FALSE


def missing_capability(
    why: str, *, kernel_limit: bool = False, environ: Mapping[str, str] | None = None
) -> NoReturn:
    """A test cannot run here because ``why``: skip it, or fail it when capabilities are required.

    ``kernel_limit``: a documented limit of the kernel (no ``sch_netem``, IPv6 disabled) rather than
    something ``make deps`` installs or the README promises; it skips even when capabilities are required.
    """
    if kernel_limit or not capabilities_required(environ):
        pytest.skip(why)
    pytest.fail(
        f"missing capability: {why}. `make test` and CI ({REQUIRE_ENV}=1 or CI set) run every test; "
        f"run `make deps` as root, or `make test-unit` for the unit tests only",
        pytrace=False,
    )


RABBITMQ_GROUP = "rabbitmq-lab"
SESSION_LAB_FIXTURES = ("session_lab", "rabbit", "stack")


def uses_rabbitmq_lab(item: pytest.Item) -> bool:
    """True for a test that needs the session's RabbitMQ lab or boots a RabbitMQ cluster of its own."""
    names = getattr(item, "fixturenames", ())
    return item.get_closest_marker("rabbitmq") is not None or any(f in names for f in SESSION_LAB_FIXTURES)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    """Before the other hooks (xdist's among them): the RabbitMQ lab's tests join one xdist group.
    After them: make sure ``--dist loadgroup`` sees the group (:func:`_xdist_group_suffix`)."""
    if config.pluginmanager.hasplugin("xdist"):
        assign_xdist_groups(items)
    yield
    if getattr(config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        _xdist_group_suffix(items)


def assign_xdist_groups(items: list[pytest.Item]) -> None:
    for item in items:
        if uses_rabbitmq_lab(item) and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(RABBITMQ_GROUP))


def _xdist_group_suffix(items: list[pytest.Item]) -> None:
    """The ``@<group>`` suffix that ``--dist loadgroup`` schedules by, where xdist's hook could not add it.

    pytest-xdist (3.8) appends it by assigning ``item._nodeid``; pytest 9.2 derives ``nodeid`` from
    ``item._id`` (a ``NodeId``), so that assignment is lost and every grouped test would be scheduled alone
    (the RabbitMQ cluster built on both workers at once). Set it the way this pytest stores it.
    """
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})  # fmt: skip
        if not names:
            continue
        suffix = "@" + "_".join(names)
        if item.nodeid.endswith(suffix):
            continue  # xdist did it (a pytest that still reads _nodeid)
        if NodeId is not None and isinstance(getattr(item, "_id", None), NodeId):
            item._id = NodeId.parse(item.nodeid + suffix)
        else:
            item._nodeid = item.nodeid + suffix  # type: ignore[attr-defined]
        if not item.nodeid.endswith(suffix):
            raise pytest.UsageError(f"cannot put {item.nodeid} in xdist group {suffix[1:]}: unknown pytest")


def pytest_report_header(config: pytest.Config) -> str:
    if capabilities_required():
        return f"missing capabilities FAIL their tests ({REQUIRE_ENV}=1 or CI set; kernel limits still skip)"
    return f"missing capabilities skip their tests (set {REQUIRE_ENV}=1, as `make test` does, to fail them)"


_NETNS_OK = False
PROBE_ATTEMPTS = 3


def netns_unusable() -> str | None:
    """Why namespaces cannot be used here, or None if they can.

    Only success is remembered: a failed ``ip netns add`` is retried (:data:`PROBE_ATTEMPTS` times, then
    again for the next test), so one transient failure does not turn the whole session into skips.
    """
    global _NETNS_OK
    if _NETNS_OK:
        return None
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    why = ""
    for attempt in range(PROBE_ATTEMPTS):
        if attempt:
            time.sleep(0.5 * attempt)  # back-off between probes, not a wait for a condition
        why = _probe_netns()
        if not why:
            _NETNS_OK = True
            return None
    return f"{why} ({PROBE_ATTEMPTS} attempts)"


def _probe_netns() -> str:
    name = f"nlprobe{secrets.token_hex(3)}"
    try:
        res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns add failed: {exc}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)
    if res.returncode != 0:
        return f"network namespaces unusable: {res.stderr.strip()}"
    return ""


_PACKAGES = {
    "rabbitmq": ("/usr/lib/rabbitmq/bin/rabbitmq-server", "Debian's rabbitmq-server"),
    "keepalived": ("/usr/sbin/keepalived", "Debian's keepalived"),
    "haproxy": ("/usr/sbin/haproxy", "Debian's haproxy"),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("stress") and not item.config.getoption("--stress"):
        pytest.skip("stress scenario: run with --stress")
    if item.get_closest_marker("netns") or "lab" in getattr(item, "fixturenames", ()):
        why = netns_unusable()
        if why:
            missing_capability(why)
    for marker, (path, what) in _PACKAGES.items():
        if item.get_closest_marker(marker) and not os.path.exists(path):
            missing_capability(f"needs {what} ({path})")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(_REPORT_KEY, {})[report.when] = report
    return report


def item_failed(item: pytest.Item) -> bool:
    """True once setup or the call of ``item`` has failed (usable from finalizers)."""
    reports = item.stash.get(_REPORT_KEY, {})
    return any(r.failed for r in reports.values())


def artifacts_dir(item: pytest.Item) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
    return Path(str(item.config.rootpath)) / ARTIFACTS_DIR / safe


def keep_artifacts(item: pytest.Item) -> bool:
    return bool(item.config.getoption("--keep-artifacts")) or item_failed(item)


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Lab:
    why = netns_unusable()
    if why:
        missing_capability(why)
    item = request.node
    new = Lab(tag=item.name, artifacts=artifacts_dir(item))

    def finalize() -> None:
        new.keep_artifacts = keep_artifacts(item)
        new.teardown()

    request.addfinalizer(finalize)
    return new


@pytest.fixture
def stress_count(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--stress-count"))


# ---------------------------------------------------------------------------------------------------------
# one RabbitMQ cluster (and the LB/client hosts around it) shared by every test of the session


class SessionLab:
    """The session's lab: switch ``sw``, RabbitMQ ``rmq1..3``; ``lb1``, ``lb2``, ``client`` once asked for."""

    def __init__(self, lab: Lab) -> None:
        from netns.rabbitmq import RabbitCluster

        self.lab = lab
        self.switch = lab.switch("sw")
        self.rabbit = RabbitCluster(lab, self.switch)
        self.boot_seconds = self.rabbit.start()
        self._stack: Any = None

    def stack(self) -> Any:
        if self._stack is None:
            from netns.stack import Stack

            self._stack = Stack.build(self.lab, switch=self.switch, rabbit=self.rabbit)
        return self._stack


@pytest.fixture(scope="session")
def session_lab(request: pytest.FixtureRequest) -> SessionLab:
    why = netns_unusable()
    if why:
        missing_capability(why)
    if not os.path.exists(_PACKAGES["rabbitmq"][0]):
        missing_capability(f"needs Debian's rabbitmq-server ({_PACKAGES['rabbitmq'][0]})")
    lab = Lab(tag="session", artifacts=Path(str(request.config.rootpath)) / ARTIFACTS_DIR / "session-setup")
    request.addfinalizer(lab.teardown)
    try:
        return SessionLab(lab)
    except BaseException:
        lab.keep_artifacts = True  # RabbitMQ's boot logs, for the failure
        raise


def _save_test_artifacts(item: pytest.Item, lab: Lab, first_proc: int, extra: list[Path]) -> None:
    dest = artifacts_dir(item)
    shutil.rmtree(dest, ignore_errors=True)  # not mixed with an earlier run's
    dest.mkdir(parents=True, exist_ok=True)
    for proc in lab.procs[first_proc:]:
        if proc.log_path.exists():
            shutil.copy2(proc.log_path, dest / proc.log_path.name)
    for path in extra:
        if path.exists():
            shutil.copy2(path, dest / path.name)
    for path in lab.workdir.iterdir():
        if path.suffix in (".toml", ".cfg", ".conf", ".notify") or path.name.startswith("rmq"):
            shutil.copy2(path, dest / path.name)


@pytest.fixture
def rabbit(session_lab: SessionLab, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's RabbitMQ cluster with all nodes running (restarted if a previous test stopped one)."""
    session_lab.rabbit.ensure_all_running()
    first = len(session_lab.lab.procs)
    yield session_lab.rabbit
    if keep_artifacts(request.node):
        _save_test_artifacts(request.node, session_lab.lab, first, [])


@pytest.fixture
def stack(session_lab: SessionLab, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The full stack on the session lab: LB daemons are started by the test; reset afterwards.

    A capture of the switch runs for the test and is kept (with the logs of the processes started during the
    test) under netns-artifacts/ when it fails.
    """
    session_lab.rabbit.ensure_all_running()
    st = session_lab.stack()
    lab = session_lab.lab
    first = len(lab.procs)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[-80:]
    cap = lab.capture(session_lab.switch, name=f"capture-{safe}")
    pcap = lab.workdir / f"capture-{safe}.pcap"
    try:
        yield st
    finally:
        outputs = [o for load in st.loads for o in load.outputs]
        try:
            st.reset()
        finally:
            cap.terminate(2)
            if keep_artifacts(request.node):
                _save_test_artifacts(request.node, lab, first, [pcap, *outputs])
            pcap.unlink(missing_ok=True)
