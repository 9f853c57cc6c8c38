"""Fixtures shared by the tcplb tests that drive the real daemon."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tcplb_helpers import Backend


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    """Three greeting echo backends ``a``, ``b``, ``c`` on loopback, stopped afterwards."""
    bs = [Backend(n) for n in ("a", "b", "c")]
    yield bs
    for b in bs:
        b.stop()
