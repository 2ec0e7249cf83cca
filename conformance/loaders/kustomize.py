"""A small kustomize renderer in Python, for the features k8s/ uses.

There is no kustomize binary on the CI machines, so the parity gate and the static checks render the
manifests themselves.
Supported: `resources` (files and directories), `components` (directories whose kustomization is
`kind: Component`, apiVersion kustomize.config.k8s.io/v1alpha1: applied, as kustomize does, to what the
including kustomization has accumulated so far, before its own generators and patches), `namespace`,
`configMapGenerator` and `secretGenerator` (`files`, `literals`, `envs`, `behavior: create|replace|merge`,
`options`/`generatorOptions` with `disableNameSuffixHash: true`, `labels`, `annotations`), and `patches`
(strategic-merge or JSON 6902, from `path` or inline `patch`, with an optional `target`). Anything else is
refused with a clear error rather than silently ignored. When `kubectl kustomize` exists,
tests/deploy/test_kustomize_render.py compares this output with it.

Usage: python -m conformance.loaders.kustomize DIR   (prints the rendered multi-document YAML)
"""

from __future__ import annotations

import base64
import copy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patches",
}
KUSTOMIZATION_API = "kustomize.config.k8s.io/v1beta1"
COMPONENT_API = "kustomize.config.k8s.io/v1alpha1"
# Kinds that have no namespace (those that can appear here).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume"}
# Strategic-merge list keys for the lists our patches touch.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class KustomizeError(Exception):
    """The kustomization cannot be rendered; the message says which file and why."""


def load_yaml_documents(path: Path) -> list[Resource]:
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f"{path}: cannot read YAML: {exc}") from exc
    resources = [d for d in docs if d is not None]
    for doc in resources:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise KustomizeError(f"{path}: every document must be a Kubernetes object with kind and metadata")
    return resources


def _parse_yaml(text: str, where: object) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KustomizeError(f"{where}: cannot read YAML: {exc}") from exc


def _find_kustomization(directory: Path) -> Path:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _key(res: Resource) -> tuple[str, str, str]:
    meta = res.get("metadata", {})
    return (res["kind"], meta.get("namespace", ""), meta["name"])


def render(directory: str | Path) -> list[Resource]:
    """Render the kustomization in `directory` to a list of objects."""
    return _render(Path(directory).resolve(), stack=(), accumulated=[], kind="Kustomization")


def _render(directory: Path, stack: tuple[Path, ...], accumulated: list[Resource], kind: str) -> list[Resource]:
    """Render `directory` into `accumulated`: a fresh list for a Kustomization, the including kustomization's
    resources so far for a Component (which adds to them and patches them, as kustomize does)."""
    if directory in stack:
        raise KustomizeError(f"{directory}: kustomization cycle via {' -> '.join(map(str, stack))}")
    kfile = _find_kustomization(directory)
    spec = _parse_yaml(kfile.read_text(encoding="utf-8"), kfile) or {}
    if not isinstance(spec, dict):
        raise KustomizeError(f"{kfile}: a kustomization must be a mapping")
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported kustomization fields: {sorted(unknown)}")
    _check_kind(spec, kfile, kind)

    resources = accumulated
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources.extend(_render(target, (*stack, directory), accumulated=[], kind="Kustomization"))
        elif target.is_file():
            _check_inside(directory, target, kfile, allow_parent=False)
            resources.extend(load_yaml_documents(target))
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} does not exist")

    for entry in spec.get("components", []):
        target = (directory / entry).resolve()
        if not target.is_dir():
            raise KustomizeError(f"{kfile}: component {entry!r} is not a directory with a kustomization")
        _render(target, (*stack, directory), accumulated=resources, kind="Component")

    options = spec.get("generatorOptions", {})
    for gen_kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in spec.get(key, []):
            _apply_generator(resources, gen_kind, gen, options, directory, kfile)

    for patch in spec.get("patches", []):
        _apply_patch(resources, patch, directory, kfile)

    namespace = spec.get("namespace")
    if namespace:
        for res in resources:
            if res["kind"] not in CLUSTER_SCOPED:
                res["metadata"]["namespace"] = namespace
    seen: set[tuple[str, str, str]] = set()
    for res in resources:
        if _key(res) in seen:
            raise KustomizeError(f"{kfile}: duplicate object {_key(res)}")
        seen.add(_key(res))
    return resources


