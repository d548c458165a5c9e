"""Benchmarks that print tables (speed goals live here, not in timed unit tests)."""
