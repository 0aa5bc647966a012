"""`mailguard db upgrade|status`: the schema, managed by the Alembic migrations;
`mailguard db copy`: a whole store into a new database (store/copy.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    db = sub.add_parser("db", help="database schema tools")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, text in (("upgrade", "create or upgrade the database schema"),
                       ("status", "show the schema revision (exit 1 when out of date)")):
        p = db_sub.add_parser(name, help=text, description=text)
        add_common(p)
        p.set_defaults(func=_cmd_db)
    text = "copy every table into a new, empty database (e.g. SQLite to PostgreSQL)"
    p = db_sub.add_parser(
        "copy", help=text,
        description=f"{text[0].upper()}{text[1:]}. The source must be at the current "
        "schema revision; the target is migrated first and must hold no mailguard rows. "
        "Stop the daemons writing to the source first. Progress goes to stderr. "
        "Exit status: 0 copied, 1 failed or refused (nothing kept), 2 usage.")
    p.add_argument("--from", dest="source", metavar="URL", required=True,
                   help="the store to read (sqlite:///FILE or postgresql://...)")
    p.add_argument("--to", dest="target", metavar="URL", required=True,
                   help="the empty database to fill (postgresql://... or sqlite:///FILE)")
    p.add_argument("--batch-rows", type=_positive, default=5000,  # store.copy.BATCH_ROWS
                   metavar="N",
                   help="rows per read and insert (default 5000)")
    p.set_defaults(func=_cmd_copy)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _cmd_db(args: argparse.Namespace) -> int:
    from mailguard.cli.main import load_config  # noqa: PLC0415

    config = load_config(args)
    return run_db(args.db_command, config.store.url)


def run_db(action: str, url: str) -> int:
    import asyncio  # noqa: PLC0415

    from mailguard.errors import MailguardError  # noqa: PLC0415
    from mailguard.store.engine import safe_url  # noqa: PLC0415
    from mailguard.store.migrate import current_revision, head_revision, upgrade  # noqa: PLC0415

    try:
        if action == "upgrade":
            before, after = asyncio.run(upgrade(url))
            if before == after:
                print(f"database {safe_url(url)} is up to date (revision {after})")
            else:
                print(f"database {safe_url(url)} upgraded: {before or '(empty)'} -> {after}")
            return 0
        current = asyncio.run(current_revision(url))
        head = head_revision()
        state = "up to date" if current == head else "OUT OF DATE: run 'mailguard db upgrade'"
        print(f"database {safe_url(url)}: revision {current or '(not initialised)'}, "
              f"mailguard needs {head}: {state}")
        return 0 if current == head else 1
    except MailguardError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return 1


def _cmd_copy(args: argparse.Namespace) -> int:
    return run_copy(args.source, args.target, batch_rows=args.batch_rows)


def run_copy(source: str, target: str, *, batch_rows: int) -> int:
    """`mailguard db copy`: progress per table on stderr, a summary on stdout."""
    import asyncio  # noqa: PLC0415

    from mailguard.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE  # noqa: PLC0415
    from mailguard.errors import ConfigError, MailguardError  # noqa: PLC0415
    from mailguard.store.copy import copy_store  # noqa: PLC0415
    from mailguard.store.engine import safe_url  # noqa: PLC0415

    tty = sys.stderr.isatty()

    def progress(table: str, done: int, total: int) -> None:
        if tty:  # one line per table, rewritten in place
            end = "\n" if done == total else ""
            print(f"\r{table}: {done}/{total} rows", end=end, file=sys.stderr, flush=True)
        elif done or not total:  # a log: a line per batch
            print(f"{table}: {done}/{total} rows", file=sys.stderr, flush=True)

    try:
        copied = asyncio.run(copy_store(source, target, batch_rows=batch_rows,
                                        progress=progress))
    except ConfigError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MailguardError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    rows = sum(t.rows for t in copied)
    print(f"copied {rows} rows in {len(copied)} tables from {safe_url(source)} "
          f"to {safe_url(target)}")
    return EXIT_OK
