"""OmniQ storage on Google Cloud Storage. Only this package imports gcsfs."""
