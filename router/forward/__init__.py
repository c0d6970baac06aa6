"""Forward workers: they drain the outbox to the peers, in this process or in one of their own."""
