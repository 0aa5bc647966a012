"""The Python floor for bench/compare.py: a plain single-process aiosmtpd server doing
the same work as mailguard in the comparison — one DNSBL lookup per connection, a
greylist SELECT on SQLite per recipient, the relay check, and a qmail-queue run per
message — and nothing else (no logging, no pipeline, no store writes).

    python3 bench/_bare_server.py PORT DNS_HOST:PORT QMAIL_QUEUE DB
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from typing import Any

import dns.asyncresolver
from aiosmtpd.smtp import SMTP, Envelope, Session


class Handler:
    def __init__(self, dns_addr: str, qq: str, db: str) -> None:
        host, port = dns_addr.rsplit(":", 1)
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = [host]
        self.resolver.port = int(port)
        self.qq = qq
        self.db = sqlite3.connect(db)
        self.db.execute("CREATE TABLE IF NOT EXISTS greylist (client TEXT, sender TEXT, "
                        "rcpt TEXT, passed REAL, PRIMARY KEY (client, sender, rcpt))")

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if not getattr(session, "dnsbl_done", False):
            ip = session.peer[0]
            name = ".".join(reversed(ip.split("."))) + ".bl.test"
            try:
                await self.resolver.resolve(name, "A")
                session.listed = True  # type: ignore[attr-defined]
            except Exception:
                session.listed = False  # type: ignore[attr-defined]
            session.dnsbl_done = True  # type: ignore[attr-defined]
        if session.listed:  # type: ignore[attr-defined]
            return "553 listed"
        if not address.lower().endswith("@example.com"):
            return "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
        self.db.execute("SELECT passed FROM greylist WHERE client=? AND sender=? AND rcpt=?",
                        (session.peer[0], envelope.mail_from, address)).fetchone()
        envelope.rcpt_tos.append(address)
        return "250 ok"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        r, w = os.pipe()
        proc = await asyncio.create_subprocess_exec(self.qq, stdin=asyncio.subprocess.PIPE,
                                                    stdout=r)
        os.close(r)
        env = b"F" + (envelope.mail_from or "").encode() + b"\0" + b"".join(
            b"T" + t.encode() + b"\0" for t in envelope.rcpt_tos) + b"\0"
        os.write(w, env)  # a small envelope fits the pipe: the program reads it after fd 0
        os.close(w)
        await proc.communicate(envelope.original_content or b"")
        code = await proc.wait()
        return "250 ok" if code == 0 else "451 qq error"


async def main() -> None:
    port, dns_addr, qq, db = sys.argv[1:5]
    handler = Handler(dns_addr, qq, db)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="bare.test"),
                                      "127.0.0.1", int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
