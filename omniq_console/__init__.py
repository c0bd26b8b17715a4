"""omniq-console: OmniQ's Google Cloud Storage backend and an operator console."""

__version__ = "0.1.0"
