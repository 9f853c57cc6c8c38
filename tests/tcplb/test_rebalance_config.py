"""``[listen.NAME.rebalance]``: defaults, every key's rule (errors name the key path), the management
requirement, and the dump round trip."""

from __future__ import annotations

import pytest

from tcplb import config
from tcplb.config import Rebalance

MGMT = 'check = { type = "rabbitmq", management = { user = "a", password = "b" } }'


def _text(rebalance: str, check: str = MGMT, extra_server: str = "") -> str:
    return f"""
[listen.r]
bind = ["127.0.0.1:5000"]
{check}
server = [{{ name = "a", address = "127.0.0.1:1" }}, {{ name = "b", address = "127.0.0.1:2"{extra_server} }}]
[listen.r.rebalance]
{rebalance}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as ei:
        config.loads(text)
    return ei.value.lines()


def test_defaults_off() -> None:
    li = config.loads(_text("")).listener("r")
    assert li.rebalance == Rebalance() and not li.rebalance.active
    assert li.rebalance.tolerance == 0.10 and li.rebalance.rate == 1.0 and li.rebalance.min_age == 10.0
    assert li.rebalance.max_lifetime is None and li.rebalance.delay_after_up is None
    # no table at all: the same
    no_table = """
[listen.r]
bind = ["127.0.0.1:5000"]
server = [{ name = "a", address = "127.0.0.1:1" }]
"""
    assert config.loads(no_table).listener("r").rebalance == Rebalance()


def test_all_keys_and_round_trip() -> None:
    cfg = config.loads(
        _text(
            'enabled = true\ntolerance = 0.2\nrate = 2.5\nburst = 4\ndelay_after_up = "30s"\n'
            'settle = "5s"\nmin_age = "1m"\nmax_lifetime = "2h"\nlifetime_jitter = 0.3'
        )
    )
    rb = cfg.listener("r").rebalance
    assert rb == Rebalance(True, 0.2, 2.5, 4, 30.0, 5.0, 60.0, 7200.0, 0.3) and rb.active
    assert config.parse(config.dump(cfg, secrets=True)) == cfg


@pytest.mark.parametrize(
    ("line", "path", "words"),
    [
        ("enabled = 1", "listen.r.rebalance.enabled", "true or false"),
        ("tolerance = -0.1", "listen.r.rebalance.tolerance", "0..10"),
        ('tolerance = "10%"', "listen.r.rebalance.tolerance", "fraction"),
        ("rate = 0", "listen.r.rebalance.rate", "closes per second"),
        ("burst = 0", "listen.r.rebalance.burst", "1..100000"),
        ('delay_after_up = "soon"', "listen.r.rebalance.delay_after_up", "duration"),
        ("max_lifetime = 0", "listen.r.rebalance.max_lifetime", "greater than 0"),
        ("lifetime_jitter = 2", "listen.r.rebalance.lifetime_jitter", "0..1"),
        ("enable = true", "listen.r.rebalance.enable", "unknown key"),
    ],
)
def test_bad_values_name_the_key(line: str, path: str, words: str) -> None:
    errs = _errors(_text(line))
    assert any(e.startswith(path + ":") and words in e for e in errs), errs


def test_not_a_table() -> None:
    text = """
[listen.r]
bind = ["127.0.0.1:5000"]
rebalance = true
server = [{ name = "a", address = "127.0.0.1:1" }]
"""
    errs = _errors(text)
    assert any(e.startswith("listen.r.rebalance:") for e in errs), errs


@pytest.mark.parametrize("line", ["enabled = true", 'max_lifetime = "1h"'])
def test_needs_management_on_every_server(line: str) -> None:
    key = line.split(" ")[0]
    errs = _errors(_text(line, extra_server=", check = { management = false }"))
    assert any(
        e.startswith(f"listen.r.rebalance.{key}:")
        and "server b (listen.r.server[1]) has no check.management" in e
        and "administrator" in e
        for e in errs
    ), errs
    errs = _errors(_text(line, check='check = { type = "tcp" }'))
    assert sum(1 for e in errs if "has no check.management" in e) == 2, errs
    # off: no requirement
    config.loads(_text("enabled = false", check='check = { type = "tcp" }'))


def test_not_in_defaults() -> None:
    text = """
[defaults]
rebalance = { enabled = true }
[listen.r]
bind = ["127.0.0.1:5000"]
server = [{ name = "a", address = "127.0.0.1:1" }]
"""
    errs = _errors(text)
    assert any(e.startswith("defaults.rebalance:") and "unknown key" in e for e in errs), errs
