"""`somabrain rotate postgres-password | jwt-key`: change a credential while the service keeps answering.

    somabrain rotate postgres-password --env dev  [--compose-project P] [--env-file .env.local]
    somabrain rotate postgres-password --env prod [--kube-context C]
    somabrain rotate jwt-key --env prod --add NEW_PUBLIC.pem      (phase 1: both keys verify)
    somabrain rotate jwt-key --env prod --retire                  (phase 2, once no old token is alive)

postgres-password: the password of the apps' runtime role (brain/dbinit.py; the superuser's is not theirs). The
store the apps read it from (.env.local's POSTGRES_APP_* in dev, Secret somabrain-postgres-app in prod) is also the
rotation's journal, so the new password is never only on the role. Four steps:
  1. stage: a new random password into the store as POSTGRES_PASSWORD_PENDING (the apps read only
     POSTGRES_PASSWORD). Fails: nothing changed; rerun. (A write that landed although it reported failure leaves
     a PENDING that the rerun takes as its new password.)
  2. ALTER ROLE to it (open connections stay logged in; Postgres keeps one password per role, so the old one stops
     working for NEW connections now). Fails: undo (ALTER ROLE back to POSTGRES_PASSWORD, drop PENDING).
  3. promote: POSTGRES_PASSWORD = the new one and PENDING removed, in one write. Fails: undo, as in 2.
  4. roll the apps (compose: `up -d --no-deps somamemory somabrain`; prod: a rolling restart, maxUnavailable 0, so
     an old pod serves on its open connections until its replacement is Ready) and check the conformance readiness
     rules. Fails: demote (POSTGRES_PASSWORD old again, the new one back as PENDING: the state after step 2), undo,
     roll the apps back. In prod each restarted pod's db-init initContainer sets the role's password to the
     Secret's POSTGRES_PASSWORD before the app starts, which is the password this step has just made current.
The undo reads the store again and acts on what it holds (a promote whose answer was lost may have landed). If the
undo itself stops, PENDING stays in the store: a rerun of the same command finds it and completes the rotation
(ALTER ROLE to PENDING, promote, roll), whichever of the two passwords the role has by then. Every failure message
says which state things are in and the command to run next.

jwt-key: the API verifies with every *.pem of SOMABRAIN_JWT_PUBLIC_KEY_PATH when it is a directory (brain/auth.py).
--add stores the new public key next to the old one in Secret somabrain-secrets, projects every key of the Secret
into /secrets and points SOMABRAIN_JWT_PUBLIC_KEY_PATH at the directory, then rolls the API: tokens signed by the
old or the new private key are both accepted. --retire removes every key but the newest and rolls again.

On Kubernetes nothing is replaced whole (GET then PUT meets 409 Conflict whenever a controller writes the object in
between, as the Deployment controller does with `status` all through a rollout): a Deployment is restarted by a
strategic-merge PATCH of `spec.template.metadata.annotations` (kubectl.kubernetes.io/restartedAt, as `kubectl
rollout restart` does), a Secret's keys change by a JSON merge PATCH of `data`. A write that may still meet 409 is
retried a few times, re-reading the object (targets.kube_api.retry_conflicts), then given up with the reason.
"""

from __future__ import annotations

import base64
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from brain.auth import load_verifier
from brain.errors import ConfigError
from conformance.inventory import APPS as INVENTORY_APPS
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
    kube_target,
    reachable,
)
from ops.readiness import readiness_failures
from targets.base import ProbeError, SecretStore, Target
from targets.kube import KubeTarget
from targets.kube_api import KubeError, deployment_path, get, merge_patch, retry_conflicts, secret_path
from targets.kube_rollout import restart

PROG = "somabrain rotate"
# The apps that read the runtime role's password (the inventory's services of our image), a service before the ones
# that use it: SomaMemory rolls before the API, which depends on it.
APPS = tuple(s.key for s in sorted(INVENTORY_APPS, key=lambda app: sum(o.key in app.uses for o in INVENTORY_APPS)))
PG_SECRET = "somabrain-postgres-app"  # noqa: S105 - a Secret's name: the runtime role's, not the superuser's
JWT_SECRET = "somabrain-secrets"  # noqa: S105 - a Secret's name
JWT_DIR = "/secrets"
PENDING = "POSTGRES_PASSWORD_PENDING"  # the key holding the new password until it is current
# What a step that talks to the outside world raises: the API server, an exec into the database, the env file.
STEP_ERRORS = (KubeError, ProbeError, OSError, subprocess.SubprocessError)


def say(message: str) -> None:
    print(message, flush=True)


