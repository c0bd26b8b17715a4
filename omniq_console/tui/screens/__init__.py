"""Screens pushed over the main screen: task detail, confirmations, help."""
