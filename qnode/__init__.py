"""Shared pieces that every layer may import, nothing with I/O: errors, the time tagger's
binary record layouts (records), the heralded two-node state (heralding)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qnode")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
