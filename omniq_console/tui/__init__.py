"""The Textual console. The only package that imports Textual."""

from .app import ConsoleApp, build_app
from .source import SnapshotSource, StaticSource

__all__ = ["ConsoleApp", "SnapshotSource", "StaticSource", "build_app"]
