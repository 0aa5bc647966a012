"""`mailguard log recent|counts|purge`: the message log (one row per transaction, from
SMTP sessions and the QMAILQUEUE wrapper alike).

Exit status: 0 done, 1 runtime failure (store unreachable), 2 usage error."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.store.database import Database
    from mailguard.store.records import MessageRecord


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    lg = sub.add_parser("log", help="the message log: recent, counts, purge",
                        description="Transactions as the daemon recorded them "
                        "(the store's message_log table).")
    lg_sub = lg.add_subparsers(dest="log_command", metavar="ACTION", required=True)

    recent = lg_sub.add_parser("recent", help="the newest transactions, newest first")
    add_common(recent)
    recent.add_argument("--limit", type=int, default=20, metavar="N", help="rows (default 20)")
    recent.set_defaults(func=_cmd)

    counts = lg_sub.add_parser("counts", help="transactions per result in a recent period")
    add_common(counts)
    counts.add_argument("--since", default="24h", metavar="DURATION",
                        help="how far back: 24h, 7d, 15m (default 24h)")
    counts.set_defaults(func=_cmd)

    purge = lg_sub.add_parser("purge", help="delete transactions older than a duration",
                              description="Delete message_log rows older than --older-than, "
                              "in batches that never hold up the daemon's own writes.")
    add_common(purge)
    purge.add_argument("--older-than", required=True, metavar="DURATION",
                       help="e.g. 7d, 12h")
    purge.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415
    from mailguard.cli.override import parse_duration  # noqa: PLC0415
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415

    config = load_config(args)
    try:
        period_s = parse_duration(getattr(args, "since", None) or
                                  getattr(args, "older_than", None) or "1s")
        if getattr(args, "limit", 1) <= 0:
            raise ValueError("--limit must be > 0")
    except ValueError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def act(db: Database) -> int:
        from mailguard.store.message_log import MessageLogStore  # noqa: PLC0415

        repo = MessageLogStore(db)
        now = time.time()
        if args.log_command == "recent":
            print(format_records(await repo.recent(args.limit)), end="")
        elif args.log_command == "counts":
            counts = await repo.counts(now - period_s)
            for outcome, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                print(f"{outcome}: {n}")
            print(f"total: {sum(counts.values())} (since {_when(now - period_s)} UTC)")
        else:
            print(f"purged {await repo.purge(now - period_s)} transactions")
        return 0

    return run_with_store(config.store.url, act)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def format_records(rows: list[MessageRecord]) -> str:
    """One line per transaction: time (UTC), result and reply, client, sender,
    recipients, checks."""
    if not rows:
        return "(no transactions)\n"
    lines = [f"{_when(r.ts)}  {r.outcome} {r.reply_code}  {r.client_ip}  <{r.mail_from}> "
             f"-> {','.join(r.rcpts) or '-'}  {r.verdicts}".rstrip() for r in rows]
    return "\n".join(lines) + "\n"
