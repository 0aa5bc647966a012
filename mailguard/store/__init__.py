"""mailguard.store."""
