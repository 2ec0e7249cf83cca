"""SomaMemory: the durable memory store (port 9595), persisted in Postgres, served from the same image."""
