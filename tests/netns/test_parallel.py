"""The suite runs on pytest-xdist workers (``make test``: ``-n 2 --dist loadgroup``): what keeps them apart.

* every test that needs the session's RabbitMQ lab (or boots a cluster) is in one xdist group, so it runs
  on one worker and the cluster is built once (netns/plugin.py);
* ``free_port`` hands each worker ports from its own slice, below the kernel's ephemeral range
  (tests/helpers.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import free_port, port_slice

import netns.plugin as plugin

pytest_plugins = ["pytester"]


def test_port_slices_of_workers_are_disjoint_and_below_the_ephemeral_range() -> None:
    slices = [port_slice(w) for w in ("", "gw0", "gw1", "gw2", "gw3", "gw4")]
    seen: set[int] = set()
    for s in slices:
        assert not seen & set(s)
        seen |= set(s)
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    assert max(seen) < int(ephemeral[0])


def test_free_port_is_free_in_this_workers_slice_and_not_handed_out_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(p in port_slice() for p in ports)
    with socket.socket() as held:  # a port in use is never handed out
        held.bind(("127.0.0.1", ports[-1] + 1 if ports[-1] + 1 in port_slice() else port_slice().start))
        held.listen()
        busy = held.getsockname()[1]
        assert busy not in {free_port() for _ in range(len(port_slice()))}


GROUPED = """
import os
from pathlib import Path

import pytest


@pytest.fixture
def session_lab():
    return "fake"  # stands for the plugin's fixture: nothing is booted


@pytest.fixture
def stack(session_lab):
    return session_lab


def record(name):
    Path(name + ".worker").write_text(os.environ.get("PYTEST_XDIST_WORKER", "none"))


@pytest.mark.parametrize("n", range(4))
def test_stack(stack, n):
    record(f"stack{n}")


def test_session_lab(session_lab):
    record("lab")


@pytest.mark.parametrize("n", range(6))
def test_plain(n):
    record(f"plain{n}")
"""


def test_rabbitmq_lab_tests_share_one_xdist_group(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["netns.plugin"]\n')
    pytester.makepyfile(test_grouped=GROUPED)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "-v")
    res.assert_outcomes(passed=11)
    group = plugin.RABBITMQ_GROUP
    res.stdout.fnmatch_lines([f"*PASSED*test_stack?0?@{group}*", f"*PASSED*test_session_lab@{group}*"])
    assert "test_plain[0]@" not in res.stdout.str()
    workers = {p.stem: p.read_text() for p in pytester.path.glob("*.worker")}
    grouped = {w for name, w in workers.items() if not name.startswith("plain")}
    assert len(workers) == 11 and len(grouped) == 1 and grouped <= {"gw0", "gw1"}, workers


def test_the_rabbitmq_marker_alone_groups_a_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    rabbitmq: r\n")
    items = pytester.getitems(
        "import pytest\n@pytest.mark.rabbitmq\ndef test_a(): pass\ndef test_b(): pass\n"
    )
    plugin.assign_xdist_groups(items)
    marks = [m.args for i in items for m in i.iter_markers("xdist_group")]
    assert [plugin.uses_rabbitmq_lab(i) for i in items] == [True, False]
    assert marks == [(plugin.RABBITMQ_GROUP,)]
