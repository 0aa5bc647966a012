"""`mailguard db upgrade|status`: the schema, managed by the Alembic migrations."""

from __future__ import annotations

import asyncio
import sys

from mailguard.errors import MailguardError


def run_db(action: str, url: str) -> int:
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
