"""Loads the live suite's pytest plugin (conformance/live/plugin.py) for `pytest conformance/ --env dev|prod`."""

pytest_plugins = ["conformance.live.plugin"]
