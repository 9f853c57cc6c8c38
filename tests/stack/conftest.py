"""Scenario helpers: figures of each scenario are written to netns-artifacts/figures/<test>.json."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from netns.stack import Outcome


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[Outcome], None]:
    def save(outcome: Outcome) -> None:
        out = Path(str(request.config.rootpath)) / "netns-artifacts" / "figures"
        out.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        (out / f"{safe}.json").write_text(json.dumps(outcome.figures(), indent=1))
        print(outcome.report())

    return save
