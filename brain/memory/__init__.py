"""The API's side of SomaMemory: everything a long-term memory write goes through before SomaMemory has it.

- `client`: the HTTP client for SomaMemory (`SOMABRAIN_MEMORY_HTTP_ENDPOINT`) and what its failures mean;
- `journal`: the durable local journal for /remember while SomaMemory is down (`SOMABRAIN_JOURNAL_DIR`), the one
  owner of its format (batch files, tombstones, the replay lock), with an operator CLI,
  `python3 -m brain.memory.journal export|import`, that `somabrain migrate` runs inside the API's workload;
- `replay`: the background loop that sends journalled writes to SomaMemory once it answers again.

SomaMemory itself, the server, is `brain.somamemory`. This package imports no submodule here, so that
`python -m brain.memory.journal` runs the journal module once.
"""
