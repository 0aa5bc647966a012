"""qmail's rules and formats, byte for byte: control files, addresses, relay rules, the
qmail-queue protocol and exit statuses, and qmail's reply texts. No third-party imports
(standard library, mailguard.verdict and mailguard.errors)."""
