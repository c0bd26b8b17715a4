"""OmniQ storage on Google Cloud Storage. Only this package imports gcsfs.

Importing the package loads nothing else: modules are imported by name
(``omniq_console.backend.gcs``, ``.config``...), and gcsfs only when a store opens.
"""

DEFAULT_REFRESH = 2.0
"""Seconds between the console's polls unless told otherwise (``BackendSettings.refresh``).
Here, not in ``config.py``, so that ``omniq-console --help`` shows it without loading pydantic."""
