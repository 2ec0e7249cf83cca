"""`somabrain doctor --env prod` where no cluster answers: exit 3, one message, no traceback. It needs no cluster
and no fake. The doctor on the real cluster (healthy; OPA stopped; a broken stack with one FAIL line per fault)
is tests/cluster/test_doctor_live.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ops import doctor


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_cluster_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main(["--env", "prod", "--kubeconfig", "/nonexistent/kubeconfig"]) == 3
    assert "cannot load" in capsys.readouterr().err

    # a kubeconfig whose API server does not answer (nothing listens on its port)
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{closed_port()}"}}],
        "users": [{"name": "nowhere", "user": {"token": "unused"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nowhere"}}],
    }))
    assert doctor.main(["--env", "prod", "--kubeconfig", str(config)]) == 3
    err = capsys.readouterr().err
    assert "does not answer" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as exc:
        doctor.main(["--env", "staging"])
    assert exc.value.code == 3
