"""Fixtures for the GCS rules model (filled in by the rules-model work)."""
