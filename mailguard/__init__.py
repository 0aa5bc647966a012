"""mailguard: a qmail-compatible mail filtering pipeline."""

__version__ = "0.1.0"
