"""The views of the main screen, one per tab."""
