"""`mailguard override add|list|remove`: per-IP/network overrides of the SMTP-time policy
(allow beats every DNS blocklist, deny blocks). See docs/dnsbl.md.

Exit status: 0 done, 1 runtime failure (store unreachable, `remove` of an absent entry),
2 usage error (bad CIDR, bad duration)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.store.database import Database

DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """`30d`, `12h`, `15m`, `3600s`, `2w` or plain seconds → seconds (> 0); ValueError."""
    m = DURATION.match(text.lower())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration (e.g. 30d, 12h, 15m, 3600s)")
    return int(m.group(1)) * UNIT_S[m.group(2)]


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    ov = sub.add_parser("override", help="per-IP allow/deny overrides (DNSBL)",
                        description="Per-IP/network overrides: allow beats every DNS "
                        "blocklist, deny refuses the client at RCPT (554 5.7.1).")
    ov_sub = ov.add_subparsers(dest="override_command", metavar="ACTION", required=True)

    add = ov_sub.add_parser("add", help="add or replace an override",
                            description="Add an override for a network (replaces the "
                            "existing entry for the same network).")
    add_common(add)
    add.add_argument("network", metavar="CIDR", help="192.0.2.0/24, 2001:db8::/48 or an IP")
    which = add.add_mutually_exclusive_group(required=True)
    which.add_argument("--allow", dest="action", action="store_const", const="allow",
                       help="never block these clients by DNS blocklist")
    which.add_argument("--deny", dest="action", action="store_const", const="deny",
                       help="refuse these clients")
    add.add_argument("--reason", default="", help="why (shown in list; deny: in the reply)")
    add.add_argument("--expires", metavar="DURATION",
                     help="lifetime: 30d, 12h, 15m, 3600s (default: never expires)")
    add.set_defaults(func=_cmd)

    lst = ov_sub.add_parser("list", help="show every override (expired ones marked)")
    add_common(lst)
    lst.set_defaults(func=_cmd)

    rm = ov_sub.add_parser("remove", help="remove the override of a network (exit 1 if none)")
    add_common(rm)
    rm.add_argument("network", metavar="CIDR")
    rm.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415
    from mailguard.store.overrides import canonical_network  # noqa: PLC0415

    expires_s: int | None = None
    try:
        if args.override_command in ("add", "remove"):
            canonical_network(args.network)
        if getattr(args, "expires", None):
            expires_s = parse_duration(args.expires)
    except ValueError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = load_config(args)

    async def act(db: Database) -> int:
        return await _run(args, db, expires_s)

    return run_with_store(config.store.url, act)


async def _run(args: argparse.Namespace, db: Database, expires_s: int | None) -> int:
    from mailguard.store.overrides import OverrideStore  # noqa: PLC0415

    repo = OverrideStore(db)
    now = time.time()
    if args.override_command == "add":
        entry = await repo.add(
            args.network, args.action, reason=args.reason, now=now,
            expires_ts=now + expires_s if expires_s else None, created_by=_who(),
        )
        until = f" until {_when(entry.expires_ts)}" if entry.expires_ts else ""
        print(f"{entry.action} {entry.network}{until}")
        return 0
    if args.override_command == "remove":
        if await repo.remove(args.network, now=now):
            print(f"removed {args.network}")
            return 0
        print(f"mailguard: no override for {args.network}", file=sys.stderr)
        return 1
    print(format_table(await repo.list(), now), end="")
    return 0


def format_table(entries: Any, now: float) -> str:
    """Aligned columns; an expired entry says so in EXPIRES."""
    rows = [("NETWORK", "ACTION", "EXPIRES", "CREATED", "BY", "REASON")]
    for e in entries:
        if e.expires_ts is None:
            expires = "never"
        else:
            expires = _when(e.expires_ts) + (" (expired)" if e.expired(now) else "")
        rows.append((e.network, e.action, expires, _when(e.created_ts), e.created_by or "-",
                     e.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5]
             for r in rows]
    return "".join(line.rstrip() + "\n" for line in lines)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _who() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "cli"
