"""The QUEUE stage: virus and spam scanning, per-recipient dispositions, groups."""
