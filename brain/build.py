"""The build identifier `/healthz` reports: "dev" in a source tree; an image build may overwrite this file.

`scripts/loop_latency.py` edits it to time the dev loop from a saved change to the new code answering.
"""

BUILD = "dev"
