"""The baseline: a bare Quart hello-world, served by the same Hypercorn settings as somabrain."""

from quart import Quart

app = Quart("hello")


@app.get("/")
async def hello() -> dict[str, bool]:
    return {"ok": True}
