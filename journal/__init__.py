"""The results journal: every request's outcome recorded once in PostgreSQL (docs/journal.md)."""
