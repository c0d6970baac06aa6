"""The outbox: durable jobs for the peers, written with the object or message that made them."""
