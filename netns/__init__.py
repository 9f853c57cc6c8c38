"""netns: network-namespace labs for testing vrrpd and tcplb on real kernel networking.

``from netns import Lab, Host, Switch, Proc, wait_until, WaitTimeout`` (see README.md, "The namespace lab").
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
    WaitTimeout,
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
    "WaitTimeout",
    "wait_until",
]
