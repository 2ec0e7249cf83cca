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
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
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
from ops.kube_api import KubeError, deployment_path, get, put, secret_path
from ops.readiness import readiness_failures
from ops.rollout import wait

PROG = "somabrain rotate"
APPS = ("somamemory", "somabrain")
PG_SECRET = "somabrain-postgres"  # noqa: S105 - a Secret's name
JWT_SECRET = "somabrain-secrets"  # noqa: S105 - a Secret's name
JWT_DIR = "/secrets"


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


def kube_restart(target: KubeTarget, names: tuple[str, ...], timeout: float,
                 patch: Any = None) -> list[str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in names:
        deployment = get(target, deployment_path(target, name))
        template = deployment["spec"]["template"]
        template.setdefault("metadata", {}).setdefault("annotations", {})["kubectl.kubernetes.io/restartedAt"] = stamp
        if patch is not None:
            patch(deployment)
        put(target, deployment_path(target, name), deployment)
    problems = []
    for name in names:
        ok, message = wait(target, name, timeout)
        say(f"deployment/{name}: {message}")
        if not ok:
            problems.append(f"deployment/{name}: {message}")
    return problems or readiness_failures(target)


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
        path = secret_path(target, PG_SECRET)
        secret = get(target, path)
        data = secret.setdefault("data", {}) or {}
        user = base64.b64decode(data.get("POSTGRES_USER", "")).decode()
        old_b64 = data.get("POSTGRES_PASSWORD", "")
        set_role_password(target, user, new)
        say(f"role {user}: new password set (open connections stay logged in)")
        data["POSTGRES_PASSWORD"] = base64.b64encode(new.encode()).decode()
        secret["data"] = data
        put(target, path, secret)
        say(f"Secret {PG_SECRET}: POSTGRES_PASSWORD updated; rolling restart of {', '.join(APPS)}")
        problems = kube_restart(target, APPS, timeout)
        if problems:
            set_role_password(target, user, base64.b64decode(old_b64).decode())
            secret = get(target, path)
            secret["data"]["POSTGRES_PASSWORD"] = old_b64
            put(target, path, secret)
            kube_restart(target, APPS, timeout)
            raise OpsError("the apps are not ready with the new password; the old one is back:\n  "
                           + "\n  ".join(problems))
    say("readiness: OK with the new password; the old password no longer opens connections")
    return EXIT_OK


# --- jwt ---------------------------------------------------------------------------------------------------
def _project_all_keys(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]["template"]["spec"]
    for volume in spec.get("volumes") or []:
        if volume.get("name") == "jwt" and "secret" in volume:
            volume["secret"].pop("items", None)  # every key of the Secret becomes a file in /secrets
    container = spec["containers"][0]
    env = [e for e in container.get("env") or [] if e.get("name") != "SOMABRAIN_JWT_PUBLIC_KEY_PATH"]
    env.append({"name": "SOMABRAIN_JWT_PUBLIC_KEY_PATH", "value": JWT_DIR})
    container["env"] = env


def rotate_jwt(target: KubeTarget, add: Path | None, retire: bool, timeout: float) -> int:
    path = secret_path(target, JWT_SECRET)
    secret = get(target, path)
    data: dict[str, str] = dict(secret.get("data") or {})
    if add is not None:
        try:
            pem = add.read_bytes()
            serialization.load_pem_public_key(pem)
        except OSError as exc:
            raise OpsError(f"cannot read {add}: {exc.strerror}", EXIT_USAGE) from None
        except ValueError as exc:
            raise OpsError(f"{add} is not a PEM public key: {exc}", EXIT_USAGE) from None
        name = f"jwt_pub_{datetime.now(UTC):%Y%m%d%H%M%S}.pem"
        data[name] = base64.b64encode(pem).decode()
        say(f"Secret {JWT_SECRET}: added {name}; keys now {sorted(k for k in data if k.endswith('.pem'))}")
    else:
        keys = sorted(k for k in data if k.endswith(".pem") and data[k])
        if len(keys) < 2:
            raise OpsError(f"Secret {JWT_SECRET} holds {keys}: nothing to retire", EXIT_USAGE)
        newest = max(keys, key=lambda k: (k != "jwt_pub.pem", k))
        for key in keys:
            if key != newest:
                del data[key]
        say(f"Secret {JWT_SECRET}: kept {newest}, retired {[k for k in keys if k != newest]}")
    secret["data"] = data
    put(target, path, secret)
    problems = kube_restart(target, ("somabrain",), timeout, patch=_project_all_keys)
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
