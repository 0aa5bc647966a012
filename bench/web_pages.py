#!/usr/bin/env python3
"""Page latency of `mailguard web` on a big store: 10,000 mail users (with settings and
allow-list rows) and 100,000 quarantined messages (90 % of them in one domain, 500 for
the measured user), on SQLite (default) or PostgreSQL (`--store URL`).

Each page is fetched by a logged-in client over HTTP from the real server process,
`--runs` times after a warm-up; the table prints p50 / p90 / max in milliseconds. The
issue's target: every page well under 100 ms on this machine.

    .venv/bin/python bench/web_pages.py [--runs 50] [--users 10000] [--quarantined 100000]
        [--store postgresql+asyncpg://...]   (an empty database: it is migrated and filled)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailguard.auth.users import hash_password  # noqa: E402
from mailguard.store import migrate  # noqa: E402
from mailguard.store.models import MailDomain, MailUser, Quarantine, Userpref, WebRole  # noqa: E402
from mailguard.store.repo import Store  # noqa: E402

PASSWORD = "bench password 1"
USER = "user1@big.example"
DOMAIN_ADMIN = "boss@big.example"
SERVER_ADMIN = "admin@big.example"


async def fill(url: str, users: int, quarantined: int) -> None:
    await migrate.upgrade(url)
    store = await Store.open(url)
    now = time.time()
    pw = hash_password(PASSWORD)
    try:
        async with store.db.transaction() as conn:
            await conn.execute(insert(MailDomain), [
                {"domain": d, "spam_enabled": True, "spam_action": "quarantine",
                 "spam_box": "", "language": "", "updated_ts": now,
                 "users_may_override": True}
                for d in ("big.example", "small.example")])
            rows = [{"address": f"user{i}@big.example", "password_hash": pw if i < 3 else None,
                     "disabled": False, "spam_enabled": True, "spam_action": "quarantine",
                     "spam_box": None, "language": None, "created_ts": now}
                    for i in range(users)]
            rows += [{"address": a, "password_hash": pw, "disabled": False,
                      "spam_enabled": None, "spam_action": None, "spam_box": None,
                      "language": None, "created_ts": now}
                     for a in (DOMAIN_ADMIN, SERVER_ADMIN)]
            await conn.execute(insert(MailUser), rows)
            await conn.execute(insert(Userpref), [
                {"username": f"user{i}@big.example", "preference": p, "value": v}
                for i in range(users)
                for p, v in (("required_score", "3"), ("whitelist_from", "*@partner.example"))])
            await conn.execute(insert(WebRole), [
                {"user": DOMAIN_ADMIN, "domain": "big.example", "created_ts": now},
                {"user": SERVER_ADMIN, "domain": "*", "created_ts": now}])
            batch: list[dict[str, object]] = []
            for i in range(quarantined):
                rcpt = (USER if i % 200 == 0 else f"user{i % users}@big.example") \
                    if i % 10 else f"user{i % users}@small.example"
                batch.append({"ts": now - i, "expires_ts": now + 86400 * 30 - i,
                              "rcpt": rcpt, "domain": rcpt.rpartition("@")[2],
                              "mail_from": f"spammer{i}@spam.example",
                              "from_header": f"Spammer {i} <spammer{i}@spam.example>",
                              "subject": f"Offer number {i}", "score": 12.5, "size": 4096,
                              "kind": "spam", "reason": "GTUBE", "path": f"x/{i}",
                              "status": "held", "status_ts": None, "status_by": "",
                              "queue_id": ""})
                if len(batch) == 5000:
                    await conn.execute(insert(Quarantine), batch)
                    batch = []
            if batch:
                await conn.execute(insert(Quarantine), batch)
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def login(c: httpx.Client, user: str) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
    assert token
    r = c.post("/login", data={"csrf": token.group(1), "address": user,
                               "password": PASSWORD})
    assert r.status_code == 303, (user, r.status_code)


def measure(c: httpx.Client, path: str, runs: int) -> list[float]:
    for _ in range(3):
        assert c.get(path).status_code == 200, path
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = c.get(path)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return times


PAGES = {
    USER: ["/", "/quarantine", "/quarantine?before=50000"],
    DOMAIN_ADMIN: ["/quarantine?domain=big.example", "/domains/big.example",
                   "/domains/big.example/users", "/domains/big.example/users?q=user99"],
    SERVER_ADMIN: ["/quarantine?all=1", "/admin", "/admin/accounts",
                   "/admin/accounts?q=user5", "/admin/overrides", "/admin/suspended"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--quarantined", type=int, default=100_000)
    ap.add_argument("--store", help="an empty database URL (default: SQLite in a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite+aiosqlite:///{tmp}/mailguard.db"
        t = time.perf_counter()
        asyncio.run(fill(url, args.users, args.quarantined))
        print(f"store filled in {time.perf_counter() - t:.1f}s: {args.users} users, "
              f"{args.quarantined} quarantined ({url.partition(':')[0]})")
        port = free_port()
        cfg = Path(tmp) / "web.toml"
        cfg.write_text(f'[web]\nlisten = "127.0.0.1:{port}"\ncookie_secure = false\n'
                       f'[quarantine]\ndirectory = "{tmp}/q"\n')
        proc = subprocess.Popen([sys.executable, "-m", "mailguard.cli.main", "web",
                                 "--config", str(cfg), "--store", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("mailguard web did not start") from None
                    time.sleep(0.1)
            print(f"{'page':48} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
            for user, paths in PAGES.items():
                with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
                    login(c, user)
                    for path in paths:
                        try:
                            ms = sorted(measure(c, path, args.runs))
                        except AssertionError as exc:
                            print(f"{user.split('@')[0] + ' ' + path:48} failed: {exc}")
                            continue
                        p90 = ms[int(len(ms) * 0.9) - 1]
                        print(f"{user.split('@')[0] + ' ' + path:48} "
                              f"{statistics.median(ms):8.1f} {p90:8.1f} {ms[-1]:8.1f}")
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
