"""The one summary line per transaction (logfmt): what an admin greps for, and the
`message_log` record beside it. Written the same way for mail from SMTP sessions and
from the QMAILQUEUE wrapper."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from mailguard.clock import Clock
from mailguard.context import Session, Transaction
from mailguard.metrics import Metrics
from mailguard.store.records import MessageRecord
from mailguard.verdict import CheckResult, Outcome

log = logging.getLogger("mailguard.smtp")

_RANK = {Outcome.PASS: 0, Outcome.SKIP: 1, Outcome.FAIL: 2, Outcome.ERROR: 3}
DETAIL_MAX = 200  # characters of a check's detail kept in the line
TRANSACTION_SECONDS = "mailguard_smtp_transaction_duration_seconds"


def declare_metrics(metrics: Metrics) -> None:
    metrics.declare("mailguard_transactions_total", "counter", "SMTP transactions by outcome")
    metrics.declare(TRANSACTION_SECONDS, "histogram",
                    "SMTP transaction duration (MAIL to the final reply) by outcome")


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return f'"{escaped}"'


def checks_text(results: Iterable[CheckResult], *, detail: bool = True) -> str:
    """Each check once, in the order it first ran, with its worst outcome of the
    transaction (error > fail > skip > pass). With `detail`, a failed or errored check
    carries the reason of its first such result (`dnsbl=fail(listed bl.test 127.0.0.3)`,
    prefixed `shadow: ` when its mode is `log`), and so does a pass that delayed the
    client (tarpit, limits)."""
    worst: dict[str, CheckResult] = {}
    for r in results:
        seen = worst.get(r.check)
        if seen is None or _weight(r) > _weight(seen):
            worst[r.check] = r
    parts = []
    for name, r in worst.items():
        why = r.detail.strip()
        shown = bool(why) and detail and (r.outcome in (Outcome.FAIL, Outcome.ERROR) or _delayed(r))
        if shown and not r.enforced and r.outcome is not Outcome.PASS:
            why = f"shadow: {why}"
        parts.append(f"{name}={r.outcome}({why[:DETAIL_MAX]})" if shown else f"{name}={r.outcome}")
    return " ".join(parts)


def _delayed(r: CheckResult) -> bool:
    return r.outcome is Outcome.PASS and "delay" in r.detail


def _weight(r: CheckResult) -> tuple[int, bool]:
    return _RANK[r.outcome], _delayed(r)


def direction_of(session: Session) -> str:
    """"out": an authenticated user sent it; "relay": a client allowed to relay by its
    address (RELAYCLIENT, relay_networks); "in": everyone else."""
    if session.auth_user:
        return "out"
    return "relay" if session.relay_client else "in"


def dispositions_text(tx: Transaction, *, accepted: bool) -> str:
    """What happened to each recipient, counted: of an accepted message "delivered",
    "quarantined", "deleted" (a spam box counts as delivered); recipients refused at
    RCPT as "refused4" / "refused5" by reply class. E.g. "delivered=2,refused4=1"."""
    counts: dict[str, int] = {}
    if accepted:
        for rcpt in tx.rcpts:
            d = tx.dispositions.get(rcpt)
            what = "deleted" if d is not None and d.drop else (
                "quarantined" if d is not None and d.quarantine else "delivered")
            counts[what] = counts.get(what, 0) + 1
    for refused in tx.refused:
        code = refused.rpartition("=")[2][:1]
        if code in ("4", "5"):
            counts[f"refused{code}"] = counts.get(f"refused{code}", 0) + 1
    return ",".join(f"{k}={v}" for k, v in sorted(counts.items()))


def summary_line(rec: MessageRecord, refused: Sequence[str] = (), *, auth: str = "",
                 checks: str | None = None, extra: Sequence[tuple[str, str]] = ()) -> str:
    """`auth` (the SMTP AUTH user) appears only when set; `checks` replaces the record's
    compact `verdicts` (the line carries the details, the store the compact form);
    `extra` fields go last (the QMAILQUEUE path: `source`, `exit`)."""
    fields = [
        ("event", "transaction"),
        ("session", rec.session_id),
        ("client", rec.client_ip),
        ("helo", rec.helo),
        *([("auth", auth)] if auth else []),
        ("from", f"<{rec.mail_from}>"),
        ("rcpts", ",".join(rec.rcpts)),
        ("refused", ",".join(refused)),
        ("size", str(rec.size)),
        ("result", rec.outcome),
        ("reply", str(rec.reply_code)),
        ("queue_id", rec.queue_id),
        ("checks", rec.verdicts if checks is None else checks),
        ("duration_ms", str(rec.duration_ms)),
        *extra,
    ]
    return " ".join(f"{k}={_quote(v)}" for k, v in fields)


def log_transaction(session: Session, tx: Transaction, *, outcome: str, code: int,
                    queue_id: str, started: float, clock: Clock, metrics: Metrics,
                    record: Callable[[MessageRecord], None],
                    extra: Sequence[tuple[str, str]] = ()) -> MessageRecord:
    """Write the transaction's summary line, count it, and queue its record.
    `started`: the clock's monotonic time at MAIL (or when the message came in)."""
    results = (*session.results, *tx.results)
    elapsed = clock.monotonic() - started
    rec = MessageRecord(
        ts=clock.now(),
        session_id=session.session_id,
        client_ip=str(session.client_ip),
        helo=session.helo,
        mail_from=tx.mail_from,
        rcpts=tuple(tx.rcpts),
        size=tx.size,
        outcome=outcome,
        reply_code=code,
        queue_id=queue_id,
        duration_ms=int(elapsed * 1000),
        verdicts=checks_text(results, detail=False),
        direction=direction_of(session),
        dispositions=dispositions_text(tx, accepted=outcome == "accepted"),
    )
    metrics.inc("mailguard_transactions_total", outcome=outcome)
    metrics.observe(TRANSACTION_SECONDS, elapsed, outcome=outcome)
    log.info("%s", summary_line(rec, tx.refused, auth=session.auth_user,
                                checks=checks_text(results), extra=extra))
    record(rec)
    return rec
