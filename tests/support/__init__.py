"""Test-only support: which broker the integration tests use, its admin, and private RabbitMQ nodes."""
