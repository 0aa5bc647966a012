"""The one way a command works on the store: open it, run, close it, and turn a
MailguardError (store unreachable, schema out of date, a failed write) into its message
on stderr and exit status 1. Cheap to import: the store is imported when a command runs."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailguard.store.database import Database


def run_with_store(url: str, action: Callable[[Database], Awaitable[int]]) -> int:
    """`action(db)` on the store at `url`; its exit status, or 1 after a MailguardError."""
    import asyncio  # noqa: PLC0415

    from mailguard.cli.main import EXIT_FAILURE  # noqa: PLC0415
    from mailguard.errors import MailguardError  # noqa: PLC0415
    from mailguard.store.repo import Store  # noqa: PLC0415

    async def main() -> int:
        store = await Store.open(url)
        try:
            return await action(store.db)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except MailguardError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return EXIT_FAILURE
