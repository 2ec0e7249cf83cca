"""Loaders: read compose files and Kubernetes manifests into typed models, or fail with InputError."""

from __future__ import annotations

from conformance.loaders.compose import ComposeProject, ComposeService, load_project
from conformance.loaders.errors import InputError
from conformance.loaders.k8s import Manifests, Workload, load_manifests

__all__ = [
    "ComposeProject",
    "ComposeService",
    "InputError",
    "Manifests",
    "Workload",
    "load_manifests",
    "load_project",
]
