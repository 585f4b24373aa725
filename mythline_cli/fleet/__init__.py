"""The built-in fleet: record schemas, topic queues and prompts."""
