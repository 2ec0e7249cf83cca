"""Operator tools for a running SomaBrain: `somabrain doctor | migrate | rollout | rotate`.

Each module's `main(argv) -> int` is registered under the `somabrain.commands` entry-point group (pyproject), so
`brain/` never imports this package. Every tool works on an environment through the conformance target layer
(`conformance.targets`: compose via docker, Kubernetes via the kubernetes client) and never re-implements it.
"""
