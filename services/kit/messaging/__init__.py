"""NATS JetStream: the connection, the transactional outbox relay and idempotent consumers."""
