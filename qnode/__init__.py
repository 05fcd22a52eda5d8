"""Shared pieces that every layer may import: errors and units (nothing with I/O)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qnode")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
