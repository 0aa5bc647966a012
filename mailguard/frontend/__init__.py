"""mailguard.frontend."""
