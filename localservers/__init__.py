"""Real servers on 127.0.0.1 for the tests and the benchmarks: Redis, Postgres, the apps, ...; started and stopped by
their users.

servers.py starts redis-server, PostgreSQL and our own apps (SomaMemory, the API) as Hypercorn processes on free
ports; corpus.py is the seeded synthetic corpus the recall tests and benchmarks fill them with. tests/ and bench/
both use them, so they live outside either (a tool must not import the tests tree). Not installed: they run from
the checkout, like the tests and bench/.
"""
