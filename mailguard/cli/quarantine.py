"""`mailguard quarantine list|show|release|delete|purge`: the admin's face of the
quarantine (the web page is the users'; both use mailguard.quarantine).

Exit status: 0 done, 1 runtime failure (store or quarantine directory unreachable, the
release's delivery refused it), 2 usage error, 3 no such held message."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.store.database import Database
    from mailguard.store.quarantine import Entry

EXIT_NOT_FOUND = 3


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    q = sub.add_parser("quarantine", help="list, release, delete and purge quarantined mail",
                       description="Messages kept in mailguard's quarantine ([quarantine]).")
    q_sub = q.add_subparsers(dest="q_command", metavar="ACTION", required=True)

    ls = q_sub.add_parser("list", help="held messages, newest first")
    add_common(ls)
    who = ls.add_mutually_exclusive_group()
    who.add_argument("--rcpt", metavar="ADDRESS", help="only this recipient's")
    who.add_argument("--domain", metavar="DOMAIN", help="only this domain's")
    ls.add_argument("--status", default="held",
                    choices=["held", "releasing", "released", "deleted"])
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="rows (default 50)")
    ls.set_defaults(func=_cmd)

    for name, text in (("show", "print a held message as it would be delivered"),
                       ("release", "deliver a held message to its recipient, once"),
                       ("delete", "delete a held message")):
        p = q_sub.add_parser(name, help=text)
        add_common(p)
        p.add_argument("ids", type=int, nargs="+", metavar="ID")
        p.set_defaults(func=_cmd)

    purge = q_sub.add_parser("purge", help="remove expired messages (run daily from cron)",
                             description="Remove held messages older than [quarantine] days "
                             "and week-old history rows, with their files.")
    add_common(purge)
    purge.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from mailguard.cli.main import EXIT_FAILURE, EXIT_USAGE, load_config  # noqa: PLC0415
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415

    config = load_config(args)
    if not config.quarantine.enabled:
        print("mailguard: no quarantine: set [quarantine] directory in the configuration",
              file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "limit", 1) <= 0:
        print("mailguard: --limit must be > 0", file=sys.stderr)
        return EXIT_USAGE

    async def act(db: Database) -> int:
        from mailguard.clock import SystemClock  # noqa: PLC0415
        from mailguard.delivery.methods import build_delivery  # noqa: PLC0415
        from mailguard.quarantine import QuarantineService  # noqa: PLC0415
        from mailguard.store.quarantine import Scope  # noqa: PLC0415

        clock = SystemClock()
        q = QuarantineService(config.quarantine, db, clock)
        everything = Scope()
        cmd = args.q_command
        if cmd == "list":
            scope = Scope(rcpt=args.rcpt or "", domain=args.domain or "")
            rows = await q.store.page(scope, status=args.status, limit=args.limit)
            print(format_entries(rows), end="")
            return 0
        if cmd == "purge":
            print(f"purged {await q.purge()} quarantine entries")
            return 0
        status = 0
        for entry_id in args.ids:
            if cmd == "show":
                entry = await q.store.get(entry_id, everything)
                if entry is None or entry.status != "held":
                    print(f"mailguard: {entry_id}: no such held message", file=sys.stderr)
                    status = status or EXIT_NOT_FOUND
                    continue
                sys.stdout.buffer.write(q.read(entry))
                sys.stdout.flush()
            elif cmd == "delete":
                if await q.delete(entry_id, everything, by="cli") is None:
                    print(f"mailguard: {entry_id}: no such held message", file=sys.stderr)
                    status = status or EXIT_NOT_FOUND
                else:
                    print(f"{entry_id}: deleted")
            else:
                done = await q.release(entry_id, everything, build_delivery(config, clock),
                                       by="cli", allow_virus=True)
                if done.delivered is None:
                    print(f"mailguard: {entry_id}: no such held message", file=sys.stderr)
                    status = status or EXIT_NOT_FOUND
                elif not done.ok:
                    print(f"mailguard: {entry_id}: the delivery refused it: "
                          f"{done.delivered.reply}", file=sys.stderr)
                    status = EXIT_FAILURE
                else:
                    print(f"{entry_id}: released to {done.entry.rcpt if done.entry else '?'}"
                          f" ({done.delivered.queue_id or 'queued'})")
        return status

    return run_with_store(config.store.url, act)


def format_entries(rows: list[Entry]) -> str:
    if not rows:
        return "(none)\n"
    lines = []
    for e in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.ts))
        score = f"{e.score:.1f}" if e.score is not None else "-"
        lines.append(f"{e.id}\t{when}\t{e.kind}\t{score}\t{e.size}\t{e.rcpt}\t"
                     f"<{e.mail_from}>\t{e.subject}")
    return "ID\tRECEIVED (UTC)\tKIND\tSCORE\tSIZE\tRECIPIENT\tSENDER\tSUBJECT\n" + \
        "\n".join(lines) + "\n"
