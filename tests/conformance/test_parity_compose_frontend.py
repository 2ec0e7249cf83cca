"""The gate's Compose side reads what real Compose renders: override files layered with `-f`, `!reset` and
`!override`, anchors and merge keys, profiles, interpolation from the env file and from defaults, volumes merged
by target. Each case copies compose/ and k8s/, changes ONE thing through that Compose feature and checks that
the gate exits 1 naming the right dimension and subject (and, where the feature can hide a change, that the
same tree without it is clean)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.inventory import ONE_SHOTS, SERVICES
from conformance.loaders.compose import Mount, default_files, load_project
from tests.conformance.gate import REPO, GateResult, compose_service, edit_yaml, run_gate

CREDENTIALS = ("POSTGRES_USER=somabrain\nPOSTGRES_PASSWORD=test-only\nPOSTGRES_DB=somabrain\n"
               "POSTGRES_APP_USER=somabrain_app\nPOSTGRES_APP_PASSWORD=test-only-app\n"
               "SOMABRAIN_MEMORY_TOKEN=test-only-service-token-0123456789abcdef\n")
PGDATA = "/var/lib/postgresql/data"


def override(tree: Path, text: str) -> Path:
    """An override file beside the base file, to layer with `--compose` (as `docker compose -f A -f B`)."""
    path = tree / "compose" / "docker-compose.test.yml"
    path.write_text(text)
    return path


def layered(tree: Path, capsys: pytest.CaptureFixture[str], *files: Path) -> GateResult:
    """The gate on compose/docker-compose.yml with `files` layered on top (run_gate passes the base file first)."""
    return run_gate(tree, capsys, *(arg for f in files for arg in ("--compose", str(f))))


def replace_in_base(tree: Path, old: str, new: str) -> None:
    """Edit compose/docker-compose.yml as text, so its anchors and merge keys stay as written."""
    path = tree / "compose" / "docker-compose.yml"
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in docker-compose.yml any more: update this test"
    path.write_text(text.replace(old, new))


def test_the_repos_compose_files_load_as_compose_renders_them() -> None:
    """The default files, and the two overrides the READMEs tell users to layer with -f. (The gate on the repo and
    on a copy of it: test_cli.test_the_repo_passes_fast_with_markdown_output, test_parity_mutations.)"""
    compose = REPO / "compose"
    base = load_project(None, repo_root=REPO, environ={})
    assert base.files == default_files(compose)
    assert set(base.services) == {s.compose for s in SERVICES} | {o.compose for o in ONE_SHOTS}
    dev = load_project([compose / "docker-compose.yml", compose / "docker-compose.dev.yml"], environ={})
    api = dev.services["somabrain"]
    assert api.command == ("api", "--reload") and api.environment["PYTHONPATH"].value.value == "/src"
    assert Mount("/src/brain", "bind", str(REPO / "brain"), read_only=True) in api.mounts
    airgap = load_project([compose / "docker-compose.yml", compose / "docker-compose.airgap.yml"], environ={})
    assert {s.image.value for s in airgap.services.values() if s.image} == {
        f"somabrain-airgap/{name}:local"
        for name in ("somabrain", "redis", "kafka", "opa", "postgres", "prometheus", "nginx")
    }


def test_override_file_layered_with_f(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compose/docker-compose.dev.yml (DEV=1 make up) switching the predictor: drift only with the file layered."""
    dev = tree / "compose" / "docker-compose.dev.yml"
    edit_yaml(dev, lambda d: d["services"]["somabrain"]["environment"].update(SOMABRAIN_PREDICTOR_PROVIDER="stub"))
    subject = ("env", "somabrain/SOMABRAIN_PREDICTOR_PROVIDER")
    assert subject not in run_gate(tree, capsys).drifts()
    result = layered(tree, capsys, dev)
    assert result.code == 1 and subject in result.drifts(), result.drifts()
    assert result.by_subject(*subject)["dev"] == "stub"


@pytest.mark.parametrize(
    ("text", "dimension", "subject"),
    [
        ("services:\n  somabrain:\n    cap_drop: !reset []\n", "security", "somabrain/capabilities"),
        ("services:\n  sb_opa:\n    healthcheck: !reset {}\n", "health", "sb_opa/readiness"),
    ],
    ids=["cap_drop", "healthcheck"],
)
def test_reset_removes_what_the_base_file_sets(
    tree: Path, capsys: pytest.CaptureFixture[str], text: str, dimension: str, subject: str
) -> None:
    result = layered(tree, capsys, override(tree, text))
    assert result.code == 1, result.stderr
    assert (dimension, subject) in result.drifts(), result.drifts()


