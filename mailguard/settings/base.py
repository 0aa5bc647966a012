"""What every settings section shares: the `Invalid` error its `validate()` raises and
the `HOST:PORT` parser. It lives here, below `mailguard.config`, so that the sections
never import the module that assembles them. Standard library only."""

from __future__ import annotations


class Invalid(Exception):
    """Raised by a section's `validate()` for one of its keys; the loader turns it into a
    ConfigError naming the file and the full key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def parse_hostport(value: str, default_port: int = 25) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT`, `HOST` → (host, port); raises ValueError."""
    host, port = value, default_port
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"missing ']' in {value!r}")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':PORT' after ']' in {value!r}")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        port = int(p)
    elif ":" in value:
        raise ValueError(f"write IPv6 addresses as [ADDR]:PORT, not {value!r}")
    if not host:
        raise ValueError(f"missing host in {value!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


__all__ = ["Invalid", "parse_hostport"]
