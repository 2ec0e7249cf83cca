"""Shared helpers for the test suite (token minting, the OPA stand-in process)."""
