"""`mailguard db upgrade|status`: the schema, managed by the Alembic migrations."""

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
