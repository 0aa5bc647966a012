"""The one summary line per transaction (logfmt): what an admin greps for."""

from __future__ import annotations

from collections.abc import Sequence

from mailguard.store.records import MessageRecord


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return f'"{escaped}"'


def summary_line(rec: MessageRecord, refused: Sequence[str] = ()) -> str:
    fields = [
        ("event", "transaction"),
        ("session", rec.session_id),
        ("client", rec.client_ip),
        ("helo", rec.helo),
        ("from", f"<{rec.mail_from}>"),
        ("rcpts", ",".join(rec.rcpts)),
        ("refused", ",".join(refused)),
        ("size", str(rec.size)),
        ("result", rec.outcome),
        ("reply", str(rec.reply_code)),
        ("queue_id", rec.queue_id),
        ("checks", rec.verdicts),
        ("duration_ms", str(rec.duration_ms)),
    ]
    return " ".join(f"{k}={_quote(v)}" for k, v in fields)
