"""`mailguard spampref set|add|unset|list`: SpamAssassin's own `userpref` rows, which
spamd reads per message (contrib/spamd-sql.cf). NAME is a user address, `@~domain`
(the domain's defaults) or `@GLOBAL`. Exit status: 0 ok, 1 runtime failure / nothing
removed, 2 usage."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.config import Config
    from mailguard.store.prefs import PrefsStore

_NAME_RE = re.compile(r"^(@GLOBAL|@~[^\s@]+|[^\s@]+@[^\s@]+)$")
_PREF_RE = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
MAX_VALUE = 100  # userpref.value is varchar(100)
MAX_NAME = 100  # userpref.username is varchar(100) (PostgreSQL enforces it, SQLite not)


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    sp = sub.add_parser("spampref", help="SpamAssassin user preferences (userpref table)",
                        description="SpamAssassin preferences read by spamd for each "
                        "recipient: NAME is user@domain, @~domain or @GLOBAL.")
    ssub = sp.add_subparsers(dest="spampref_command", metavar="ACTION", required=True)
    for name, text in (("set", "set a preference (replaces its values)"),
                       ("add", "add one more value (whitelist_from, blacklist_from...)")):
        p = ssub.add_parser(name, help=text, description=text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("preference", metavar="PREF")
        p.add_argument("value", metavar="VALUE")
        add_common(p)
        p.set_defaults(func=_cmd)
    p = ssub.add_parser("unset", help="remove a preference (or one of its values)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("preference", metavar="PREF")
    p.add_argument("value", metavar="VALUE", nargs="?")
    add_common(p)
    p.set_defaults(func=_cmd)
    p = ssub.add_parser("list", help="show the rows (of NAME, else all)")
    p.add_argument("name", metavar="NAME", nargs="?")
    add_common(p)
    p.set_defaults(func=_cmd)


def _usage(args: argparse.Namespace) -> str | None:
    """Why the arguments are unusable, or None."""
    if args.name is not None and not _NAME_RE.match(args.name):
        return f"{args.name!r}: NAME is user@domain, @~domain or @GLOBAL"
    if args.name is not None and len(args.name) > MAX_NAME:
        return f"NAME must be at most {MAX_NAME} characters"
    pref = getattr(args, "preference", None)
    if pref is not None and not _PREF_RE.match(pref):
        return f"{pref!r} is not a SpamAssassin preference name"
    value = getattr(args, "value", None)
    if value is not None and (len(value) > MAX_VALUE or any(ord(c) < 0x20 for c in value)):
        return f"VALUE must be one line of at most {MAX_VALUE} characters"
    return None


def _cmd(args: argparse.Namespace) -> int:
    from mailguard.cli.domain import run  # noqa: PLC0415
    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415

    problem = _usage(args)
    if problem:
        print(f"mailguard: {problem}", file=sys.stderr)
        return EXIT_USAGE
    config: Config = load_config(args)
    command = args.spampref_command

    async def act(prefs: PrefsStore, now: float) -> int:
        if command in ("set", "add"):
            await prefs.set_pref(args.name, args.preference, args.value, add=command == "add")
        elif command == "unset":
            removed = await prefs.unset_pref(args.name, args.preference, args.value)
            print(f"{removed} row(s) removed")
            return 0 if removed else 1
        rows = await prefs.prefs(args.name)
        for row in rows:
            print(f"{row.username}\t{row.preference}\t{row.value}")
        if command == "list" and not rows:
            print("no preferences", file=sys.stderr)
        return 0

    return run(config, act)
