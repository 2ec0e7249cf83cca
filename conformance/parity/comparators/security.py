"""Dimension `security`: non-root, no privilege escalation, dropped capabilities, read-only root fs,
never privileged; credentials from an env file (compose) or a Secret (k8s), never literals.

Literal credentials and privileged containers are hard findings: no exception can accept them."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from conformance.loaders.compose import ComposeService, EnvVar
from conformance.loaders.k8s import Container, EnvValue
from conformance.parity.context import Pair, ParityContext, display_raw
from conformance.parity.findings import Finding, drift, ok

DIM = "security"
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)


def _dockerfile_user(dockerfile: Path | None) -> str | None:
    if dockerfile is None:
        return None
    try:
        lines = dockerfile.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    users = [ln.split(None, 1)[1].strip() for ln in lines if ln.strip().upper().startswith("USER ")]
    return users[-1] if users else None


def _is_root(user: str) -> bool:
    name = user.split(":")[0].strip()
    return name in ("0", "root", "")


def _dev_user(svc: ComposeService) -> tuple[bool, str]:
    if svc.user is not None:
        return not _is_root(svc.user), f"user {svc.user}"
    image_user = _dockerfile_user(svc.dockerfile) if svc.build_context else None
    if image_user is not None:
        return not _is_root(image_user), f"image USER {image_user} (Dockerfile)"
    return False, "image default (no `user:`; not known to be non-root)"


def _prod_user(c: Container) -> tuple[bool, str]:
    uid = c.security.get("runAsUser")
    non_root = bool(c.security.get("runAsNonRoot")) or (isinstance(uid, int) and uid > 0)
    text = "runAsNonRoot" if c.security.get("runAsNonRoot") else "runAsNonRoot unset"
    if uid is not None:
        text += f", uid {uid}"
    return non_root, text


def _both(subject: str, dev: tuple[bool, str], prod: tuple[bool, str], what: str) -> Finding:
    if dev[0] and prod[0]:
        return ok(DIM, subject, dev[1], prod[1])
    sides = [s for s, v in (("dev", dev), ("prod", prod)) if not v[0]]
    return drift(DIM, subject, dev[1], prod[1], f"{what} not enforced in {' and '.join(sides)}")


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        svc, c = pair.dev, pair.container
        assert svc is not None and c is not None
        caps = c.security.get("capabilities") or {}
        out.append(_both(f"{pair.name}/non-root", _dev_user(svc), _prod_user(c), "non-root"))
        nnp = any(o.replace("=", ":") in ("no-new-privileges", "no-new-privileges:true") for o in svc.security_opt)
        ape = c.security.get("allowPrivilegeEscalation") is False
        out.append(
            _both(
                f"{pair.name}/privilege-escalation",
                (nnp, "no-new-privileges" if nnp else "allowed (no security_opt no-new-privileges)"),
                (ape, "allowPrivilegeEscalation: false" if ape else "allowed"),
                "no privilege escalation",
            )
        )
        dev_drop, prod_drop = "ALL" in svc.cap_drop, "ALL" in [str(x).upper() for x in caps.get("drop") or []]
        out.append(
            _both(
                f"{pair.name}/capabilities",
                (
                    dev_drop and not svc.cap_add,
                    f"drop {list(svc.cap_drop) or 'none'}, add {list(svc.cap_add) or 'none'}",
                ),
                (
                    prod_drop and not caps.get("add"),
                    f"drop {caps.get('drop') or 'none'}, add {caps.get('add') or 'none'}",
                ),
                "capabilities dropped",
            )
        )
        ro = bool(c.security.get("readOnlyRootFilesystem"))
        out.append(
            _both(
                f"{pair.name}/read-only-rootfs",
                (svc.read_only, "read_only" if svc.read_only else "writable"),
                (ro, "readOnlyRootFilesystem" if ro else "writable"),
                "read-only root filesystem",
            )
        )
        if svc.privileged or c.security.get("privileged"):
            out.append(
                drift(
                    DIM,
                    f"{pair.name}/privileged",
                    str(svc.privileged),
                    str(bool(c.security.get("privileged"))),
                    "privileged containers are never acceptable",
                    hard=True,
                )
            )
        out.extend(_credentials(pair, svc, c))
    return out


def _credential_names(env: dict[str, EnvVar], penv: dict[str, EnvValue]) -> list[str]:
    names = set()
    for name, var in env.items():
        if CREDENTIAL_NAME.search(name) or _url_password(var.value.value):
            names.add(name)
    for name, val in penv.items():
        if CREDENTIAL_NAME.search(name) or _url_password(val.template):
            names.add(name)
    return sorted(names)


def _url_password(value: str) -> str | None:
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def _dev_source(var: EnvVar) -> tuple[bool, str]:
    if var.source.startswith("env_file:"):
        return True, f"env_file {Path(var.source.split(':', 1)[1]).name}"
    raw = display_raw(var.value.raw)
    secret_part = _url_password(raw) if _url_password(var.value.value) else raw
    if (secret_part is not None and "${" in secret_part) or (secret_part or "").startswith("$"):
        return True, f"env file: {display_raw(secret_part or raw)}"
    return False, "LITERAL in the compose file"


def _prod_source(val: EnvValue) -> tuple[bool, str]:
    if val.from_secret:
        return True, f"Secret {val.source.split(':', 1)[1]}"
    password = _url_password(val.template)
    if password is not None:
        ref = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", password)
        if ref and ref.group(1) in val.secret_refs:
            return True, f"Secret via $({ref.group(1)})"
    where = "a ConfigMap" if val.source.startswith("configmap:") else "the manifest"
    return False, f"LITERAL in {where}"


def _credentials(pair: Pair, svc: ComposeService, c: Container) -> list[Finding]:
    out: list[Finding] = []
    for name in _credential_names(svc.environment, c.env):
        subject = f"{pair.name}/{name}"
        dev = _dev_source(svc.environment[name]) if name in svc.environment else None
        prod = _prod_source(c.env[name]) if name in c.env else None
        if (dev and not dev[0]) or (prod and not prod[0]):
            out.append(
                drift(
                    DIM,
                    subject,
                    dev[1] if dev else None,
                    prod[1] if prod else None,
                    "a credential is written in the file instead of coming from a secret store",
                    hard=True,
                )
            )
        elif dev is None and prod is not None and any(name in v.secret_refs for k, v in c.env.items() if k != name):
            users = [k for k, v in c.env.items() if k != name and name in v.secret_refs]
            out.append(ok(DIM, subject, None, prod[1], f"only there to compose {', '.join(users)} in k8s"))
        elif dev is None or prod is None:
            out.append(
                drift(
                    DIM,
                    subject,
                    dev[1] if dev else None,
                    prod[1] if prod else None,
                    f"credential only in {'prod' if dev is None else 'dev'}",
                )
            )
        else:
            out.append(ok(DIM, subject, dev[1], prod[1], "from a secret store on both sides"))
    return out
