"""mailguard.scanners."""
