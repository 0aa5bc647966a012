"""mailguard.cli."""
