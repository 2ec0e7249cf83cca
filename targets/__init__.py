"""One way into a running environment, for conformance, ops and load alike.

`Target` (targets/base.py) is the interface: probes from inside a workload (DNS, TCP, HTTP), running any command in
one (`exec`, with stdin and a streamed stdout), what a workload declares (`declared`), and the environment's own
next commands for a human. `ComposeTarget` (compose.py) implements it for a Docker Compose project through the
docker CLI; `KubeTarget` (kube.py) for a Kubernetes namespace through the kubernetes client, with `kube_api.py`
for the writes the operator tools make. Callers hold a `Target` and never ask which one it is.
"""
