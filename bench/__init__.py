"""Benchmarks run by hand, never in CI: `make bench` (core.py), `make bench-recall` (recall.py), `make bench-quota`
(quota.py). Each starts the real servers it measures on free ports of 127.0.0.1, with the helpers it shares with the
tests (localservers/servers.py), and fills or times parts of brain/ in process where that is what is measured."""
