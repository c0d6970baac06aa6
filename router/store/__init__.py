"""Durable storage: object files, the SQLModel index and the outbox."""
