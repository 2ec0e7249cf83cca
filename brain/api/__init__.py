"""The SomaBrain API app (port 9696): remember, recall, act; health, readiness and metrics."""
