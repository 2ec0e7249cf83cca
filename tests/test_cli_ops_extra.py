"""`somabrain doctor|migrate|rollout|rotate` without the `ops` extra: one line naming the install, exit 2.

A fast unit test of an error path: the missing dependency is simulated (sys.modules maps `kubernetes` to None,
which the import system reads as "not installed") rather than installing a second environment without it.
"""

from __future__ import annotations

import sys

import pytest

from brain import cli


@pytest.mark.parametrize("tool", ["doctor", "migrate", "rollout", "rotate"])
def test_missing_ops_dependency_is_one_line_and_exit_2(
    tool: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "ops" or m.startswith("ops.")]:
        monkeypatch.delitem(sys.modules, name)  # so the ops package checks its dependencies again
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    assert cli.main([tool, "--help"]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"somabrain {tool}: ")
    assert "kubernetes" in err and "pip install 'somabrain[ops]'" in err
