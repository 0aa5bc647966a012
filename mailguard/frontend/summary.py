"""The one summary line per transaction (logfmt): what an admin greps for."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mailguard.store.records import MessageRecord
from mailguard.verdict import CheckResult, Outcome

_RANK = {Outcome.PASS: 0, Outcome.SKIP: 1, Outcome.FAIL: 2, Outcome.ERROR: 3}
DETAIL_MAX = 200  # characters of a check's detail kept in the line


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


def summary_line(rec: MessageRecord, refused: Sequence[str] = (), *, auth: str = "",
                 checks: str | None = None) -> str:
    """`auth` (the SMTP AUTH user) appears only when set; `checks` replaces the record's
    compact `verdicts` (the line carries the details, the store the compact form)."""
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
    ]
    return " ".join(f"{k}={_quote(v)}" for k, v in fields)
