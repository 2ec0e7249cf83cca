"""SomaBrain: a cognitive-memory API (remember, recall, act) and its SomaMemory store."""

__version__ = "0.1.0"