def _check_kind(spec: Resource, kfile: Path, expected: str) -> None:
    """A Component only under `components:`, a Kustomization only under `resources:` (kustomize refuses both
    mix-ups), each with its own apiVersion."""
    kind = spec.get("kind", "Kustomization")
    api = spec.get("apiVersion", KUSTOMIZATION_API if kind == "Kustomization" else COMPONENT_API)
    if kind not in ("Kustomization", "Component"):
        raise KustomizeError(f"{kfile}: kind {kind!r} is neither Kustomization nor Component")
    if kind != expected:
        where = "components:" if expected == "Component" else "resources:"
        raise KustomizeError(f"{kfile}: is a {kind}, but is listed under {where} (a Component goes under "
                             "components:, a Kustomization under resources:)")
    wanted = COMPONENT_API if kind == "Component" else KUSTOMIZATION_API
    if api != wanted:
        raise KustomizeError(f"{kfile}: apiVersion of a {kind} must be {wanted}, not {api!r}")


def _check_inside(root: Path, target: Path, kfile: Path, allow_parent: bool) -> None:
    if not allow_parent and not target.is_relative_to(root):
        raise KustomizeError(f"{kfile}: {target} is outside the kustomization root {root} (kustomize refuses it)")


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise KustomizeError(f"{path}: line {line!r} is not KEY=VALUE")
            values[key.strip()] = value
    return values


def _generator_data(gen: Resource, directory: Path, kfile: Path) -> dict[str, str]:
    data: dict[str, str] = {}
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for env in gen.get("envs", []):
        path = (directory / env).resolve()
        _check_inside(directory, path, kfile, allow_parent=False)
        if not path.is_file():
            raise KustomizeError(f"{kfile}: env file {env!r} of generator {gen['name']!r} does not exist")
        data.update(_read_env_file(path))
    for item in gen.get("files", []):
        key, sep, rel = item.partition("=")
        rel = rel if sep else key
        path = (directory / rel).resolve()
        _check_inside(directory, path, kfile, allow_parent=False)
        if not path.is_file():
            raise KustomizeError(f"{kfile}: file {rel!r} of generator {gen['name']!r} does not exist")
        data[Path(key).name if not sep else key] = path.read_text(encoding="utf-8")
    return data


def _apply_generator(
    resources: list[Resource], kind: str, gen: Resource, options: Resource, directory: Path, kfile: Path
) -> None:
    opts = {**options, **gen.get("options", {})}
    if not opts.get("disableNameSuffixHash"):
        raise KustomizeError(
            f"{kfile}: generator {gen['name']!r}: name suffix hashes are not supported by this renderer; "
            "set disableNameSuffixHash: true"
        )
    data = _generator_data(gen, directory, kfile)
    metadata: Resource = {"name": gen["name"]}
    if gen.get("namespace"):
        metadata["namespace"] = gen["namespace"]
    if opts.get("labels"):
        metadata["labels"] = dict(opts["labels"])
    if opts.get("annotations"):
        metadata["annotations"] = dict(opts["annotations"])
    if kind == "Secret":
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        new: Resource = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": gen.get("type", "Opaque"),
            "data": encoded,
        }
    else:
        new = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}

    behavior = gen.get("behavior", "create")
    if behavior == "create":
        resources.append(new)
        return
    if behavior not in ("replace", "merge"):
        raise KustomizeError(f"{kfile}: generator {gen['name']!r}: unknown behavior {behavior!r}")
    matches = [
        r
        for r in resources
        if r["kind"] == kind
        and r["metadata"]["name"] == gen["name"]
        and r["metadata"].get("namespace", "") == metadata.get("namespace", "")
    ]
    if len(matches) != 1:
        raise KustomizeError(
            f"{kfile}: generator {gen['name']!r} has behavior {behavior} but {len(matches)} existing "
            f"{kind} objects match (name and namespace must match exactly one)"
        )
    old = matches[0]
    if behavior == "replace":
        old.pop("data", None)
        old.pop("stringData", None)
        old["data"] = new["data"]
    else:
        if kind == "Secret" and "stringData" in old:
            old.setdefault("data", {}).update(
                {k: base64.b64encode(str(v).encode()).decode() for k, v in old.pop("stringData").items()}
            )
        old.setdefault("data", {}).update(new["data"])
    for field in ("labels", "annotations"):
        if field in metadata:
            old["metadata"].setdefault(field, {}).update(metadata[field])


