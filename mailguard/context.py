"""What checks see: the connection (session) and the current transaction."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailguard.body import Body
from mailguard.clock import Clock
from mailguard.verdict import CheckResult, Disposition, Verdict

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Transaction:
    """One MAIL FROM … DATA exchange. Recipients are kept as accepted (after checks)."""

    mail_from: str
    mail_params: dict[str, str] = field(default_factory=dict)
    rcpts: list[str] = field(default_factory=list)
    rcpt: str = ""  # the recipient being checked at the RCPT stage
    # the message (LF line ends) from the DATA stage on: in memory or spooled to disk
    # (mailguard/body.py); read it by pieces (`head`, `header_block`, `stream`)
    body: Body = field(default_factory=Body)
    size: int = 0
    refused: list[str] = field(default_factory=list)  # "addr=code" of refused recipients
    # header lines (without CRLF) that checks want prepended to the message
    add_headers: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    # what checks learn and share within the transaction, e.g. facts["spf"] = "pass"
    facts: dict[str, str] = field(default_factory=dict)
    # QUEUE stage: what happens for each recipient (absent = deliver unchanged), and
    # header lines every copy gets on top (e.g. the virus scan status)
    dispositions: dict[str, Disposition] = field(default_factory=dict)
    queue_headers: list[str] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        """The whole message in memory: for checks that must parse all of it. A big
        message is read from its spool file, so prefer `body` where pieces do."""
        return self.body.read_all()


@dataclass
class Session:
    """One SMTP connection and what is known about the client."""

    client_ip: IPAddress
    client_port: int
    clock: Clock
    client_host: str = ""  # reverse DNS name (TCPREMOTEHOST) when known
    local_ip: str = ""
    local_port: int = 0
    helo: str = ""
    esmtp: bool = False
    tls: bool = False
    auth_user: str = ""
    relay_client: bool = False
    relay_suffix: str = ""  # RELAYCLIENT's value: appended to every recipient, as qmail does
    env: Mapping[str, str] = field(default_factory=dict)
    session_id: str = ""
    deferred: list[Verdict] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # shared by checks, per connection
    rcpt_count: int = 0  # recipients accepted in this connection (tarpitting)
    transaction: Transaction | None = None
    transactions: int = 0

    def record(self, result: CheckResult) -> None:
        """Keep a result on the transaction when there is one, else on the session."""
        if self.transaction is not None:
            self.transaction.results.append(result)
        else:
            self.results.append(result)
