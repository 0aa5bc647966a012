"""`mailguard user list|show|suspend|unsuspend` and `mailguard panic on|off|status`:
the per-user outbound counters, suspensions and the global panic switch, in the store
shared by every MX host. Exit status: 0 ok, 1 not found (or a runtime failure), 2 usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.config import Config
    from mailguard.store.database import Database
    from mailguard.store.user_records import UserStatus, WindowCount
    from mailguard.store.users import UserStore


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    user = sub.add_parser("user", help="per-user outbound counters and suspensions",
                          description="Per-user outbound counters, limits and suspensions.")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = user_sub.add_parser("list", help="users with activity in the windows, or suspended")
    add_common(p)
    p.set_defaults(func=_cmd_user)
    p = user_sub.add_parser("show", help="one user: counts, top domains, recent subjects")
    p.add_argument("name", metavar="NAME")
    add_common(p)
    p.set_defaults(func=_cmd_user)
    p = user_sub.add_parser("suspend", help="refuse the user's mail (451) until unsuspended")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--reason", default="suspended by the admin", help="kept with the state")
    add_common(p)
    p.set_defaults(func=_cmd_user)
    p = user_sub.add_parser("unsuspend", help="lift a suspension (and close the incident)")
    p.add_argument("name", metavar="NAME")
    add_common(p)
    p.set_defaults(func=_cmd_user)

    panic = sub.add_parser("panic", help="stop (or resume) all relaying on every MX host",
                           description="The panic switch: 'on' answers every relayed "
                           "recipient with 451 4.7.1 on every MX host sharing the store.")
    panic.add_argument("state", choices=["on", "off", "status"])
    add_common(panic)
    panic.set_defaults(func=_cmd_panic)


def _cmd_user(args: argparse.Namespace) -> int:
    from mailguard.cli.main import load_config  # noqa: PLC0415

    config: Config = load_config(args)
    action = args.user_command
    handlers: dict[str, Callable[[UserStore, Config, float], Awaitable[int]]] = {
        "list": _list,
        "show": lambda users, cfg, now: _show(users, cfg, now, args.name),
        "suspend": lambda users, cfg, now: _suspend(users, now, args.name, args.reason),
        "unsuspend": lambda users, cfg, now: _unsuspend(users, args.name),
    }
    return _run(config, handlers[action])


def _cmd_panic(args: argparse.Namespace) -> int:
    from mailguard.cli.main import load_config  # noqa: PLC0415

    config: Config = load_config(args)

    async def act(users: UserStore, cfg: Config, now: float) -> int:
        from mailguard.store.users import PANIC  # noqa: PLC0415

        if args.state != "status":
            await users.set_setting(PANIC, args.state, now)
        on = await users.panic()
        print(f"panic is {'ON: relaying is stopped' if on else 'off: relaying works'}")
        return 0

    return _run(config, act)


def _run(config: Config, action: Callable[[UserStore, Config, float], Awaitable[int]]) -> int:
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415
    from mailguard.clock import SystemClock  # noqa: PLC0415
    from mailguard.store.users import UserStore  # noqa: PLC0415

    async def act(db: Database) -> int:
        return await action(UserStore(db), config, SystemClock().now())

    return run_with_store(config.store.url, act)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    import time  # noqa: PLC0415

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _state(config: Config, status: UserStatus, counts: tuple[WindowCount, ...]) -> str:
    """Where the user stands: what would happen to its next message."""
    from mailguard.checks.limits_decide import Level, assess  # noqa: PLC0415

    if status.suspended:
        return "suspended"
    lim = config.limits
    level = assess(counts, lim.windows, messages=1, rcpts=1, delay_kind="messages",
                   delay_min_s=0, delay_max_s=0).level
    return {Level.OK: "ok", Level.SOFT: "soft (delayed)", Level.HARD: "hard (refused)"}[level]


def _counts_text(counts: tuple[WindowCount, ...]) -> str:
    from mailguard.settings.limits import describe_period  # noqa: PLC0415

    return "  ".join(f"{describe_period(c.period_s)}: {c.messages}m/{c.rcpts}r" for c in counts)


async def _list(users: UserStore, config: Config, now: float) -> int:
    periods = [w.period_s for w in config.limits.windows]
    rows = await users.activity(now, periods)
    if not rows:
        print("no user activity in the windows, no suspended user")
        return 0
    print(f"{'USER':<32} {'COUNTS (messages/recipients)':<40} {'STATE':<20} LAST ALERT")
    for row in rows:
        state = _state(config, row.status, row.counts)
        print(f"{row.status.user:<32} {_counts_text(row.counts):<40} {state:<20} "
              f"{_when(row.status.last_alert_ts)}")
    return 0


async def _show(users: UserStore, config: Config, now: float, name: str) -> int:
    from mailguard.settings.limits import describe_period  # noqa: PLC0415

    periods = [w.period_s for w in config.limits.windows]
    detail = await users.detail(name, now, periods)
    if detail is None:
        print(f"mailguard: no activity or state for user {name!r}", file=sys.stderr)
        return 1
    st = detail.status
    print(f"user:        {st.user}")
    print(f"state:       {_state(config, st, detail.counts)}")
    if st.suspended:
        print(f"suspended:   since {_when(st.suspended_ts)}: {st.reason}")
    print(f"alerts:      {st.alerts} (last {_when(st.last_alert_ts)})")
    counts = {c.period_s: c for c in detail.counts}
    for w in config.limits.windows:
        c = counts[w.period_s]
        print(f"last {describe_period(w.period_s)}: {c.messages} messages "
              f"(soft {w.soft_messages}, hard {w.hard_messages}), {c.rcpts} recipients "
              f"(soft {w.soft_rcpts}, hard {w.hard_rcpts})")
    print("top recipient domains:")
    for domain, n in detail.top_domains or (("(none)", 0),):
        print(f"  {domain}  {n}" if n else f"  {domain}")
    print("recent subjects:")
    for ts, subject in detail.subjects or ((None, "(none)"),):
        print(f"  {_when(ts)}  {subject}" if ts is not None else f"  {subject}")
    return 0


async def _suspend(users: UserStore, now: float, name: str, reason: str) -> int:
    await users.suspend(name, reason, now)
    print(f"user {name} suspended: its mail gets 451 until 'mailguard user unsuspend'")
    return 0


async def _unsuspend(users: UserStore, name: str) -> int:
    if not await users.unsuspend(name):
        print(f"mailguard: user {name!r} is not suspended", file=sys.stderr)
        return 1
    print(f"user {name} unsuspended")
    return 0
