"""Moved to localservers/servers.py (the benchmarks use it too, and a tool must not import the tests tree).

Kept only for tests/ops/test_rotate_postgres.py, which still imports it here and is being edited by its owner; once
it imports localservers.servers, this module goes. Import localservers.servers in anything new.
"""

from localservers.servers import *  # noqa: F403
