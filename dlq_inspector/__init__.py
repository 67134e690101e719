"""The DLQ inspector: reads, explains, reports, replays and purges calc.dlq without losing a message."""
