"""The embedded demo: a local GCS emulator and a simulated OmniQ fleet."""
