"""The baseline: a bare Quart hello-world, served by the same Hypercorn settings as somabrain.

A copy of tests/bench/hello_app.py (load/ never imports tests/). `python -m load baseline` serves it from the
somabrain image with the somabrain container's CPU and memory limits.
"""

from quart import Quart

app = Quart("hello")


@app.get("/")
async def hello() -> dict[str, bool]:
    return {"ok": True}
