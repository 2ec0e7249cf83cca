"""`somabrain rotate postgres-password | jwt-key`: change a credential while the service keeps answering.

    somabrain rotate postgres-password --env dev  [--compose-project P] [--env-file .env.local]
    somabrain rotate postgres-password --env prod [--kube-context C]
    somabrain rotate jwt-key --env prod --add NEW_PUBLIC.pem      (phase 1: both keys verify)
    somabrain rotate jwt-key --env prod --retire                  (phase 2, once no old token is alive)

postgres-password: a new random password is set on the role with ALTER ROLE (open connections stay logged in;
Postgres keeps one password per role, so the old one stops working for NEW connections at that moment), then the
credential is updated where the apps read it (.env.local in dev, Secret somabrain-postgres in prod), the apps are
rolled (compose: `up -d --no-deps somamemory somabrain`; prod: a rolling restart, maxUnavailable 0, so an old pod
serves on its open connections until its replacement is Ready), and the conformance readiness rules are checked.
If the apps do not become ready with the new password, the old one is put back on the role and in the store.

jwt-key: the API verifies with every *.pem of SOMABRAIN_JWT_PUBLIC_KEY_PATH when it is a directory (brain/auth.py).
--add stores the new public key next to the old one in Secret somabrain-secrets, projects every key of the Secret
into /secrets and points SOMABRAIN_JWT_PUBLIC_KEY_PATH at the directory, then rolls the API: tokens signed by the
old or the new private key are both accepted. --retire removes every key but the newest and rolls again.

On Kubernetes nothing is replaced whole (GET then PUT meets 409 Conflict whenever a controller writes the object in
between, as the Deployment controller does with `status` all through a rollout): a Deployment is restarted by a
strategic-merge PATCH of `spec.template.metadata.annotations` (kubectl.kubernetes.io/restartedAt, as `kubectl
rollout restart` does), a Secret's keys change by a JSON merge PATCH of `data`. A write that may still meet 409 is
retried a few times, re-reading the object (ops.kube_api.retry_conflicts), then given up with the reason.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from conformance.targets.base import Target
from conformance.targets.compose import ComposeTarget
from conformance.targets.kube import KubeTarget
from ops import pg
from ops.common import (
    EXIT_BROKEN,
    EXIT_OK,
    EXIT_USAGE,
    REPO,
    OpsError,
    UsageParser,
    add_target_arguments,
    build_target,
    fail,
    reachable,
    read_env_file,
)
from ops.kube_api import KubeError, deployment_path, get, merge_patch, patch, retry_conflicts, secret_path
from ops.readiness import readiness_failures
from ops.rollout import wait

PROG = "somabrain rotate"
APPS = ("somamemory", "somabrain")
PG_SECRET = "somabrain-postgres"  # noqa: S105 - a Secret's name
JWT_SECRET = "somabrain-secrets"  # noqa: S105 - a Secret's name
JWT_DIR = "/secrets"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets


def say(message: str) -> None:
    print(message, flush=True)


# --- postgres ----------------------------------------------------------------------------------------------
def set_role_password(target: Target, user: str, password: str) -> None:
    pg.identifier(user)
    literal = password.replace("'", "''")
    pg.psql(target, stdin=f"ALTER ROLE \"{user}\" PASSWORD '{literal}';\n\\q\n".encode()).check("ALTER ROLE")


def write_env_value(path: Path, key: str, value: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in lines]
    if not any(line.startswith(f"{key}=") for line in lines):
        out.append(f"{key}={value}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
    tmp.chmod(path.stat().st_mode & 0o777)
    tmp.replace(path)


def compose_roll(target: ComposeTarget, env_file: Path, timeout: float) -> list[str]:
    cmd = ["docker", "compose", "-p", target.project, "--env-file", str(env_file),
           "-f", str(REPO / "compose/docker-compose.yml"), "-f", str(REPO / "compose/docker-compose.airgap.yml"),
           "up", "-d", "--no-deps", "--no-build", "--wait", *APPS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        return [f"`{' '.join(cmd[:4])} ... up` failed: {proc.stderr.strip()[-400:]}"]
    target.containers(refresh=True)
    return readiness_failures(target)


def restart_stamp() -> str:
    """The value of kubectl.kubernetes.io/restartedAt: RFC 3339 as `kubectl rollout restart` writes it, to the
    microsecond, so two restarts within one second (a rollback right after a failed roll) still change the
    template and roll."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _restart_one(target: KubeTarget, name: str, stamp: str,
                 pod_spec: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
    """One attempt: PATCH the pod template (strategic merge, as `kubectl rollout restart` does). No resourceVersion
    is sent, so the Deployment controller writing `status` meanwhile is no conflict; a 409 can still come back (the
    API server's own retries of the update run out, a webhook), then retry_conflicts calls this again. The
    Deployment is read (again) only for `pod_spec`: the annotation alone depends on nothing read."""
    path = deployment_path(target, name)
    template: dict[str, Any] = {"metadata": {"annotations": {RESTARTED_AT: stamp}}}
    if pod_spec is not None:
        template["spec"] = pod_spec(get(target, path))
    patch(target, path, {"spec": {"template": template}})


