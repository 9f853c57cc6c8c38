"""The missing-capability policy of netns.plugin: under `make test` or CI a missing capability FAILS.

No namespaces needed: the policy function is called directly, and pytester runs small suites through the
real plugin hooks with the capability made to look missing.
"""

from __future__ import annotations

import pytest

import netns.plugin as plugin

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(
    ("env", "required"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "1"}, True),
        ({"CI": ""}, False),
        ({"CI": "false"}, False),
        ({"RMQFD_REQUIRE_ALL": "1"}, True),
        ({"RMQFD_REQUIRE_ALL": "0"}, False),
        ({"RMQFD_REQUIRE_ALL": "0", "CI": "true"}, False),  # make test-unit on a CI machine
        ({"RMQFD_REQUIRE_ALL": "1", "CI": "false"}, True),
    ],
)
def test_required_from_the_environment(env: dict[str, str], required: bool) -> None:
    assert plugin.capabilities_required(env) is required


def test_required_missing_capability_fails() -> None:
    with pytest.raises(pytest.fail.Exception) as info:
        plugin.missing_capability("needs Debian's haproxy", environ={"RMQFD_REQUIRE_ALL": "1"})
    assert "missing capability: needs Debian's haproxy" in str(info.value)
    assert "make test-unit" in str(info.value)
    with pytest.raises(pytest.fail.Exception):
        plugin.missing_capability("needs root", environ={"CI": "true"})


def test_kernel_limit_skips_even_when_required() -> None:
    with pytest.raises(pytest.skip.Exception, match="sch_netem"):
        plugin.missing_capability("no sch_netem", kernel_limit=True, environ={"RMQFD_REQUIRE_ALL": "1"})


def test_not_required_skips() -> None:
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        plugin.missing_capability("needs root", environ={})
    with pytest.raises(pytest.skip.Exception):
        plugin.missing_capability("needs root", environ={"RMQFD_REQUIRE_ALL": "0", "CI": "1"})


SUITE = """
import pytest

pytestmark = pytest.mark.{marker}

def test_needs_it():
    pass
"""

CONFTEST = 'pytest_plugins = ["netns.plugin"]\n'
INI = """
[pytest]
markers =
    netns: n
    rabbitmq: r
    keepalived: k
    haproxy: h
    slow: s
    stress: s
"""


def _suite(pytester: pytest.Pytester, marker: str) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE.format(marker=marker))


@pytest.mark.parametrize("marker", ["rabbitmq", "keepalived", "haproxy"])
def test_plugin_fails_a_test_whose_package_is_missing_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    monkeypatch.setitem(plugin._PACKAGES, marker, ("/nonexistent/" + marker, f"Debian's {marker}"))
    _suite(pytester, marker)
    monkeypatch.setenv("RMQFD_REQUIRE_ALL", "1")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines([f"*missing capability: needs Debian's {marker} (/nonexistent/{marker})*"])


def test_plugin_skips_when_not_required(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(plugin._PACKAGES, "haproxy", ("/nonexistent/haproxy", "Debian's haproxy"))
    _suite(pytester, "haproxy")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("RMQFD_REQUIRE_ALL", "0")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    res.assert_outcomes(skipped=1)


def test_plugin_fails_netns_tests_without_namespaces_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin, "netns_unusable", lambda: "needs root (network namespaces)")
    _suite(pytester, "netns")
    monkeypatch.delenv("RMQFD_REQUIRE_ALL", raising=False)
    monkeypatch.setenv("CI", "true")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*missing capability: needs root (network namespaces)*"])


def test_netns_probe_retries_a_transient_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["network namespaces unusable: Device or resource busy", ""])
    calls: list[int] = []

    def probe() -> str:
        calls.append(1)
        return next(answers)

    monkeypatch.setattr(plugin, "_NETNS_OK", False)
    monkeypatch.setattr(plugin.os, "geteuid", lambda: 0)
    monkeypatch.setattr(plugin.shutil, "which", lambda name: "/usr/sbin/ip")
    monkeypatch.setattr(plugin, "_probe_netns", probe)
    monkeypatch.setattr(plugin.time, "sleep", lambda s: None)
    assert plugin.netns_unusable() is None
    assert len(calls) == 2
    assert plugin.netns_unusable() is None  # success is remembered
    assert len(calls) == 2


def test_netns_probe_failure_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["busy"] * plugin.PROBE_ATTEMPTS + [""])
    monkeypatch.setattr(plugin, "_NETNS_OK", False)
    monkeypatch.setattr(plugin.os, "geteuid", lambda: 0)
    monkeypatch.setattr(plugin.shutil, "which", lambda name: "/usr/sbin/ip")
    monkeypatch.setattr(plugin, "_probe_netns", lambda: next(answers))
    monkeypatch.setattr(plugin.time, "sleep", lambda s: None)
    assert plugin.netns_unusable() == f"busy ({plugin.PROBE_ATTEMPTS} attempts)"
    assert plugin.netns_unusable() is None  # the next test probes again
