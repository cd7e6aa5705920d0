"""Infrastructure events: schema, transactional outbox and the NATS JetStream relay."""
