"""`[metrics]`: the Prometheus endpoint of the daemon."""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.settings.base import Invalid, parse_hostport


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # "127.0.0.1:9125" serves GET /metrics; empty = no endpoint

    def validate(self) -> None:
        if self.listen:
            try:
                parse_hostport(self.listen, 9125)
            except ValueError as exc:
                raise Invalid("listen", str(exc)) from None
