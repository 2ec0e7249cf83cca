"""Load profiles: locust runs that check real CPU/memory use against the declared limits, with SLA verdicts.

    python -m load run --env dev --profile steady      # locust + resource sampling + verdict + plots
    python -m load baseline                            # somabrain's throughput as a ratio to a bare Quart app

The service is seen only from outside: HTTP, the Docker Engine API and the Kubernetes API. Nothing here
imports `brain`; the names of the services (the compose project's API service, the namespace) come from the
service inventory, conformance.inventory.
"""
