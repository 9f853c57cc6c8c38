"""netns: network-namespace labs for testing vrrpd and tcplb on real kernel networking.

``from netns import Lab, Host, Switch, Proc, wait_until, WaitTimeout, WaitAborted, dead`` (see README.md,
"The namespace lab").
"""

from netns.lab import (
    CommandError,
    Host,
    Lab,
    LabError,
    NetemUnavailable,
    Node,
    Proc,
    Switch,
    WaitAborted,
    WaitTimeout,
    dead,
    wait_until,
)

__all__ = [
    "CommandError",
    "Host",
    "Lab",
    "LabError",
    "NetemUnavailable",
    "Node",
    "Proc",
    "Switch",
    "WaitAborted",
    "WaitTimeout",
    "dead",
    "wait_until",
]
