"""`mailguard role grant|revoke|list`: who administers what on the web page (table
`web_role`). `grant USER '*'` makes USER the server admin (how the first admin is made);
`grant USER DOMAIN` an admin of DOMAIN. Exit status: 0 ok, 1 runtime failure (or
`revoke` of a role the user does not have), 2 usage."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.store.database import Database


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    role = sub.add_parser("role", help="web page admin roles (domain admin, server admin)",
                          description="Admin roles of the web page: DOMAIN makes the user "
                          "an admin of that domain, '*' the server admin.")
    rsub = role.add_subparsers(dest="role_command", metavar="ACTION", required=True)
    for name, text in (("grant", "give a user the admin role of a domain, or '*'"),
                       ("revoke", "take a role away (exit 1 if the user does not have it)")):
        p = rsub.add_parser(name, help=text, description=text)
        p.add_argument("user", metavar="USER", help="the login, e.g. admin@example.com")
        p.add_argument("domain", metavar="DOMAIN|*", help="a domain, or '*' (quote it) for "
                       "the server admin")
        add_common(p)
        p.set_defaults(func=_cmd)
    lst = rsub.add_parser("list", help="every grant (of one user or one domain)")
    lst.add_argument("--user", metavar="USER")
    lst.add_argument("--domain", metavar="DOMAIN|*")
    add_common(lst)
    lst.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from mailguard.cli.main import EXIT_USAGE, load_config  # noqa: PLC0415
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415
    from mailguard.store.roles import target_error  # noqa: PLC0415

    if args.role_command != "list":
        problem = target_error(args.user, args.domain)
        if problem:
            print(f"mailguard: {problem}", file=sys.stderr)
            return EXIT_USAGE
    config = load_config(args)

    async def act(db: Database) -> int:
        return await _run(args, db)

    return run_with_store(config.store.url, act)


async def _run(args: argparse.Namespace, db: Database) -> int:
    from mailguard.store.roles import SERVER, RoleStore  # noqa: PLC0415

    roles = RoleStore(db)
    user = getattr(args, "user", None)
    domain = getattr(args, "domain", None)
    if args.role_command == "list":
        grants = await roles.list(domain=domain, user=user)
        for g in grants:
            what = "server admin" if g.domain == SERVER else f"admin of {g.domain}"
            print(f"{g.user}\t{what}")
        if not grants:
            print("no roles (grant the first: mailguard role grant USER '*')")
        return 0
    assert user is not None and domain is not None
    what = "server admin" if domain.strip() == SERVER else f"admin of {domain.strip().lower()}"
    if args.role_command == "grant":
        new = await roles.grant(user, domain, time.time())
        print(f"{user.strip().lower()} {'is now' if new else 'was already'} {what}")
        return 0
    if not await roles.revoke(user, domain):
        print(f"mailguard: {user.strip().lower()} is not {what}", file=sys.stderr)
        return 1
    print(f"{user.strip().lower()} is no longer {what}")
    return 0
