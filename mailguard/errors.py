"""The error vocabulary. Clients of external services raise these; only the pipeline
runner turns them into verdicts, according to the check's failure policy."""

from __future__ import annotations


class MailguardError(Exception):
    """Base of every mailguard error."""


class TemporaryError(MailguardError):
    """A failure that may go away: a service down, a timeout, a full disk."""


class PermanentError(MailguardError):
    """A failure that retrying will not fix: malformed input, a refused request."""


class ConfigError(MailguardError):
    """Invalid configuration: names the source (file), the key and the reason."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(f"{source}: {key}: {reason}")
