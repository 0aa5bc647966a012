"""mailguard.checks."""
