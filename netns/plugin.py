"""pytest plugin: the ``lab`` fixture, netns/rabbitmq/keepalived/haproxy skips, ``--stress``, artifacts.

Loaded by ``tests/conftest.py`` (``pytest_plugins = ["netns.plugin"]``).

* ``lab``: a fresh :class:`netns.Lab` per test, torn down in a finalizer. Its logs and captures are copied
  to ``netns-artifacts/<test>/`` when the test fails (or always with ``--keep-artifacts``).
* Tests marked ``netns`` are skipped unless running as root with working network namespaces; ``rabbitmq``,
  ``keepalived`` and ``haproxy`` tests are skipped when the Debian package is missing.
* ``stress`` tests run only with ``--stress``; ``--stress-count N`` sets their repetitions (default 10).
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Generator
from pathlib import Path

import pytest

from netns.lab import Lab

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


@functools.cache
def netns_unusable() -> str | None:
    """Why namespaces cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    name = f"nlprobe{secrets.token_hex(3)}"
    try:
        res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns add failed: {exc}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)
    if res.returncode != 0:
        return f"network namespaces unusable: {res.stderr.strip()}"
    return None


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
            pytest.skip(why)
    for marker, (path, what) in _PACKAGES.items():
        if item.get_closest_marker(marker) and not os.path.exists(path):
            pytest.skip(f"needs {what} ({path})")


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
        pytest.skip(why)
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