def _matches_target(res: Resource, target: Resource) -> bool:
    api = res.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    checks = {
        "kind": res["kind"],
        "name": res["metadata"]["name"],
        "namespace": res["metadata"].get("namespace", ""),
        "group": group,
        "version": version,
    }
    for field, value in target.items():
        if field not in checks:
            raise KustomizeError(f"patch target field {field!r} is not supported by this renderer")
        if checks[field] != value:
            return False
    return True


def _apply_patch(resources: list[Resource], entry: Resource, directory: Path, kfile: Path) -> None:
    if "path" in entry:
        path = (directory / entry["path"]).resolve()
        _check_inside(directory, path, kfile, allow_parent=False)
        text = path.read_text(encoding="utf-8")
    elif "patch" in entry:
        text = entry["patch"]
    else:
        raise KustomizeError(f"{kfile}: a patch needs `path` or `patch`")
    body = _parse_yaml(text, f"{kfile} (patch {entry.get('path', 'inline')})")
    if isinstance(body, list):  # JSON 6902
        if "target" not in entry:
            raise KustomizeError(f"{kfile}: a JSON 6902 patch needs a target")
        targets = [r for r in resources if _matches_target(r, entry["target"])]
        if not targets:
            raise KustomizeError(f"{kfile}: patch target {entry['target']} matches no object")
        for res in targets:
            for op in body:
                _json6902(res, op, kfile)
        return
    if not isinstance(body, dict) or "kind" not in body:
        raise KustomizeError(f"{kfile}: strategic-merge patch must be one object with kind and metadata.name")
    target = entry.get("target") or {
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        **({"namespace": body["metadata"]["namespace"]} if body["metadata"].get("namespace") else {}),
    }
    targets = [r for r in resources if _matches_target(r, target)]
    if not targets:
        raise KustomizeError(f"{kfile}: patch for {target} matches no object")
    for res in targets:
        merged = _strategic_merge(res, body, parent_key="")
        res.clear()
        res.update(merged)


def _strategic_merge(base: Any, patch: Any, parent_key: str) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and parent_key in MERGE_KEYS:
        mkey = MERGE_KEYS[parent_key]
        out_list = copy.deepcopy(base)
        for item in patch:
            idx = next(
                (i for i, b in enumerate(out_list) if isinstance(b, dict) and b.get(mkey) == item.get(mkey)), None
            )
            if idx is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[idx] = _strategic_merge(out_list[idx], item, "")
        return out_list
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json6902(res: Resource, op: Resource, kfile: Path) -> None:
    parts = _pointer(op["path"])
    parent: Any = res
    try:
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[index]
            else:
                raise KustomizeError(f"{kfile}: JSON 6902 op {kind!r} is not supported")
        else:
            if kind in ("replace", "remove") and last not in parent:
                raise KustomizeError(f"{kfile}: JSON 6902 {kind} of missing path {op['path']}")
            if kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[last]
            else:
                raise KustomizeError(f"{kfile}: JSON 6902 op {kind!r} is not supported")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise KustomizeError(
            f"{kfile}: JSON 6902 path {op['path']} does not apply to {res['kind']}/{res['metadata']['name']}: {exc!r}"
        ) from exc


def dump(resources: Iterable[Resource]) -> str:
    return yaml.safe_dump_all(list(resources), sort_keys=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        sys.stdout.write(dump(render(argv[0])))
    except KustomizeError as exc:
        print(f"kustomize: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