def kube_restart(target: KubeTarget, names: tuple[str, ...], timeout: float,
                 pod_spec: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[str]:
    """Roll `names` (each by one PATCH, retried on 409), wait for them, check readiness: the problems found.
    `pod_spec(deployment)` returns more strategic-merge changes of the pod spec, made in the same PATCH.
    Raises KubeError when a PATCH is refused, or still meets 409 Conflict after CONFLICT_ATTEMPTS."""
    stamp = restart_stamp()
    for name in names:
        retry_conflicts(partial(_restart_one, target, name, stamp, pod_spec), f"restart of deployment/{name}")
    problems = []
    for name in names:
        ok, message = wait(target, name, timeout)
        say(f"deployment/{name}: {message}")
        if not ok:
            problems.append(f"deployment/{name}: {message}")
    return problems or readiness_failures(target)


def set_secret_value(target: KubeTarget, name: str, key: str, b64: str) -> None:
    """Set one key of a Secret's `data` by a JSON merge patch. Unconditional on purpose: the value written does not
    depend on the rest of the Secret (the role's password was just set to it), so a change of another key
    meanwhile is kept by the server-side merge and is no reason to fail."""
    retry_conflicts(lambda: merge_patch(target, secret_path(target, name), {"data": {key: b64}}),
                    f"update of Secret {name} key {key}")


def rotate_postgres(target: Target, env_file: Path, timeout: float) -> int:
    new = secrets.token_hex(24)
    if isinstance(target, ComposeTarget):
        env = read_env_file(env_file)
        user, old = env.get("POSTGRES_USER", ""), env.get("POSTGRES_PASSWORD", "")
        if not user or not old:
            raise OpsError(f"{env_file} has no POSTGRES_USER/POSTGRES_PASSWORD (run scripts/dev_up.sh)", EXIT_USAGE)
        set_role_password(target, user, new)
        say(f"role {user}: new password set (open connections stay logged in)")
        write_env_value(env_file, "POSTGRES_PASSWORD", new)
        say(f"{env_file}: POSTGRES_PASSWORD updated; rolling {', '.join(APPS)}")
        problems = compose_roll(target, env_file, timeout)
        if problems:
            set_role_password(target, user, old)
            write_env_value(env_file, "POSTGRES_PASSWORD", old)
            compose_roll(target, env_file, timeout)
            raise OpsError("the apps are not ready with the new password; the old one is back:\n  "
                           + "\n  ".join(problems))
    elif isinstance(target, KubeTarget):
        secret = get(target, secret_path(target, PG_SECRET))
        data = secret.get("data") or {}
        user = base64.b64decode(data.get("POSTGRES_USER", "")).decode()
        old_b64 = data.get("POSTGRES_PASSWORD", "")
        if not user or not old_b64:
            raise OpsError(f"Secret {PG_SECRET} has no POSTGRES_USER/POSTGRES_PASSWORD", EXIT_USAGE)
        set_role_password(target, user, new)
        say(f"role {user}: new password set (open connections stay logged in)")
        try:
            set_secret_value(target, PG_SECRET, "POSTGRES_PASSWORD", base64.b64encode(new.encode()).decode())
            say(f"Secret {PG_SECRET}: POSTGRES_PASSWORD updated; rolling restart of {', '.join(APPS)}")
            problems = kube_restart(target, APPS, timeout)
        except KubeError as exc:
            # The role already has the new password: an app not given it cannot open a connection. Undo.
            problems = [str(exc)]
        if problems:
            set_role_password(target, user, base64.b64decode(old_b64).decode())
            try:
                set_secret_value(target, PG_SECRET, "POSTGRES_PASSWORD", old_b64)
                kube_restart(target, APPS, timeout)
            except KubeError as exc:
                raise OpsError("the apps are not ready with the new password, and putting the old one back "
                               f"stopped half-way: the role has the old password again, but {exc}\n  check "
                               f"POSTGRES_PASSWORD in Secret {PG_SECRET}, then: kubectl rollout restart "
                               f"deployment/{' deployment/'.join(APPS)} -n {target.namespace}\n  first failure: "
                               + "\n  ".join(problems)) from None
            raise OpsError("the apps are not ready with the new password; the old one is back:\n  "
                           + "\n  ".join(problems))
    say("readiness: OK with the new password; the old password no longer opens connections")
    return EXIT_OK


# --- jwt ---------------------------------------------------------------------------------------------------
def _project_all_keys(deployment: dict[str, Any]) -> dict[str, Any]:
    """Strategic-merge changes of the API's pod spec: every key of the Secret becomes a file in /secrets (the
    `items` of volume jwt, merged by name, set to null) and SOMABRAIN_JWT_PUBLIC_KEY_PATH, merged by name into the
    container's env, points at the directory (a `valueFrom` it may have had is removed)."""
    spec = deployment["spec"]["template"]["spec"]
    changes: dict[str, Any] = {}
    if any(v.get("name") == "jwt" and (v.get("secret") or {}).get("items") for v in spec.get("volumes") or []):
        changes["volumes"] = [{"name": "jwt", "secret": {"items": None}}]
    containers = spec["containers"]
    container = next((c for c in containers if c["name"] == "somabrain"), containers[0])
    changes["containers"] = [{"name": container["name"], "env": [
        {"name": "SOMABRAIN_JWT_PUBLIC_KEY_PATH", "value": JWT_DIR, "valueFrom": None}]}]
    return changes


def _pem_keys(data: dict[str, Any]) -> list[str]:
    return sorted(k for k in data if k.endswith(".pem") and data[k])


def _newest(keys: list[str]) -> str | None:
    """The newest key file: the latest jwt_pub_<UTC time>.pem; the original jwt_pub.pem is the oldest."""
    return max(keys, key=lambda k: (k != "jwt_pub.pem", k)) if keys else None


def add_jwt_key(target: KubeTarget, pem: bytes) -> None:
    """Store `pem` under a new jwt_pub_<UTC time>.pem. A JSON merge patch of that one key, unconditional: adding a
    key with a name of its own removes nothing, so whatever else changed in the Secret meanwhile is kept by the
    server-side merge; the only thing the read decides is whether this very key is there already (then nothing is
    written, and running --add again after a failed restart does not store it twice)."""
    path = secret_path(target, JWT_SECRET)
    b64 = base64.b64encode(pem).decode()

    def attempt() -> None:
        data = get(target, path).get("data") or {}
        known = next((k for k, v in data.items() if v == b64), None)
        if known is not None and known == _newest(_pem_keys(data)):
            say(f"Secret {JWT_SECRET}: already holds this key as {known}, the newest; keys {_pem_keys(data)}")
            return
        name = f"jwt_pub_{datetime.now(UTC):%Y%m%d%H%M%S}.pem"
        if name in data:  # a second --add within the same second
            name = f"jwt_pub_{datetime.now(UTC):%Y%m%d%H%M%S%f}.pem"
        # A key already there under an older name (going back to a previous key) becomes the newest: stored under
        # the new name and dropped from the old one in the same write, so it is never absent, and a later --retire
        # keeps it. (Found on the real cluster: re-adding the previous key was a no-op, and --retire then removed it.)
        changes: dict[str, str | None] = {name: b64, **({known: None} if known is not None else {})}
        stored = merge_patch(target, path, {"data": changes}).get("data") or {}
        moved = f" (was {known})" if known is not None else ""
        say(f"Secret {JWT_SECRET}: added {name}{moved}; keys now {_pem_keys(stored)}")

    retry_conflicts(attempt, f"adding a key to Secret {JWT_SECRET}")


def retire_jwt_keys(target: KubeTarget) -> None:
    """Remove every key but the newest. This write depends on the whole set read (which key is newest, that
    there are two), so it is conditional: the merge patch carries the resourceVersion read, and a Secret changed
    meanwhile is a 409, re-read and decided again. Unconditional, a key the others were retired for, removed in
    between by someone else, would leave the API no key at all. (A JSON patch `test` of the resourceVersion would
    be as atomic, but the API answers its failure with 422 Invalid, which a retry could not tell from a bad patch;
    a stale resourceVersion in a merge patch is the API's own 409 Conflict.)"""
    path = secret_path(target, JWT_SECRET)

    def attempt() -> None:
        secret = get(target, path)
        data = secret.get("data") or {}
        keys = _pem_keys(data)
        if len(keys) < 2:
            raise OpsError(f"Secret {JWT_SECRET} holds {keys}: nothing to retire", EXIT_USAGE)
        newest = _newest(keys)
        retired = [k for k in keys if k != newest]
        version = (secret.get("metadata") or {}).get("resourceVersion")
        if not version:
            raise KubeError(f"Secret {JWT_SECRET} has no metadata.resourceVersion: cannot retire keys atomically")
        merge_patch(target, path, {"metadata": {"resourceVersion": version},
                                   "data": dict.fromkeys(retired)})
        say(f"Secret {JWT_SECRET}: kept {newest}, retired {retired}")

    retry_conflicts(attempt, f"retiring keys of Secret {JWT_SECRET}")


def rotate_jwt(target: KubeTarget, add: Path | None, retire: bool, timeout: float) -> int:
    if add is not None:
        try:
            pem = add.read_bytes()
            serialization.load_pem_public_key(pem)
        except OSError as exc:
            raise OpsError(f"cannot read {add}: {exc.strerror}", EXIT_USAGE) from None
        except ValueError as exc:
            raise OpsError(f"{add} is not a PEM public key: {exc}", EXIT_USAGE) from None
        add_jwt_key(target, pem)
    else:
        retire_jwt_keys(target)
    try:
        problems = kube_restart(target, ("somabrain",), timeout, pod_spec=_project_all_keys)
    except KubeError as exc:
        again = ("run the same --add again (it finds the key stored and does not add it twice)" if add is not None
                 else f"kubectl rollout restart deployment/somabrain -n {target.namespace}")
        raise OpsError(f"Secret {JWT_SECRET} is changed, but deployment/somabrain was not restarted: {exc}\n"
                       f"  to finish: {again}", EXIT_BROKEN) from None
    if problems:
        raise OpsError("the API is not ready after the key change:\n  " + "\n  ".join(problems), EXIT_BROKEN)
    say(f"deployment/somabrain verifies with every key in {JWT_DIR}" + ("" if retire else
        "; retire the old key once no token it signed is alive: somabrain rotate jwt-key --env prod --retire"))
    return EXIT_OK


# --- CLI ---------------------------------------------------------------------------------------------------
def parser() -> UsageParser:
    p = UsageParser(prog=PROG, description="Rotate SomaBrain's credentials without taking the service down.")
    sub = p.add_subparsers(dest="what", required=True, parser_class=UsageParser)
    pw = sub.add_parser("postgres-password", help="new Postgres password for the apps' role")
    pw.add_argument("--env", choices=("dev", "prod"), required=True)
    pw.add_argument("--env-file", type=Path, default=REPO / ".env.local",
                    help="dev: the compose env file holding POSTGRES_PASSWORD (default .env.local)")
    jwt = sub.add_parser("jwt-key", help="add a JWT verification key next to the old one, or retire the old one")
    jwt.add_argument("--env", choices=("prod",), required=True,
                     help="prod only: dev runs with SOMABRAIN_DISABLE_AUTH=1")
    phase = jwt.add_mutually_exclusive_group(required=True)
    phase.add_argument("--add", type=Path, metavar="PEM", help="the new public key (PEM)")
    phase.add_argument("--retire", action="store_true", help="keep only the newest key")
    for cmd in (pw, jwt):
        add_target_arguments(cmd)
        cmd.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds per roll (default 300)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    target = build_target(args.env, args)
    try:
        reachable(target)
        say(f"{PROG} {args.what}: {target.describe()}")
        started = time.monotonic()
        if args.what == "postgres-password":
            code = rotate_postgres(target, args.env_file, args.timeout)
        else:
            assert isinstance(target, KubeTarget)
            code = rotate_jwt(target, args.add, args.retire, args.timeout)
        say(f"done in {time.monotonic() - started:.1f} s")
        return code
    except KubeError as exc:
        return fail(PROG, OpsError(str(exc)))
    except OpsError as exc:
        return fail(PROG, exc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
