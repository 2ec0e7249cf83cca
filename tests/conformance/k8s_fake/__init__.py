"""A FAKE Kubernetes API server, for testing the prod target without a cluster.

Why a fake: no kind, k3s or kube-apiserver can run on our machines (no registry carries them), and the prod
target (conformance/targets/kube.py) must still be tested through the real `kubernetes` Python client. So this
is a plain HTTP server that answers the API paths the target uses with the API's real JSON shapes, built from
the project's own k8s/ manifests (rendered by conformance.loaders):

- Deployments/StatefulSets, Services, NetworkPolicies, Ingress, ConfigMaps, Secrets: the rendered objects, plus
  (from_k8s_dir) the Secrets k8s/ refers to but does not ship, as scripts/k8s_secrets.sh creates them;
- Pods: one per replica of each workload, from its pod template, Running with a Ready condition (or not Ready
  when `unready` names the workload), with podIPs;
- Endpoints: one per Service with a selector, listing the Ready pods it selects;
- Namespaces: somabrain-prod (kubernetes.io/metadata.name label) and any others asked for;
- pod `exec`: the websocket upgrade with the v4.channel.k8s.io subprotocol (stdout 1, stderr 2, status 3),
  exactly what kubernetes.stream speaks. The command runs through `exec_handler(pod, command)`; the default
  runs it as a local process, so the probe script really runs and really opens sockets (on 127.0.0.1).

It is not a cluster: no scheduling, no watches, no writes, no NetworkPolicy enforcement.
"""

from tests.conformance.k8s_fake.server import FakeCluster, local_exec

__all__ = ["FakeCluster", "local_exec"]
