"""`mailguard greylist list|stats|purge|allow`: the greylisting state in the store.
See docs/greylist.md.

Exit status: 0 done, 1 runtime failure (store unreachable, auto-whitelist off for
`allow`), 2 usage error (bad duration, bad client)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.store.database import Database


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    gl = sub.add_parser("greylist", help="greylisting state: list, stats, purge, allow",
                        description="Show and change the greylisting state in the store.")
    gl_sub = gl.add_subparsers(dest="greylist_command", metavar="ACTION", required=True)

    lst = gl_sub.add_parser("list", help="the most recently seen triplets",
                            description="Triplets (client, sender, recipient), newest first.")
    add_common(lst)
    lst.add_argument("--limit", type=int, default=50, metavar="N", help="rows (default 50)")
    lst.set_defaults(func=_cmd)

    stats = gl_sub.add_parser("stats", help="counts of triplets and whitelisted clients")
    add_common(stats)
    stats.set_defaults(func=_cmd)

    purge = gl_sub.add_parser(
        "purge", help="forget old triplets and clients (prints the counts)",
        description="Delete triplets and clients unseen for --older-than (default: "
        "[greylist] max_age_d), and pending triplets unseen for the retry window.")
    add_common(purge)
    purge.add_argument("--older-than", metavar="DURATION",
                       help="35d, 12h, 15m, 3600s (default: max_age_d days)")
    purge.set_defaults(func=_cmd)

    allow = gl_sub.add_parser(
        "allow", help="whitelist a client (its passes become auto_whitelist_after)",
        description="Whitelist a client: an IP address (keyed as configured: its /24 or "
        "/64 with key = 'net'), a network of the configured size, or a domain when "
        "key = 'spf-domain'.")
    add_common(allow)
    allow.add_argument("client", metavar="CLIENT_OR_NET")
    allow.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from mailguard.checks.greylist_rules import allow_key  # noqa: PLC0415
    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415
    from mailguard.cli.override import parse_duration  # noqa: PLC0415
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415

    config = load_config(args)
    cfg = config.greylist
    try:
        older_s = config.greylist.max_age_d * 86400
        if getattr(args, "older_than", None):
            older_s = parse_duration(args.older_than)
        key = allow_key(args.client, cfg) if args.greylist_command == "allow" else ""
        if getattr(args, "limit", 1) <= 0:
            raise ValueError("--limit must be > 0")
    except ValueError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def act(db: Database) -> int:
        return await _run(args, config, db, key=key, older_s=older_s)

    return run_with_store(config.store.url, act)


async def _run(args: argparse.Namespace, config: Any, db: Database, *, key: str,
               older_s: int) -> int:
    from mailguard.store.greylist import GreylistStore  # noqa: PLC0415

    cfg = config.greylist
    repo = GreylistStore(db)
    now = time.time()
    command = args.greylist_command
    if command == "list":
        print(format_triplets(await repo.triplets(args.limit), now), end="")
    elif command == "stats":
        s = await repo.stats(cfg.auto_whitelist_after)
        print(f"triplets: {s.triplets} (passed {s.passed}, pending {s.pending})")
        threshold = cfg.auto_whitelist_after or "off"
        print(f"clients: {s.clients} (whitelisted {s.whitelisted}, "
              f"auto_whitelist_after {threshold})")
    elif command == "purge":
        triplets, clients = await repo.purge(now, older_s, cfg.retry_window_h * 3600)
        print(f"purged {triplets} triplets, {clients} clients")
    else:
        if not cfg.auto_whitelist_after:
            print("mailguard: auto_whitelist_after is 0 (client whitelist off): use "
                  "[greylist] exempt_clients or `mailguard override add --allow`",
                  file=sys.stderr)
            return 1
        state = await repo.allow(key, cfg.auto_whitelist_after, now)
        print(f"whitelisted {key} (passes {state.passes})")
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def format_triplets(rows: Any, now: float) -> str:
    """Aligned columns; STATE is "passed" or "pending (N deferrals)"."""
    table = [("CLIENT", "SENDER", "RECIPIENT", "FIRST SEEN (UTC)", "LAST SEEN (UTC)", "STATE")]
    for r in rows:
        st = r.state
        state = "passed" if st.passed_ts is not None else f"pending ({st.deferrals} deferrals)"
        table.append((r.client_key, r.sender, r.rcpt, _when(st.first_seen),
                      _when(st.last_seen), state))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    if len(table) == 1:
        lines.append("(no triplets)")
    return "\n".join(lines) + "\n"