# --- postgres ----------------------------------------------------------------------------------------------
@dataclass
class PasswordStore:
    """Where the apps read the role's password (.env.local's POSTGRES_APP_*, Secret somabrain-postgres-app: the
    target's store of that Secret), and how they are rolled onto a changed one. It is also the rotation's journal:
    a new password is in it (under PENDING) before it is on the role, so no step's failure can leave the role with
    a password nobody knows."""

    target: Target
    secret: SecretStore

    @classmethod
    def of(cls, target: Target) -> PasswordStore:
        return cls(target, target.secret_store(PG_SECRET))

    @property
    def where(self) -> str:
        """The store, as messages name it."""
        return self.secret.where

    @property
    def roll_command(self) -> str:
        """What rolls the apps by hand."""
        return self.target.roll_command(APPS)

    @property
    def credential_keys(self) -> str:
        """The user and password keys, as the store spells them."""
        return f"{self.secret.key_name('POSTGRES_USER')}/{self.secret.key_name('POSTGRES_PASSWORD')}"

    def read(self) -> dict[str, str]:
        """Every key, decoded, under the Secret's names (POSTGRES_USER, POSTGRES_PASSWORD, PENDING)."""
        return self.secret.read()

    def write(self, changes: Mapping[str, str | None]) -> None:
        """Set (str) or remove (None) keys, named as `read` names them, in one atomic write."""
        self.secret.write(changes)

    def roll(self, timeout: float) -> list[str]:
        """Roll the apps onto the stored password and check readiness: the problems found."""
        return self.target.roll(APPS, timeout) or readiness_failures(self.target)


def set_role_password(target: Target, user: str, password: str) -> None:
    pg.identifier(user)
    literal = password.replace("'", "''")
    pg.psql(target, stdin=f"ALTER ROLE \"{user}\" PASSWORD '{literal}';\n\\q\n".encode()).check("ALTER ROLE")


