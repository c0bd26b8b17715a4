"""Benchmarks of omniq-console: run ``python benchmarks/run.py`` (see README.md here)."""
