"""How `somabrain rotate` writes to Kubernetes: every change is a PATCH (never GET-then-PUT), and a 409 Conflict is
retried a bounded number of times, re-reading the object, then given up with a clear message and a non-zero exit.

Against the writable Kubernetes API fake (tests/targets/kube_fake.py), extended here (`serve_patches`) with the PATCHes
rotate sends and kube_fake does not serve: a strategic merge of a Deployment's whole pod template (lists merged by
name, null removes a field), a JSON merge patch of a Secret with its resourceVersion precondition, resourceVersions
bumped on every write, and 409 answers on demand. A 409 race (a controller or another operator writing the object
between rotate's read and its write) cannot be made to happen on demand on a real cluster: the fake stands in for
it, and says nothing about a real API server beyond the documented semantics it copies.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ops import rotate
from targets.kube import KubeTarget
from targets.kube_api import CONFLICT_ATTEMPTS
from targets.kube_rollout import RESTARTED_AT
from tests.ops.fake_cluster import REPO, Cluster
from tests.targets.kube_fake import WritableCluster, _status, _wire, _WritableHandler

Resource = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
# patchMergeKey of the pod-spec lists rotate patches (k8s.io/api core/v1 types.go); other lists are replaced whole
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath"}
PATCHED = {"deployments": ("Deployment", STRATEGIC), "secrets": ("Secret", MERGE)}


@dataclass
class FakePatches:
    """What the PATCH-serving fake saw and what it is told to do.

    log: (method, path, Content-Type) of every PUT and PATCH.
    conflicts: "deployments/NAME" or "secrets/NAME" -> how many of the next PATCHes of it to answer 409 Conflict
      (the API server's answer when its own retries of an update run out, or a webhook's).
    between: same keys -> a change another writer makes to the stored object just before the next PATCH of it
      is applied (its resourceVersion moves on, so a PATCH conditional on the version read meets 409).
    """

    log: list[tuple[str, str, str]] = field(default_factory=list)
    conflicts: dict[str, int] = field(default_factory=dict)
    between: dict[str, Callable[[Resource], None]] = field(default_factory=dict)
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def writes(self) -> list[tuple[str, str, str]]:
        return [entry for entry in self.log if entry[0] in ("PUT", "PATCH")]

    def next_version(self) -> str:
        return str(next(self.versions))


def _merge(into: Resource, changes: Resource, keys: dict[str, str]) -> None:
    """RFC 7386 merge when `keys` is empty; with `keys`, the strategic merge of those lists by their merge key."""
    for name, value in changes.items():
        if value is None:
            into.pop(name, None)
        elif isinstance(value, dict):
            if not isinstance(into.get(name), dict):
                into[name] = {}
            _merge(into[name], value, keys)
        elif isinstance(value, list) and name in keys and isinstance(into.get(name), list):
            by_key = {item.get(keys[name]): item for item in into[name]}
            for item in value:
                if item[keys[name]] in by_key:
                    _merge(by_key[item[keys[name]]], item, keys)
                else:
                    added: Resource = {}
                    _merge(added, item, keys)
                    into[name].append(added)
        else:
            into[name] = copy.deepcopy(value)


def _conflict(plural: str, name: str) -> Resource:
    group = "deployments.apps" if plural == "deployments" else plural
    body = _status(409, "Conflict", f'Operation cannot be fulfilled on {group} "{name}": the object has been '
                   "modified; please apply your changes to the latest version and try again")
    body["details"] = {"name": name, "kind": plural}
    return body


class _PatchingHandler(_WritableHandler):
    patches: FakePatches

    def do_PUT(self) -> None:
        self.patches.log.append(("PUT", urlsplit(self.path).path, self.headers.get("Content-Type", "")))
        super().do_PUT()

    def do_PATCH(self) -> None:
        path = urlsplit(self.path).path
        parts = [p for p in path.split("/") if p]
        content_type = self.headers.get("Content-Type", "")
        plural = parts[-2] if len(parts) >= 6 and "namespaces" in parts else ""
        if PATCHED.get(plural, ("", ""))[1] != content_type:
            return super().do_PATCH()  # whatever else kube_fake serves (or refuses), as it does
        kind = PATCHED[plural][0]
        self.patches.log.append(("PATCH", path, content_type))
        changes = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        namespace, name, key = parts[parts.index("namespaces") + 1], parts[-1], f"{plural}/{parts[-1]}"
        stored = self.fake.find(kind, namespace, name)
        if stored is None:
            return self._json(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
        other_writer = self.patches.between.pop(key, None)
        if other_writer is not None:
            other_writer(stored)
            stored["metadata"]["resourceVersion"] = self.patches.next_version()
        if self.patches.conflicts.get(key, 0) > 0:
            self.patches.conflicts[key] -= 1
            return self._json(409, _conflict(plural, name))
        wanted = (changes.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != stored["metadata"].get("resourceVersion"):
            return self._json(409, _conflict(plural, name))  # the precondition of a conditional patch
        body = copy.deepcopy(_wire(stored))
        _merge(body, changes, MERGE_KEYS if kind == "Deployment" else {})
        body["metadata"]["resourceVersion"] = self.patches.next_version()
        if kind == "Deployment":
            return self._json(200, self.fake.replace(kind, namespace, name, body))  # rolls a changed template
        self.fake.add(body)
        return self._json(200, body)


def serve_patches(fake: WritableCluster) -> FakePatches:
    """From now on the running fake also serves rotate's PATCHes (see the module docstring)."""
    patches = FakePatches()
    for obj in fake.objects:
        obj["metadata"].setdefault("resourceVersion", patches.next_version())
    handler = type("Handler", (_PatchingHandler,), {"fake": fake, "patches": patches})
    assert fake._server is not None
    fake._server.RequestHandlerClass = handler
    return patches


