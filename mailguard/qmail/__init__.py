"""mailguard.qmail."""