def kube_restart(target: KubeTarget, names: tuple[str, ...], timeout: float,
                 pod_spec: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[str]:
    """Roll `names` (targets.kube_rollout.restart: one PATCH each, retried on 409, then waited for) and check
    readiness: the problems found. Raises KubeError when a PATCH is refused or keeps meeting 409 Conflict."""
    return restart(target, names, timeout, pod_spec) or readiness_failures(target)


def stage_password(store: PasswordStore, new: str, rerun: str) -> None:
    """Step 1: the new password into the store under PENDING, before the role has it."""
    try:
        store.write({PENDING: new})
    except STEP_ERRORS as exc:
        raise OpsError(f"could not store the new password as {PENDING} in {store.where}: {exc}\n"
                       f"  state: the role and {store.where} keep the current password; the apps are untouched\n"
                       f"  next: {rerun}") from None
    say(f"{store.where}: new password stored as {PENDING}")


def undo(target: Target, store: PasswordStore, user: str, rerun: str, why: str) -> None:
    """Put the role back on the store's current password and drop PENDING; an OpsError saying what was reached
    when that cannot be done.
    It decides on what the store holds when read again, not on what this run believes it wrote: a write whose
    answer was lost may have landed. Whatever part of it fails leaves PENDING in place, which a rerun completes."""
    try:
        stored = store.read()
    except STEP_ERRORS as exc:
        raise OpsError(f"{why}\n  state: unknown ({store.where} cannot be read back: {exc}); it holds the password "
                       f"the role has, or that one under {PENDING}\n  next: {rerun}  (completes either way)") from None
    if PENDING not in stored:  # the promotion landed after all: role and store agree on the new password
        raise OpsError(f"{why}\n  state: the role and {store.where} have the new password; the apps were not "
                       f"rolled\n  next: {store.roll_command}")
    try:
        set_role_password(target, user, stored["POSTGRES_PASSWORD"])
        store.write({PENDING: None})
    except STEP_ERRORS as exc:
        raise OpsError(f"{why}\n  undo stopped: {exc}\n  state: {store.where} holds the current password and the "
                       f"new one as {PENDING}; the role has one of the two\n"
                       f"  next: {rerun}  (it finds {PENDING} and completes the rotation)") from None


def undone(why: str, store: PasswordStore, rerun: str) -> OpsError:
    return OpsError(f"{why}\n  undone: the role and {store.where} have the current password again; the apps are "
                    f"untouched\n  next: {rerun}")


def alter_role(target: Target, store: PasswordStore, user: str, new: str, rerun: str) -> None:
    """Step 2: the role gets the new password; from here new connections need it."""
    try:
        set_role_password(target, user, new)
    except STEP_ERRORS as exc:
        why = f"ALTER ROLE {user} failed: {exc}"
        undo(target, store, user, rerun, why)
        raise undone(why, store, rerun) from None
    say(f"role {user}: new password set (open connections stay logged in)")


def promote(target: Target, store: PasswordStore, user: str, new: str, rerun: str) -> None:
    """Step 3: PENDING becomes POSTGRES_PASSWORD, in one write."""
    try:
        store.write({"POSTGRES_PASSWORD": new, PENDING: None})
    except STEP_ERRORS as exc:
        why = f"could not make the new password current in {store.where}: {exc}"
        undo(target, store, user, rerun, why)
        raise undone(why, store, rerun) from None
    say(f"{store.where}: the new password is current; rolling {', '.join(APPS)}")


def roll_back(target: Target, store: PasswordStore, user: str, old: str, new: str, timeout: float,
              rerun: str, problems: list[str]) -> NoReturn:
    """Step 4 failed (the apps are not ready with the new password): demote it to PENDING with the old one
    current again (the state after step 2, so `undo` applies and a rerun completes), undo, roll the apps back."""
    why = "the apps are not ready with the new password:\n  " + "\n  ".join(problems)
    try:
        store.write({"POSTGRES_PASSWORD": old, PENDING: new})
    except STEP_ERRORS as exc:
        raise OpsError(f"{why}\n  undo stopped: {exc}\n  state: the role and {store.where} have the new "
                       f"password\n  next: {store.roll_command}") from None
    undo(target, store, user, rerun, why)
    again = store.roll(timeout)
    if again:
        raise OpsError(f"{why}\n  state: the role and {store.where} have the old password again, but the apps "
                       "did not roll back:\n  " + "\n  ".join(again) + f"\n  next: {store.roll_command}")
    raise OpsError(f"{why}\n  undone: the old password is back on the role and in {store.where}, the apps rolled "
                   f"back\n  next: {rerun}")


def rotate_postgres(target: Target, store: PasswordStore, timeout: float, rerun: str) -> int:
    """The four steps (see the module docstring); a PENDING left by a run that stopped is completed first."""
    try:
        values = store.read()
    except (*STEP_ERRORS, ValueError) as exc:
        raise OpsError(f"cannot read {store.where}: {exc}", EXIT_USAGE) from None
    user, old = values.get("POSTGRES_USER", ""), values.get("POSTGRES_PASSWORD", "")
    if not user or not old:
        raise OpsError(f"{store.where} has no {store.credential_keys} (the runtime role's; scripts/dev_up.sh or "
                       "scripts/k8s_secrets.sh writes them)", EXIT_USAGE)
    new = values.get(PENDING, "")
    if new:
        say(f"{store.where}: {PENDING} left by a rotation that stopped half-way; completing it")
    else:
        new = secrets.token_hex(24)
        stage_password(store, new, rerun)
    alter_role(target, store, user, new, rerun)
    promote(target, store, user, new, rerun)
    problems = store.roll(timeout)
    if problems:
        roll_back(target, store, user, old, new, timeout, rerun, problems)
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


def api_env_value(target: KubeTarget, name: str) -> str | None:
    """`name` in the API container's environment as Kubernetes builds it: `env` wins over `envFrom`, and a later
    envFrom ConfigMap over an earlier one (an optional one may be absent)."""
    spec = get(target, deployment_path(target, "somabrain"))["spec"]["template"]["spec"]
    container = next((c for c in spec["containers"] if c["name"] == "somabrain"), spec["containers"][0])
    for var in container.get("env") or []:
        if var.get("name") == name and "value" in var:
            return str(var["value"])
    for source in reversed(container.get("envFrom") or []):
        ref = source.get("configMapRef") or {}
        if not ref.get("name"):
            continue
        try:
            data = get(target, f"/api/v1/namespaces/{target.namespace}/configmaps/{ref['name']}").get("data") or {}
        except KubeError as exc:
            if exc.status == 404 and ref.get("optional"):
                continue
            raise
        if name in data:
            return str(data[name])
    return None


def checked_key(target: KubeTarget, path: Path) -> bytes:
    """The key file, once the API would load it: brain.auth.load_verifier itself, with the algorithm the API is
    configured with (SOMABRAIN_JWT_ALGORITHM, default RS256, as brain.settings reads it). So --add refuses exactly
    what would stop the API at start-up: no PEM public key or certificate, a private key, an empty or oversized
    file, a key type other than RSA/EC, an RSA key under 2048 bits, a key that does not fit the algorithm."""
    if path.is_dir():
        raise OpsError(f"{path} is a directory; --add takes one PEM public key file", EXIT_USAGE)
    algorithm = (api_env_value(target, "SOMABRAIN_JWT_ALGORITHM") or "rs256").strip().upper() or "RS256"
    try:  # issuer and audience take no part in checking the key; load_verifier only needs them non-empty
        load_verifier(path, issuer=PROG, audience=PROG, algorithms=(algorithm,), variable="--add")
        return path.read_bytes()
    except ConfigError as exc:
        raise OpsError(f"the API ({algorithm}) would refuse this key: {exc}", EXIT_USAGE) from None
    except OSError as exc:
        raise OpsError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


def rotate_jwt(target: KubeTarget, add: Path | None, retire: bool, timeout: float) -> int:
    if add is not None:
        add_jwt_key(target, checked_key(target, add))
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
                    help="dev: the compose env file holding POSTGRES_APP_PASSWORD (default .env.local)")
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
    kube = kube_target(args) if args.what == "jwt-key" else None  # jwt-key: prod only (its --env allows no other)
    target = kube or build_target(args.env, args)
    try:
        reachable(target)
        say(f"{PROG} {args.what}: {target.describe()}")
        started = time.monotonic()
        if args.what == "postgres-password":
            code = rotate_postgres(target, PasswordStore.of(target), args.timeout, f"{PROG} {shlex.join(argv)}")
        else:
            assert kube is not None
            code = rotate_jwt(kube, args.add, args.retire, args.timeout)
        say(f"done in {time.monotonic() - started:.1f} s")
        return code
    except KubeError as exc:
        return fail(PROG, OpsError(str(exc)))
    except OpsError as exc:
        return fail(PROG, exc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
