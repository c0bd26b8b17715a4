"""``python -m omniq_console`` works like the ``omniq-console`` script."""

from .cli import main

main()
