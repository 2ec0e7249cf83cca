"""Dimension `storage`: what each path of the container is, on both sides.

Every mounted path is classed `persistent` (named volume / PVC or volumeClaimTemplate), `ephemeral`
(tmpfs, emptyDir, or the writable root filesystem), `config` (read-only bind mount / ConfigMap),
`secret` or `absent` (nothing there and the root filesystem is read-only). Classes must match. A
config bind mount and the ConfigMap must hold the same files, byte for byte."""

from __future__ import annotations

from pathlib import Path

from conformance.loaders.compose import ComposeService, Mount
from conformance.loaders.k8s import Container, Manifests, Workload
from conformance.parity.context import ParityContext
from conformance.parity.findings import Finding, drift, ok

DIM = "storage"


def _dev(ctx: ParityContext, svc: ComposeService, path: str) -> tuple[str, str, Mount | None]:
    mount = next((m for m in svc.mounts if m.target.rstrip("/") == path), None)
    if mount is None:
        return (
            ("absent", "absent (read-only root fs)", None)
            if svc.read_only
            else ("ephemeral", "ephemeral (writable root fs)", None)
        )
    if mount.kind == "volume":
        return "persistent", f"persistent (volume {mount.source or 'anonymous'})", mount
    if mount.kind == "tmpfs":
        return "ephemeral", "ephemeral (tmpfs)", mount
    rel = ctx.display_path(mount.source)
    if mount.read_only:
        return "config", f"config (bind {rel}, ro)", mount
    return "bind", f"host bind mount {rel}", mount


def _prod(wl: Workload, container: Container, k8s: Manifests, path: str) -> tuple[str, str, dict[str, str] | None]:
    mount = next((m for m in container.mounts if str(m.get("mountPath", "")).rstrip("/") == path), None)
    if mount is None:
        if container.security.get("readOnlyRootFilesystem"):
            return "absent", "absent (read-only root fs)", None
        return "ephemeral", "ephemeral (writable root fs)", None
    name = str(mount.get("name"))
    if name in wl.claim_templates:
        size = (((wl.claim_templates[name].get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
            "storage", "?"
        )
        return "persistent", f"persistent (volumeClaimTemplate {name}, {size})", None
    vol = wl.volumes.get(name)
    if vol is None:
        return "missing", f"volume {name} is not defined", None
    if "persistentVolumeClaim" in vol:
        claim = vol["persistentVolumeClaim"]["claimName"]
        pvc = k8s.find("PersistentVolumeClaim", claim)
        if pvc is None:
            return "missing", f"PVC {claim} does not exist", None
        size = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage", "?")
        return "persistent", f"persistent (PVC {claim}, {size})", None
    if "emptyDir" in vol:
        return "ephemeral", "ephemeral (emptyDir)", None
    if "configMap" in vol:
        cm_name = vol["configMap"]["name"]
        cm = k8s.find("ConfigMap", cm_name)
        data = {str(k): str(v) for k, v in ((cm or {}).get("data") or {}).items()}
        return "config", f"config (ConfigMap {cm_name})", data if cm else None
    if "secret" in vol:
        return "secret", f"secret (Secret {vol['secret'].get('secretName')})", None
    if "projected" in vol:
        return "config", "config (projected)", None
    return "other", f"volume {name}: {sorted(k for k in vol if k != 'name')}", None


def _config_content(dev: Mount, data: dict[str, str] | None) -> str | None:
    """None when the ConfigMap holds the same files as the bind-mounted directory/file, else why not."""
    if data is None:
        return "the ConfigMap does not exist"
    source = Path(dev.source)
    for key, value in data.items():
        file = source / key if source.is_dir() else source
        try:
            content = file.read_text(encoding="utf-8")
        except OSError:
            return f"ConfigMap key {key} has no file {file} in the bind-mounted source"
        if content != value:
            return f"ConfigMap key {key} differs from {file}"
    return None


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None and pair.container is not None and pair.workload is not None
        paths = {m.target.rstrip("/") for m in pair.dev.mounts} | {
            str(m.get("mountPath", "")).rstrip("/") for m in pair.container.mounts
        }
        for path in sorted(paths):
            dev_class, dev_text, dev_mount = _dev(ctx, pair.dev, path)
            prod_class, prod_text, data = _prod(pair.workload, pair.container, ctx.k8s, path)
            subject = f"{pair.name}:{path}"
            if dev_class != prod_class:
                out.append(drift(DIM, subject, dev_text, prod_text, f"{dev_class} in dev, {prod_class} in prod"))
                continue
            if dev_class == "config" and dev_mount is not None:
                problem = _config_content(dev_mount, data)
                if problem:
                    out.append(drift(DIM, subject, dev_text, prod_text, problem))
                    continue
                out.append(ok(DIM, subject, dev_text, prod_text, "same files"))
                continue
            out.append(ok(DIM, subject, dev_text, prod_text))
    return out
