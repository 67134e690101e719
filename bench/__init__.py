"""Benchmark of the calc-events pipeline against the fastest Python designs, in one run (issue 7)."""
