"""mailguard.notify."""
