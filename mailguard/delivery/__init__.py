"""mailguard.delivery."""
