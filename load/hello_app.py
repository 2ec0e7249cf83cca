"""The baseline: a bare Quart hello-world, served by the same Hypercorn settings as somabrain.

The baseline of both comparisons: `python -m load baseline` serves it from the somabrain image with the somabrain
container's CPU and memory limits, and `make bench` (bench/core.py) serves it beside the API on this machine.
"""

from quart import Quart

app = Quart("hello")


@app.get("/")
async def hello() -> dict[str, bool]:
    return {"ok": True}
