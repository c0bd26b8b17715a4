"""Fixtures for the Pub/Sub emulator (filled in by the change-feed work)."""
