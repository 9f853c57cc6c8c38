"""The stats page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

Three greeting backends on loopback, the real ``tcplb`` daemon (tcp checks every 1 s, rise 1 fall 1) and
its stats page with basic auth, admin on and ``refresh = "1s"``. The browser opens the page once and only
reads it afterwards: the page refreshes itself. A backend stopped turns its row DOWN, restarted UP; a click
on the real Drain button turns the row DRAIN and no new connection reaches that server. Screenshots are kept
in ``$TEST_ARTIFACTS`` (else ``tests/artifacts/``).

When Chromium is not installed and ``TCPLB_TEST_INSTALL_BROWSER=1`` is not set (with it the test installs
``chromium chromium-driver`` with apt-get first): a skip, but a failure under ``make test`` or CI (the
plugin's missing-capability policy); ``make test`` installs both (Makefile APT_PKGS).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tcplb_helpers import Backend, free_port, lb_toml

from netns import wait_until
from netns.plugin import missing_capability

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USER, PASSWORD = "admin", "s3cret"
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    "--window-size=1920,800",
]


def through_lb(port: int) -> str:
    """One connection through the LB that sends data; returns the name of the backend that served it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        name = f.readline().decode().strip()
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        f.close()
        return name


# ------------------------------------------------------------------------------------------- the browser


def _browser_installed() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def _ensure_browser() -> None:
    if _browser_installed():
        return
    if os.environ.get("TCPLB_TEST_INSTALL_BROWSER") != "1":
        missing_capability(
            f"{CHROMIUM} or {CHROMEDRIVER} missing: `make deps` (or apt-get install chromium "
            "chromium-driver) installs them; TCPLB_TEST_INSTALL_BROWSER=1 lets this test install them"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"],
    ):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
        assert p.returncode == 0, f"{' '.join(argv)} failed: {p.stderr[-2000:]}"
    assert _browser_installed()


def _our_pids(sid: int, marker: str) -> set[int]:
    """Live processes of this browser: chromedriver's session (it runs in its own), plus the crash handlers
    Chromium double-forks into sessions of their own (found by ``marker``, our private directory, in their
    command line). Zombies do not count: they run nothing and their new parent reaps them."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # [0] state, [3] session id
            if fields[0] in "ZX":
                continue
            cmdline = Path(f"/proc/{d}/cmdline").read_bytes().decode("utf-8", "replace")
            if int(fields[3]) == sid or marker in cmdline:
                out.add(int(d))
        except (OSError, ValueError, IndexError):
            continue
    return out


def artifacts_dir() -> Path:
    env = os.environ.get("TEST_ARTIFACTS")
    d = Path(env) if env else REPO / "tests" / "artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium through chromedriver; both (and every Chromium child) are gone afterwards."""
    _ensure_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path / "chromium"  # profile, config (crash reports), cache: nothing outside tmp_path
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in [*CHROME_ARGS, f"--user-data-dir={home / 'profile'}"]:
        opts.add_argument(a)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }
    service = Service(
        CHROMEDRIVER,
        log_output=str(tmp_path / "chromedriver.log"),
        env=env,
        popen_kw={"start_new_session": True},
    )
    driver = webdriver.Chrome(options=opts, service=service)
    assert service.process is not None
    sid = service.process.pid
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            # quit() stops chromedriver and Chromium; make sure, and kill by PID whatever is left
            with contextlib.suppress(Exception):
                wait_until(lambda: not _our_pids(sid, str(home)), 30, what="chromium gone")
            left = _our_pids(sid, str(home))
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _our_pids(sid, str(home)), 30, what="chromium killed")
            assert not left, f"processes left after quit(): {sorted(left)}"


# ------------------------------------------------------------------------------------------- the daemon


class Lb:
    def __init__(self, tmp: Path, backends: list[Backend]) -> None:
        self.port, self.sport = free_port(), free_port()
        self.cfg = tmp / "lb.toml"
        servers = [(b.name, b.port) for b in backends]
        self.cfg.write_text(
            lb_toml(
                self.port,
                servers,
                hard_stop=None,
                retries=None,
                stats=self.sport,
                stats_auth=[f"{USER}:{PASSWORD}"],
                stats_extra='uri = "/stats"\nrefresh = "1s"',
            )
        )
        self.log = tmp / "lb.log"
        self.fh = self.log.open("w")
        self.p = subprocess.Popen(
            [PY, "-m", "tcplb", "-c", str(self.cfg)], stdout=self.fh, stderr=subprocess.STDOUT, cwd=REPO
        )
        wait_until(lambda: "tcplb started" in self.output() or self.p.poll() is not None, 30, what="start")
        assert self.p.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self.fh.close()


@pytest.fixture
def lb(tmp_path: Path, backends: list[Backend]) -> Iterator[Lb]:
    inst = Lb(tmp_path, backends)
    yield inst
    inst.stop()


# ------------------------------------------------------------------------------------------- the test


def test_stats_page_in_chromium(tmp_path: Path, browser: Any, lb: Lb, backends: list[Backend]) -> None:
    from selenium.webdriver.common.by import By

    shots: list[Path] = []

    def shot(name: str) -> None:
        p = tmp_path / f"stats-{name}.png"
        assert browser.save_screenshot(str(p)), name
        dest = artifacts_dir() / f"test_stats_browser-{name}.png"
        shutil.copyfile(p, dest)
        shots.append(dest)

    def status(server: str) -> str:
        # the page replaces itself every second: a stale element is "not yet" for wait_until
        return str(browser.find_element(By.CSS_SELECTOR, f"#srv-t-{server} td.status").text).strip()

    def loaded_at() -> float:
        return float(browser.execute_script("return performance.timeOrigin"))

    def wait_status(server: str, want: str, timeout: float = 30) -> None:
        wait_until(lambda: status(server).split()[0] == want, timeout, interval=0.2, what=f"{server} {want}")

    # basic auth without a prompt: every request of this tab carries the header, form POSTs included
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    page = f"http://127.0.0.1:{lb.sport}/stats"
    browser.get(page)
    try:
        assert "tcplb" in browser.title.lower()
        for s in ("a", "b", "c"):
            wait_status(s, "UP")

        backends[1].stop()
        wait_status("b", "DOWN")  # nobody reloads the page but the page itself
        shot("b-down")
        backends[1].start()
        wait_status("b", "UP")

        wait_until(lambda: browser.find_element(By.ID, "btn-drain-t-a"), 30, what="drain button")
        browser.find_element(By.ID, "btn-drain-t-a").click()
        wait_status("a", "DRAIN")
        assert browser.current_url.startswith(page)  # the form's answer sent us back to the page
        assert "going DOWN" not in lb.output()  # drain is not maintenance

        before = backends[0].served
        got = [through_lb(lb.port) for _ in range(12)]
        assert "a" not in got and set(got) == {"b", "c"}, got
        assert backends[0].served == before
        # one more refresh of the page by itself, so the screenshot shows the sessions on b and c only
        loaded = loaded_at()
        wait_until(lambda: loaded_at() != loaded, 30, interval=0.1, what="the page refreshed itself")
        wait_status("a", "DRAIN")
        shot("a-drain")
    except BaseException:
        with contextlib.suppress(Exception):
            shot("failure")
        raise
    assert all(p.stat().st_size > 1000 for p in shots)
