"""What an app is to Postgres, asked from inside its own container or pod with its own DSN: the live compose test
and the cluster test run the same probe (python3 -c ROLE_PROBE, printing one JSON object)."""

from __future__ import annotations

from typing import Any

# Who the app is to Postgres, and what Postgres lets it do. Each change is tried in a transaction that is rolled
# back, so a role that could (the superuser the apps used to log in as) changes nothing here either.
ROLE_PROBE = """
import asyncio, json, os, asyncpg
TRIES = {"create": "CREATE TABLE somamemory.planted (x int)", "drop": "DROP TABLE somamemory.memories",
         "truncate": "TRUNCATE somabrain.audit_events", "role": "CREATE ROLE planted"}
async def main():
    conn = await asyncpg.connect(os.environ["SOMABRAIN_POSTGRES_DSN"], timeout=10)
    out = {"user": await conn.fetchval("SELECT current_user"),
           "superuser": await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")}
    for name, statement in TRIES.items():
        tr = conn.transaction()
        await tr.start()
        try:
            await conn.execute(statement)
            out[name] = "allowed"
        except asyncpg.InsufficientPrivilegeError:
            out[name] = "denied"
        finally:
            await tr.rollback()
    out["reads"] = await conn.fetchval("SELECT count(*) >= 0 FROM somamemory.memories")
    await conn.close()
    print(json.dumps(out))
asyncio.run(main())
"""


def runtime_role(user: str) -> dict[str, Any]:
    """The probe's answer for the runtime role `user` (brain/dbinit.py): it reads, and may change nothing."""
    return {"user": user, "superuser": False, "create": "denied", "drop": "denied", "truncate": "denied",
            "role": "denied", "reads": True}
