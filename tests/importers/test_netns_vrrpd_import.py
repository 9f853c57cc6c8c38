"""Behaviour, not syntax: vrrpd running an imported keepalived.conf next to keepalived running its peer's
original elects and fails over as two keepalived do.

Each scenario runs twice, each run on a lab of its own: keepalived + keepalived (the reference), and vrrpd
(imported from lb1's keepalived.conf) + keepalived (lb2's original). After each step the VIP holder must
settle (one holder, unchanged for longer than a Master_Down_Interval plus a start-up). Both runs must give
the expected list of holders: the reference proves it is what two keepalived do, so vrrpd's equals
keepalived's. The two runs are separate tests (they share nothing), so pytest-xdist runs them side by side.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import Host, Lab, keepalived, wait_until
from rmqfd import kaconf
from vrrpd import importer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vrrpd"))
from vrrpd_lab import Router, topology, vip_holders

pytestmark = [pytest.mark.netns, pytest.mark.keepalived, pytest.mark.slow]

VIP = "192.0.2.100"
HOLD = 6.0  # > start-up (~1 s) + Master_Down_Interval (3.6 s at advert_int 1)

# lb1: the blog-post master, written in the old style (one-line blocks, comments, a 14-character auth_pass
# that keepalived cuts to 8 on the wire)
LB1_MASTER = """! lb1
global_defs { router_id lb1 }
vrrp_instance VI_1 {
    state MASTER                 # no nopreempt: preempts back
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication { auth_type PASS
      auth_pass rmqlab51-longer }
    virtual_ipaddress { 192.0.2.100/24 }
}
"""
LB2_BACKUP = """global_defs {
    router_id lb2
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass rmqlab51
    }
    virtual_ipaddress {
        192.0.2.100/24
    }
}
"""
# nopreempt on both (keepalived wants state BACKUP for it): whoever is master stays master
LB1_NOPREEMPT = LB1_MASTER.replace(
    "state MASTER                 # no nopreempt: preempts back", "state BACKUP\n    nopreempt"
)
LB2_NOPREEMPT = LB2_BACKUP.replace("state BACKUP", "state BACKUP\n    nopreempt")


class Node:
    """keepalived with its own keepalived.conf, or vrrpd with the configuration imported from it."""

    def __init__(self, lab: Lab, host: Host, conf: str, kind: str) -> None:
        self.host = host
        self.kind = kind
        if kind == "keepalived":
            self.ka: keepalived.Keepalived | None = keepalived.Keepalived(
                host, conf, lab.workdir / f"ka-{host.name}"
            )
            self.router: Router | None = None
        else:
            self.ka = None
            doc = kaconf.parse_text(conf, f"{host.name}.conf", config_id=host.name, includes=False)
            text, rep = importer.convert(doc)
            assert text is not None and not rep.blocking, rep.lines()
            sock = str(lab.workdir / f"{host.name}.sock")
            text = text.replace("[global]\n", f'[global]\ncontrol_socket = "{sock}"\n', 1)
            path = lab.workdir / f"{host.name}.toml"
            path.write_text(text)
            self.router = Router(lab, host, path, sock)

    def start(self) -> None:
        if self.ka is not None:
            self.ka.start()
        else:
            assert self.router is not None
            self.router.start()

    def stop(self) -> None:
        """Graceful stop: both send priority 0 and remove the VIP."""
        if self.ka is not None:
            self.ka.stop()
        else:
            assert self.router is not None and self.router.proc is not None
            self.router.proc.term()
            assert self.router.proc.wait(30) == 0  # exits by itself (bounded generously: a busy machine)


def settle(hosts: list[Host], what: str) -> str:
    """The VIP holder once one host has held it alone for HOLD seconds."""
    st: dict[str, object] = {"last": None, "since": time.monotonic()}

    def quiet() -> bool:
        cur = vip_holders(hosts, VIP)
        now = time.monotonic()
        if cur != st["last"]:
            st["last"], st["since"] = cur, now
        return len(cur) == 1 and now - float(st["since"]) >= HOLD  # type: ignore[arg-type]

    wait_until(quiet, 40, interval=0.1, what=f"one VIP holder for {HOLD} s ({what})")
    holders: list[str] = vip_holders(hosts, VIP)
    return holders[0]


Step = Callable[[Node, Node], None]


def run(lab: Lab, kind1: str, conf1: str, conf2: str, steps: list[tuple[str, Step]]) -> list[str]:
    _sw, (h1, h2) = topology(lab, 2)
    n1, n2 = Node(lab, h1, conf1, kind1), Node(lab, h2, conf2, "keepalived")
    out = []
    for what, step in steps:
        step(n1, n2)
        out.append(settle([h1, h2], what))
    n1.stop()
    n2.stop()
    return out


def start_both(a: Node, b: Node) -> None:
    b.start()
    a.start()


PREEMPT_STEPS: list[tuple[str, Step]] = [
    ("both start", lambda a, b: start_both(a, b)),
    ("lb1 stops", lambda a, b: a.stop()),
    ("lb1 restarts", lambda a, b: a.start()),
    ("lb2 stops", lambda a, b: b.stop()),
    ("lb2 restarts", lambda a, b: b.start()),
]
NOPREEMPT_STEPS: list[tuple[str, Step]] = [
    ("lb2 starts first", lambda a, b: b.start()),
    ("lb1 (higher priority) starts", lambda a, b: a.start()),
    ("lb2 stops", lambda a, b: b.stop()),
    ("lb2 restarts", lambda a, b: b.start()),
]


SCENARIOS = {
    "state-master-preempt": (LB1_MASTER, LB2_BACKUP, PREEMPT_STEPS, ["lb1", "lb2", "lb1", "lb1", "lb1"]),
    "nopreempt": (LB1_NOPREEMPT, LB2_NOPREEMPT, NOPREEMPT_STEPS, ["lb2", "lb2", "lb1", "lb1"]),
}


@pytest.mark.parametrize("kind", ["keepalived", "vrrpd"], ids=["keepalived-reference", "imported-vrrpd"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_imported_vrrpd_elects_and_fails_over_as_keepalived(lab: Lab, scenario: str, kind: str) -> None:
    """lb1 is ``kind`` (keepalived: the reference, the scenario is meaningful; vrrpd: imported from lb1's
    keepalived.conf), lb2 is keepalived with its original configuration: the holders after each step are
    what two keepalived give."""
    conf1, conf2, steps, expected = SCENARIOS[scenario]
    assert run(lab, kind, conf1, conf2, steps) == expected
