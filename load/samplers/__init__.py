"""Resource samplers: one sample per workload about once a second, plus OOM kills and restarts.

`docker_stats.DockerSampler` (dev: Docker Engine API) and `kube_metrics.KubeSampler` (prod: metrics.k8s.io and
the pod spec) both produce `model.Sample` and `model.Event` records.
"""
