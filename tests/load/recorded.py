"""Recorded Docker Engine answers the load/ tests replay (fixtures/*.json: docker inspect and one-shot stats)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())
