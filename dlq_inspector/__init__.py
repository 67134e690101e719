"""dlq_inspector package."""
