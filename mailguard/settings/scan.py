"""`[clamd]`, `[spamd]`, `[spam]` and `[scan]`: content scanning at the QUEUE stage.

Standard library only (the lean entry points load the whole configuration). Every
failure mode has an explicit, configured action; none of them passes mail silently."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mailguard.settings.base import Invalid, parse_hostport

SPAM_ACTIONS = ("tag", "release", "user-box", "domain-box", "central-box", "quarantine",
                "delete")
SpamAction = Literal["tag", "release", "user-box", "domain-box", "central-box", "quarantine",
                     "delete"]
_ADDRESS_RE = re.compile(r"^[^\x00-\x20\x7f<>@]+@[^\x00-\x20\x7f<>@]+$")
_LOCALPART_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")


def check_servers(key: str, servers: tuple[str, ...], default_port: int) -> None:
    """Servers are `unix:/path` or `HOST:PORT` / `[v6]:PORT`; raises Invalid."""
    for item in servers:
        if item.startswith("unix:"):
            if not item[5:].startswith("/"):
                raise Invalid(key, f"{item!r}: write unix sockets as unix:/absolute/path")
            continue
        try:
            parse_hostport(item, default_port)
        except ValueError as exc:
            raise Invalid(key, str(exc)) from None


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise Invalid(key, f"must be > 0, got {value}")


@dataclass(frozen=True)
class ClamdConfig:
    """Virus scanning with clamd (zINSTREAM). Off until `enabled = true`."""

    enabled: bool = False
    # tried in order until one answers: "unix:/path/clamd.sock", "127.0.0.1:3310"
    servers: tuple[str, ...] = ("unix:/var/run/clamav/clamd.ctl",)
    connect_timeout_s: float = 5.0  # per server
    scan_timeout_s: float = 60.0  # sending + clamd's answer, per server
    # clamd's StreamMaxLength (checked before sending: clamd drops the connection
    # mid-stream otherwise)
    max_size_bytes: int = 25 * 1024 * 1024
    # scanner down / timeout / ERROR: "tempfail" (451, exit 71) or "pass" (delivered with
    # `X-MailGuard-Virus-Scan: unscanned (error)`, logged and counted)
    on_error: Literal["tempfail", "pass"] = "tempfail"
    # over max_size_bytes: "pass" (delivered with `X-MailGuard-Virus-Scan: skipped
    # (size)`), "tempfail" (451, exit 71) or "reject" (554, exit 31)
    on_too_large: Literal["tempfail", "reject", "pass"] = "pass"

    def validate(self) -> None:
        check_servers("servers", self.servers, 3310)
        if self.enabled and not self.servers:
            raise Invalid("servers", "at least one server is needed when enabled")
        _positive("connect_timeout_s", self.connect_timeout_s)
        _positive("scan_timeout_s", self.scan_timeout_s)
        _positive("max_size_bytes", self.max_size_bytes)


@dataclass(frozen=True)
class SpamdConfig:
    """Spam scanning with spamd (SPAMC/1.5). Off while `servers` is empty; then only
    recipients whose domain (or own settings) enabled filtering are scanned."""

    servers: tuple[str, ...] = ()  # "127.0.0.1:783", "unix:/run/spamd.sock"; in order
    timeout_s: float = 30.0  # one scan (connect + answer), per server
    # like spamc's 500 KB: bigger messages are not scanned, `X-Spam-Status: unscanned
    # (size)` is added instead
    max_size_bytes: int = 500 * 1024
    # spamd down / timeout / error: "tempfail" (451, exit 71) or "pass" (delivered with
    # `X-Spam-Status: unscanned`, logged and counted)
    on_error: Literal["tempfail", "pass"] = "tempfail"
    max_parallel: int = 4  # concurrent scans of one message (one per distinct recipient)

    def validate(self) -> None:
        check_servers("servers", self.servers, 783)
        _positive("timeout_s", self.timeout_s)
        _positive("max_size_bytes", self.max_size_bytes)
        _positive("max_parallel", self.max_parallel)


@dataclass(frozen=True)
class SpamConfig:
    """What happens to spam, for recipients whose domain enabled filtering and who did not
    choose otherwise (see docs/scanning.md for each action)."""

    default_action: SpamAction = "tag"
    subject_prefix: str = "[SPAM]"  # action "tag": put before the Subject of spam
    report_header: bool = False  # add X-Spam-Report (spamd's report) to spam
    central_box: str = ""  # action "central-box": the one spam box address
    domain_box_localpart: str = "spam"  # action "domain-box": spam@<domain> by default
    # action "user-box": <local>-spam@<domain> (a qmail extension: ~user/.qmail-spam)
    user_box_extension: str = "spam"

    def validate(self) -> None:
        if self.central_box and not _ADDRESS_RE.match(self.central_box):
            raise Invalid("central_box", f"{self.central_box!r} is not an address")
        if self.default_action == "central-box" and not self.central_box:
            raise Invalid("central_box", "needed when default_action = 'central-box'")
        for key in ("domain_box_localpart", "user_box_extension"):
            value = getattr(self, key)
            if not _LOCALPART_RE.match(value):
                raise Invalid(key, f"{value!r} is not a plain local part")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in self.subject_prefix):
            raise Invalid("subject_prefix", "control characters are not allowed")


@dataclass(frozen=True)
class ScanConfig:
    """The QUEUE stage as a whole."""

    # one deadline for all scans of a message, well below qmail-smtpd's and clients'
    # timeouts (a client that gives up resends: duplicates); exceeded → 451, exit 71
    deadline_s: float = 120.0

    def validate(self) -> None:
        _positive("deadline_s", self.deadline_s)
