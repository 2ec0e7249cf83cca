"""Moved to conformance/loaders/kustomize.py (the parity gate renders k8s/ with it).

This shim keeps `python -m tests.deploy.kustomize_render DIR` working for scripts that still call it.
"""

from __future__ import annotations

import sys

from conformance.loaders.kustomize import KustomizeError, dump, load_yaml_documents, main, render

__all__ = ["KustomizeError", "dump", "load_yaml_documents", "main", "render"]

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
