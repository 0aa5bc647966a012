"""`mailguard account passwd|add|del|disable|enable|list`: the mail accounts SMTP AUTH
checks with `[auth] backend = "users"` (table `mail_user`, argon2id hashes)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.store.database import Database


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    acc = sub.add_parser("account", help="mail accounts for SMTP AUTH",
                         description="Mail accounts (SMTP AUTH logins) in the store.")
    acc_sub = acc.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    actions = (
        ("passwd", "set or replace an account's password (creates the account if missing); "
         "the password is read from stdin when it is not a terminal, else prompted for"),
        ("add", "create an account (no password yet unless --password-stdin)"),
        ("del", "delete an account"),
        ("disable", "refuse logins of an account (its data stays)"),
        ("enable", "allow logins of a disabled account again"),
    )
    for name, text in actions:
        p = acc_sub.add_parser(name, help=text.split(";")[0], description=text)
        add_common(p)
        p.add_argument("address", metavar="ADDRESS", help="login name, e.g. user@example.com")
        if name == "add":
            p.add_argument("--password-stdin", action="store_true",
                           help="also set a password, read from stdin")
        p.set_defaults(func=_cmd_account)
    lst = acc_sub.add_parser("list", help="list accounts", description="List accounts.")
    add_common(lst)
    lst.set_defaults(func=_cmd_account)


def read_password(prompt: bool) -> str:
    """From a terminal: asked twice, without echo. Otherwise: the first line of stdin."""
    if not prompt:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass  # noqa: PLC0415

    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != first:
        raise ValueError("the passwords differ")
    return first


def _cmd_account(args: argparse.Namespace) -> int:
    from mailguard.cli.main import load_config  # noqa: PLC0415
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415
    from mailguard.store.accounts import MIN_PASSWORD  # noqa: PLC0415

    config = load_config(args)
    action: str = args.account_command
    password = None
    if action == "passwd" or (action == "add" and args.password_stdin):
        try:
            password = read_password(prompt=action == "passwd" and sys.stdin.isatty())
        except ValueError as exc:
            print(f"mailguard: {exc}", file=sys.stderr)
            return 1
        if len(password) < MIN_PASSWORD:
            print(f"mailguard: password too short (at least {MIN_PASSWORD} characters)",
                  file=sys.stderr)
            return 1
    url = config.store.url

    async def act(db: Database) -> int:
        return await _run(action, db, url, getattr(args, "address", ""), password)

    return run_with_store(url, act)


async def _run(action: str, db: Database, url: str, address: str, password: str | None) -> int:
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    from mailguard.store.accounts import AccountStore  # noqa: PLC0415

    accounts = AccountStore(db, url)
    hashed = None
    if password is not None:
        from mailguard.auth.users import hash_password  # noqa: PLC0415

        hashed = await asyncio.to_thread(hash_password, password)  # slow on purpose
    now = time.time()
    if action == "list":
        for acc in await accounts.list():
            state = "disabled" if acc.disabled else "active"
            pw = "password" if acc.password_hash else "no-password"
            print(f"{acc.address}\t{state}\t{pw}")
        return 0
    if action == "passwd":
        assert hashed is not None
        created = await accounts.set_password(address, hashed, now)
        print(f"{'created' if created else 'updated'} {address.strip().lower()}")
        return 0
    if action == "add":
        if not await accounts.add(address, hashed, now):
            print(f"mailguard: {address} exists already", file=sys.stderr)
            return 1
        print(f"added {address.strip().lower()}")
        return 0
    if action == "del":
        done = await accounts.delete(address)
    else:
        done = await accounts.set_disabled(address, action == "disable")
    if not done:
        print(f"mailguard: no account {address}", file=sys.stderr)
        return 1
    done_word = {"del": "deleted", "disable": "disabled", "enable": "enabled"}[action]
    print(f"{done_word} {address.strip().lower()}")
    return 0