def add_secrets(fake: WritableCluster) -> None:
    """The two Secrets rotate changes, as a cluster holds them once they are created (k8s/ renders no Secret: an
    apply would overwrite the real credentials), unless the fake has them already."""
    def b64(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    for name, data in (("somabrain-postgres-app", {"POSTGRES_USER": b64("somabrain"), "POSTGRES_DB": b64("somabrain"),
                                               "POSTGRES_PASSWORD": b64("the-current-password")}),
                       ("somabrain-secrets", {"jwt_pub.pem": b64("-----BEGIN PUBLIC KEY-----...")})):
        if fake.find("Secret", fake.namespace, name) is None:
            fake.add({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                      "metadata": {"name": name, "namespace": fake.namespace,
                                   "labels": {"app.kubernetes.io/part-of": "somabrain"}}})


@pytest.fixture
def patches(cluster: Cluster) -> FakePatches:
    add_secrets(cluster.fake)
    return serve_patches(cluster.fake)


@pytest.fixture
def no_readiness(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the writes; the readiness checks after a roll are test_rotate_jwt's and
    test_rollout's."""
    monkeypatch.setattr(rotate, "readiness_failures", lambda target: [])


def deployment(cluster: Cluster, name: str) -> Resource:
    found: Resource = cluster.fake.find("Deployment", "somabrain-prod", name)
    return found


def secret_data(cluster: Cluster, name: str) -> dict[str, str]:
    return dict(_wire(cluster.fake.find("Secret", "somabrain-prod", name)).get("data") or {})


def public_pem(path: Path) -> Path:
    """A key the API accepts with its default RS256 (an EC key is refused, as the API would refuse it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_restart_is_a_strategic_merge_patch_of_the_template_annotation(
        cluster: Cluster, patches: FakePatches, no_readiness: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: the PATCH-serving fake, here for the happy path (its reason to exist is the 409 races below, which a
    real cluster cannot be made to produce on demand). The restart PATCHes only spec.template.metadata.annotations
    (no PUT, no resourceVersion), and the rest of the template is kept."""
    before = {name: copy.deepcopy(deployment(cluster, name)) for name in rotate.APPS}
    target = KubeTarget(kubeconfig=str(cluster.kubeconfig))

    assert rotate.kube_restart(target, rotate.APPS, 30) == []

    assert [(method, ctype) for method, _, ctype in patches.writes()] == [("PATCH", STRATEGIC)] * len(rotate.APPS)
    assert cluster.fake.puts == [f"Deployment/{name}" for name in rotate.APPS]  # the PATCHes' own writes
    for name in rotate.APPS:
        after = deployment(cluster, name)
        annotations = after["spec"]["template"]["metadata"]["annotations"]
        assert set(annotations) == {RESTARTED_AT}
        template = copy.deepcopy(after["spec"]["template"])
        del template["metadata"]["annotations"]
        assert template == before[name]["spec"]["template"]  # nothing else of the template changed
        assert after["metadata"]["generation"] == before[name]["metadata"].get("generation", 1) + 1
    assert "successfully rolled out" in capsys.readouterr().out


def test_a_409_on_the_first_attempt_is_retried_and_succeeds(
        cluster: Cluster, patches: FakePatches, no_readiness: None) -> None:
    """Fake: stands in for a 409 Conflict the real cluster cannot be made to answer on demand. The restart's
    PATCH of deployment/somabrain is answered 409 once; the retry re-reads and succeeds."""
    patches.conflicts["deployments/somabrain"] = 1
    target = KubeTarget(kubeconfig=str(cluster.kubeconfig))

    assert rotate.kube_restart(target, ("somabrain",), 30) == []

    assert [path.rsplit("/", 1)[1] for _, path, _ in patches.writes()] == ["somabrain", "somabrain"]
    assert RESTARTED_AT in deployment(cluster, "somabrain")["spec"]["template"]["metadata"]["annotations"]
    assert deployment(cluster, "somabrain")["metadata"]["generation"] == 2


def test_repeated_409s_give_up_with_a_clear_message_and_no_traceback(cluster: Cluster, patches: FakePatches,
                                                                     tmp_path: Path) -> None:
    """Fake: stands in for a Deployment the real cluster cannot be made to answer 409 Conflict for on demand,
    every time. `somabrain rotate jwt-key --add`, run as the operator runs it (a process of its own), stores the
    key, tries the restart CONFLICT_ATTEMPTS times, then exits 2 with one message saying what is left to do."""
    patches.conflicts["deployments/somabrain"] = 1000
    pem = public_pem(tmp_path / "new.pem")
    proc = subprocess.run([sys.executable, "-m", "ops.rotate", "jwt-key", "--env", "prod", "--add", str(pem),
                           *cluster.args()], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    message = proc.stderr.strip()
    assert message.startswith("somabrain rotate: Secret somabrain-secrets is changed, but deployment/somabrain "
                              "was not restarted")
    assert f"gave up after {CONFLICT_ATTEMPTS} attempts, each answered 409 Conflict" in message
    assert "the object has been modified" in message  # the API's own words
    assert "to finish: run the same --add" in message
    restarts = [w for w in patches.writes() if w[1].endswith("/deployments/somabrain")]
    assert len(restarts) == CONFLICT_ATTEMPTS
    assert deployment(cluster, "somabrain")["metadata"].get("generation", 1) == 1  # not rolled
    assert pem.read_bytes() in [base64.b64decode(v) for v in secret_data(cluster, "somabrain-secrets").values()]


def test_add_again_after_a_failed_restart_does_not_store_the_key_twice(
        cluster: Cluster, patches: FakePatches, no_readiness: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: stands in for repeated 409s on the restart, which a real cluster cannot be made to answer on demand.
    The message says to run --add again; doing so restarts without a second copy of the key."""
    patches.conflicts["deployments/somabrain"] = CONFLICT_ATTEMPTS
    pem = public_pem(tmp_path / "new.pem")
    args = ["jwt-key", "--env", "prod", "--add", str(pem), *cluster.args()]
    assert rotate.main(args) == 2
    assert rotate.main(args) == 0, capsys.readouterr()
    assert "already holds this key" in capsys.readouterr().out
    values = list(secret_data(cluster, "somabrain-secrets").values())
    assert len(values) == 2 and values.count(base64.b64encode(pem.read_bytes()).decode()) == 1
    assert deployment(cluster, "somabrain")["metadata"]["generation"] == 2
    assert all(method == "PATCH" for method, _, _ in patches.writes())


def test_retire_is_conditional_a_write_in_between_is_reread(
        cluster: Cluster, patches: FakePatches, no_readiness: None, tmp_path: Path) -> None:
    """Fake: stands in for another writer changing the Secret between rotate's read and its PATCH, a race the real
    cluster cannot be made to run on demand. --retire's merge patch carries the resourceVersion it read: the
    write in between makes it a 409, and the retry decides again on what the Secret holds then."""
    secret = cluster.fake.find("Secret", "somabrain-prod", "somabrain-secrets")
    old, new = (base64.b64encode(public_pem(tmp_path / f"{n}.pem").read_bytes()).decode() for n in ("old", "new"))
    secret.pop("stringData", None)
    secret["data"] = {"jwt_pub.pem": old, "jwt_pub_20260101000000.pem": new}
    patches.between["secrets/somabrain-secrets"] = (
        lambda s: s["metadata"].setdefault("annotations", {}).update({"touched-by": "someone else"}))

    assert rotate.main(["jwt-key", "--env", "prod", "--retire", *cluster.args()]) == 0

    secret_writes = [w for w in patches.writes() if "/secrets/" in w[1]]
    assert secret_writes == [("PATCH", "/api/v1/namespaces/somabrain-prod/secrets/somabrain-secrets", MERGE)] * 2
    stored = cluster.fake.find("Secret", "somabrain-prod", "somabrain-secrets")
    assert stored["data"] == {"jwt_pub_20260101000000.pem": new}
    assert stored["metadata"]["annotations"] == {"touched-by": "someone else"}  # the other write is kept


def test_retire_never_removes_the_last_key_when_the_kept_one_went_in_between(
        cluster: Cluster, patches: FakePatches, no_readiness: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: stands in for another writer removing the key --retire means to keep, between its read and its
    write: a race the real cluster cannot be made to run on demand. An unconditional patch would then remove the
    only key left and the API would accept no token; the conditional one meets 409, re-reads, finds one key."""
    secret = cluster.fake.find("Secret", "somabrain-prod", "somabrain-secrets")
    old, new = (base64.b64encode(public_pem(tmp_path / f"{n}.pem").read_bytes()).decode() for n in ("old", "new"))
    secret.pop("stringData", None)
    secret["data"] = {"jwt_pub.pem": old, "jwt_pub_20260101000000.pem": new}
    patches.between["secrets/somabrain-secrets"] = lambda s: s["data"].pop("jwt_pub_20260101000000.pem")

    assert rotate.main(["jwt-key", "--env", "prod", "--retire", *cluster.args()]) == 3
    assert "holds ['jwt_pub.pem']: nothing to retire" in capsys.readouterr().err
    assert secret_data(cluster, "somabrain-secrets") == {"jwt_pub.pem": old}
    assert not [w for w in patches.writes() if "/deployments/" in w[1]]  # nothing restarted


def test_postgres_password_by_patches_and_undone_when_the_restart_gives_up(
        cluster: Cluster, patches: FakePatches, no_readiness: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: stands in for a Deployment answering 409 Conflict on every attempt, which the real cluster cannot be
    made to do on demand (and the role's ALTER ROLE is recorded, not run). First a rotation that works: one merge
    patch of POSTGRES_PASSWORD, both Deployments restarted by PATCH. Then one whose restart gives up: the old
    password goes back on the role and in the Secret, the apps are rolled again, exit 2 with the reason."""
    roles: list[tuple[str, str]] = []
    monkeypatch.setattr(rotate, "set_role_password", lambda target, user, password: roles.append((user, password)))
    before = secret_data(cluster, "somabrain-postgres-app")
    user = base64.b64decode(before["POSTGRES_USER"]).decode()

    assert rotate.main(["postgres-password", "--env", "prod", *cluster.args()]) == 0, capsys.readouterr()
    rotated = secret_data(cluster, "somabrain-postgres-app")
    password = base64.b64decode(rotated["POSTGRES_PASSWORD"]).decode()
    assert roles == [(user, password)] and rotated == {**before, "POSTGRES_PASSWORD": rotated["POSTGRES_PASSWORD"]}
    # stage the new password as POSTGRES_PASSWORD_PENDING, promote it, restart both
    assert [(w[0], w[2]) for w in patches.writes()] == [("PATCH", MERGE)] * 2 + [("PATCH", STRATEGIC)] * 2

    roles.clear()
    patches.conflicts["deployments/somabrain"] = CONFLICT_ATTEMPTS  # somamemory rolls, somabrain gives up
    capsys.readouterr()
    assert rotate.main(["postgres-password", "--env", "prod", *cluster.args()]) == 2
    err = capsys.readouterr().err
    assert "the apps are not ready with the new password" in err
    assert "undone: the old password is back on the role and in Secret somabrain-postgres-app" in err
    assert f"restart of deployment/somabrain: gave up after {CONFLICT_ATTEMPTS} attempts" in err
    assert [r[1] for r in roles][1:] == [password]  # the new one, then the previous one back
    assert secret_data(cluster, "somabrain-postgres-app") == rotated
    assert all(method == "PATCH" for method, _, _ in patches.writes())