def test_override_replaces_a_list_instead_of_merging_it(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "services:\n  sb_redis:\n    ports: !override ['127.0.0.1:6380:6380']\n"
    path = override(tree, text)
    ports = load_project([tree / "compose" / "docker-compose.yml", path]).services["sb_redis"].ports
    assert [p.target for p in ports] == [6380]  # without `!override`, Compose merges the lists: [6379, 6380]
    result = layered(tree, capsys, path)
    assert result.code == 1 and ("ports", "sb_redis/container-ports") in result.drifts(), result.drifts()


def test_a_value_seen_through_an_anchor_and_merge_key(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """somabrain and somamemory take read_only from `x-somabrain-runtime` through `<<: [..., *somabrain_runtime]`."""
    replace_in_base(tree, "\n  read_only: true\n", "\n  read_only: false\n")  # the anchor's (sb_ingress's is indented)
    result = run_gate(tree, capsys)
    assert result.code == 1
    for service in ("somabrain", "somamemory"):
        assert ("security", f"{service}/read-only-rootfs") in result.drifts(), result.drifts()


def test_a_service_in_an_inactive_profile_is_not_run(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose_service(tree, "prometheus", lambda s: s.update(profiles=["monitoring"]))
    result = run_gate(tree, capsys)
    assert result.code == 1 and ("mapping", "prometheus") in result.drifts(), result.drifts()
    assert "not in the compose file" in result.by_subject("mapping", "prometheus")["reason"]
    enabled = run_gate(tree, capsys, "--profile", "monitoring")
    assert enabled.code == 0, enabled.drifts()


@pytest.mark.parametrize(
    ("default", "env_file", "shell", "drift"),
    [
        ("7.2", "REDIS_TAG=7.4\n", None, True),  # the env file sets a drifting value
        ("7.4", "", None, True),  # the default drifts, nothing overrides it
        ("7.4", "REDIS_TAG=7.2\n", None, False),  # the env file wins over the default
        ("7.2", "REDIS_TAG=7.4\n", "7.2", False),  # the shell wins over the env file
    ],
    ids=["env-file-drifts", "default-drifts", "env-file-over-default", "shell-over-env-file"],
)
def test_interpolation_from_the_env_file_and_defaults(
    tree: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    default: str,
    env_file: str,
    shell: str | None,
    drift: bool,
) -> None:
    replace_in_base(tree, "image: redis:7.2-alpine", "image: redis:${REDIS_TAG:-" + default + "}-alpine")
    path = tree / "test.env"
    path.write_text(CREDENTIALS + env_file)
    if shell is not None:
        monkeypatch.setenv("REDIS_TAG", shell)
    result = run_gate(tree, capsys, "--env-file", str(path))
    assert (("image", "sb_redis") in result.drifts()) is drift, result.drifts()
    assert result.code == (1 if drift else 0)


def test_a_missing_required_variable_is_an_input_error(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With an env file, no placeholders: Compose refuses, and the gate says so in one line (exit 2)."""
    path = tree / "test.env"
    # Exactly one missing (of several, Compose would name any one).
    kept = [line for line in CREDENTIALS.splitlines() if not line.startswith("POSTGRES_PASSWORD=")]
    path.write_text("\n".join(kept) + "\n")
    result = run_gate(tree, capsys, "--env-file", str(path))
    assert result.code == 2
    assert "required variable POSTGRES_PASSWORD is missing a value: run scripts/dev_up.sh first" in result.stderr
    assert str(tree / "compose" / "docker-compose.yml") in result.stderr and len(result.stderr.splitlines()) == 1


def test_env_file_credentials_come_from_the_env_file(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A credential moved into a service's env_file is still no literal in the compose file."""
    (tree / "compose" / "postgres.env").write_text(CREDENTIALS)
    compose_service(tree, "sb_postgres", lambda s: [s.pop("environment"), s.update(env_file=["postgres.env"])])
    result = run_gate(tree, capsys)
    finding = result.by_subject("security", "sb_postgres/POSTGRES_PASSWORD")
    assert finding["status"] == "ok" and finding["dev"] == "env_file postgres.env", finding


@pytest.mark.parametrize(
    ("volume", "mount", "status", "dev"),
    [
        ("pgdata_dev", Mount(PGDATA, "volume", "pgdata_dev"), "ok", "persistent (volume pgdata_dev)"),
        ("./pgdata", None, "drift", "host bind mount"),
    ],
    ids=["other-volume", "bind-mount"],
)
def test_a_volume_overridden_on_the_same_target_is_one_mount(
    tree: Path, capsys: pytest.CaptureFixture[str], volume: str, mount: Mount | None, status: str, dev: str
) -> None:
    """Compose merges volumes by target: the override's mount replaces the base file's, no phantom second one."""
    text = f"services:\n  sb_postgres:\n    volumes: ['{volume}:{PGDATA}']\nvolumes: {{pgdata_dev: {{}}}}\n"
    path = override(tree, text)
    project = load_project([tree / "compose" / "docker-compose.yml", path])
    mounts = [m for m in project.services["sb_postgres"].mounts if m.target == PGDATA]
    assert mounts == [mount or Mount(PGDATA, "bind", str(tree / "compose" / "pgdata"))]
    result = layered(tree, capsys, path)
    finding = result.by_subject("storage", f"sb_postgres:{PGDATA}")
    assert finding["status"] == status and finding["dev"].startswith(dev), finding
    assert result.code == (1 if status == "drift" else 0), result.drifts()
