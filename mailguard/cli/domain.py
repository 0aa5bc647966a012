"""`mailguard domain spam on|off|status DOMAIN|ADDRESS` and `mailguard domain list`: spam
filtering per domain (off until the admin enables it; new users of an enabled domain are
covered without a row of their own) or per user (an address: the user's own choice wins
over the domain's). Exit status: 0 ok, 1 runtime failure, 2 usage."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mailguard.settings.scan import SPAM_ACTIONS
from mailguard.store.prefs_records import valid_domain

if TYPE_CHECKING:
    from mailguard.config import Config
    from mailguard.store.database import Database
    from mailguard.store.prefs import PrefsStore
    from mailguard.store.prefs_records import DomainPrefs, UserPrefs

_ADDRESS_RE = re.compile(r"^[^\x00-\x20\x7f<>@]+@[^\x00-\x20\x7f<>@]+$")


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    domain = sub.add_parser("domain", help="per-domain settings (spam filtering)",
                            description="Per-domain settings in the store.")
    dsub = domain.add_subparsers(dest="domain_command", metavar="ACTION", required=True)
    spam = dsub.add_parser(
        "spam", help="turn spam filtering on or off for a domain or a user, or show it",
        description="Spam filtering is off until enabled; 'on' for a domain covers every "
        "user of the domain; for an address (user@domain) it is that user's own choice, "
        "which wins over the domain's.")
    spam.add_argument("state", choices=["on", "off", "status"])
    spam.add_argument("domain", metavar="DOMAIN|ADDRESS")
    spam.add_argument("--action", choices=SPAM_ACTIONS,
                      help="what happens to spam (default: the domain's, else "
                      "[spam] default_action)")
    spam.add_argument("--box", metavar="ADDRESS",
                      help="the spam box for --action domain-box (a domain; default "
                      "spam@DOMAIN) or user-box (a user; default USER-spam@DOMAIN); "
                      "'' resets it")
    spam.add_argument("--users-may-override", choices=["yes", "no"],
                      help="for a domain: may its users choose their own filtering on/off "
                      "and action (default yes; 'no': the domain decides for everyone)")
    add_common(spam)
    spam.set_defaults(func=_cmd_spam)
    lst = dsub.add_parser("list", help="domains with settings")
    add_common(lst)
    lst.set_defaults(func=_cmd_list)


def _cmd_spam(args: argparse.Namespace) -> int:
    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415

    if "@" in args.domain:
        return _cmd_user_spam(args)
    domain = args.domain.strip().lower().rstrip(".")
    if not valid_domain(domain):
        print(f"mailguard: {args.domain!r} is not a domain name", file=sys.stderr)
        return EXIT_USAGE
    if args.box and not _ADDRESS_RE.match(args.box):
        print(f"mailguard: --box {args.box!r} is not an address", file=sys.stderr)
        return EXIT_USAGE
    if args.state == "status" and (args.action or args.box is not None
                                   or args.users_may_override):
        print("mailguard: --action/--box/--users-may-override go with 'on' or 'off'",
              file=sys.stderr)
        return EXIT_USAGE
    config: Config = load_config(args)
    may = None if args.users_may_override is None else args.users_may_override == "yes"

    async def act(prefs: PrefsStore, now: float) -> int:
        if args.state != "status":
            await prefs.set_domain(domain, now, spam_enabled=args.state == "on",
                                   spam_action=args.action, spam_box=args.box,
                                   users_may_override=may)
        row = await prefs.domain(domain)
        print(describe(row, domain, config))
        return 0

    return run(config, act)


def _cmd_user_spam(args: argparse.Namespace) -> int:
    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415

    address = args.domain.strip().lower()
    for value, what in ((address, "an address"), (args.box or "x@y", "an address")):
        if not _ADDRESS_RE.match(value):
            print(f"mailguard: {value!r} is not {what}", file=sys.stderr)
            return EXIT_USAGE
    if args.users_may_override:
        print("mailguard: --users-may-override is a domain's setting", file=sys.stderr)
        return EXIT_USAGE
    if args.state == "status" and (args.action or args.box is not None):
        print("mailguard: --action/--box go with 'on' or 'off'", file=sys.stderr)
        return EXIT_USAGE
    config: Config = load_config(args)
    domain = address.rpartition("@")[2]

    async def act(prefs: PrefsStore, now: float) -> int:
        if args.state != "status":
            changes: dict[str, str | None] = {}
            if args.action:
                changes["spam_action"] = args.action
            if args.box is not None:
                changes["spam_box"] = args.box or None
            await prefs.set_user(address, now, spam_enabled=args.state == "on", **changes)
        print(describe_user(address, await prefs.user(address), await prefs.domain(domain),
                            config))
        return 0

    return run(config, act)


def describe_user(address: str, user: UserPrefs | None, domain: DomainPrefs | None,
                  config: Config) -> str:
    """The user's effective settings, and whether they are the user's own."""
    from mailguard.checks.spam_rules import effective  # noqa: PLC0415

    eff = effective(address, user, domain, config.spam)
    locked = domain is not None and not domain.users_may_override
    own = user is not None and user.spam_enabled is not None and not locked
    whose = "own setting" if own else f"from {address.rpartition('@')[2]}"
    if locked:
        whose += ", which users may not override"
    if not eff.enabled:
        return f"{address}: spam filtering off ({whose})"
    box = f", box {eff.box}" if eff.box else ""
    return f"{address}: spam filtering on, action {eff.action}{box} ({whose})"


def _cmd_list(args: argparse.Namespace) -> int:
    from mailguard.cli.main import load_config  # noqa: PLC0415

    config: Config = load_config(args)

    async def act(prefs: PrefsStore, now: float) -> int:
        rows = await prefs.domains()
        for row in rows:
            print(describe(row, row.domain, config))
        if not rows:
            print("no domain has settings (spam filtering is off everywhere)")
        return 0

    return run(config, act)


def describe(row: DomainPrefs | None, domain: str, config: Config) -> str:
    """One line an admin reads: state, action (and where spam goes)."""
    lock = "; users may not override it" if row is not None and not row.users_may_override \
        else ""
    if row is None or not row.spam_enabled:
        return f"{domain}: spam filtering off{lock}"
    action = row.spam_action or config.spam.default_action
    text = f"{domain}: spam filtering on, action {action}"
    if not row.spam_action:
        text += " (default)"
    if action == "domain-box":
        text += f", box {row.spam_box or f'{config.spam.domain_box_localpart}@{domain}'}"
    elif action == "central-box":
        text += f", box {config.spam.central_box or '(not configured: tagging instead)'}"
    elif action == "user-box":
        text += f", box <user>-{config.spam.user_box_extension}@{domain}"
    elif action == "quarantine" and not config.quarantine.enabled:
        text += " (no [quarantine] directory: tagging instead)"
    return text + lock


def run(config: Config, action: Callable[[PrefsStore, float], Awaitable[int]]) -> int:
    """Open the store, run `action(prefs, now)`, close; store errors → exit 1."""
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415
    from mailguard.clock import SystemClock  # noqa: PLC0415
    from mailguard.store.prefs import PrefsStore  # noqa: PLC0415

    async def act(db: Database) -> int:
        return await action(PrefsStore(db), SystemClock().now())

    return run_with_store(config.store.url, act)
