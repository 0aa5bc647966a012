"""mailguard.web."""
