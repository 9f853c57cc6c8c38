"""The corpus is checked by the real daemons first: Debian's keepalived 2.2.7 (`keepalived --config-test`, in
a namespace whose eth0/eth1 exist, since it checks interfaces) and HAProxy 2.6 (`haproxy -c`). Files written
for older releases are refused by them; every line they complain about is in the import's report."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from test_importers import CONFIG_ID, CORPUS, HAPROXY, KEEPALIVED, LVS, ha_import, ka_import, lvs_import

from netns import Lab

# files the current daemons refuse (the others must be accepted)
KEEPALIVED_REFUSES = {"old_1x.conf", "bad/priority_300.conf", "bad/vrid_0.conf", "lvs_nat_http_old.conf"}
HAPROXY_REFUSES = {"old_1x.cfg", "bad/unknown_balance.cfg"}


@pytest.mark.netns
@pytest.mark.keepalived
def test_keepalived_checks_the_corpus_first(lab: Lab) -> None:
    h = lab.host("kacheck")
    h.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])  # no dummy module here
    for ifname in ("eth0", "eth1"):
        h.run(["ip", "link", "set", ifname, "up"])
    pid = lab.workdir / "ka.pid"
    for group, names, imp in (("keepalived", KEEPALIVED, ka_import), ("lvs", LVS, lvs_import)):
        for name in sorted(names):
            path = CORPUS / group / name
            r = h.run(
                [
                    "keepalived",
                    "-i",
                    CONFIG_ID,
                    "--config-test",
                    "-f",
                    str(path),
                    "-p",
                    str(pid),
                    "-r",
                    str(pid) + ".vrrp",
                    "-c",
                    str(pid) + ".chk",
                ],
                check=False,
                timeout=30,
            )
            refused = r.returncode != 0
            assert refused == (name in KEEPALIVED_REFUSES), (name, r.returncode, r.stderr)
            # every line keepalived complains about is reported by the import, one line each
            _text, rep = imp(name)
            reported = {
                int(f.where.rsplit(":", 1)[1])
                for f in rep.findings
                if Path(f.where.rsplit(":", 1)[0]) == path
            }
            complained = {int(n) for n in re.findall(r"Line (\d+)\)", r.stderr)}
            if refused:
                assert complained and complained <= reported, (name, complained, reported, r.stderr)


@pytest.mark.haproxy
def test_haproxy_checks_the_corpus_first() -> None:
    for name in sorted(HAPROXY):
        path = CORPUS / "haproxy" / name
        r = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
        refused = r.returncode != 0
        assert refused == (name in HAPROXY_REFUSES), (name, r.returncode, r.stdout, r.stderr)
        if refused:
            _text, rep = ha_import(name)
            reported = {int(f.where.rsplit(":", 1)[1]) for f in rep.findings}
            alerts = {
                int(n) for n in re.findall(r"\[ALERT\].*?parsing \[[^\]]*:(\d+)\]", r.stdout + r.stderr)
            }
            assert alerts and alerts <= reported, (name, alerts, reported, r.stdout + r.stderr)
