"""The fault x stage table of issue #12, through the real daemon.

Each case breaks one thing at one stage of a transaction, sends one message to a unique
recipient and checks the invariant: a message answered 250 is in the queue exactly once;
anything else got a 4xx (retry) or 5xx (why not) and is not in the queue. Working
services are the real ones (clamd, spamd, rbldnsd, PostgreSQL) behind switchable
endpoints (tests/e2e/fault_support.py); broken ones are those endpoints misbehaving. The
queue is a script around tests/tools/recording_qmail_queue.py. Every case adds a row to
the table printed at the end of the run (and written to <basetemp>/fault-table.md);
tests/e2e/test_faults_lifecycle.py adds the faults that need a daemon of their own.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.e2e.daemon_harness import Client, Daemon, start_daemon
from tests.e2e.fault_cases import (
    check,
    fault_table,  # noqa: F401 - the `table` fixture
    message,
    prepare_store,
    rcpt,
    record,
    send,
    small_tmpfs,
)
from tests.e2e.fault_support import (
    FaultTable,
    FaultyDns,
    FaultyServer,
    QueueProgram,
    first_line,
)
from tests.e2e.tcpserver_harness import LEAN_QUEUE, lean_env, run_queue_program
from tests.integration.databases import pg_admin
from tests.scanner_helpers import eicar

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["filtered.test"]
shutdown_grace_s = 3

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/qmail-queue"
timeout_s = 3

[clamd]
enabled = true
servers = ["CLAMD"]
connect_timeout_s = 1
scan_timeout_s = 1

[spamd]
servers = ["SPAMD"]
timeout_s = 1

[scan]
deadline_s = 3

[virus]
notify_recipients = false
notify_admin = false
notify_sender = "never"

[dns]
nameservers = ["DNS"]
timeout_s = 1

[[dnsbl.zones]]
zone = "bl.test"
on_error = "tempfail"
"""

@dataclass
class Rig:
    daemon: Daemon
    clamd: FaultyServer
    spamd: FaultyServer
    pg: FaultyServer
    dns: FaultyDns
    qq: QueueProgram
    db_name: str
    admin_url: str  # the server, for CREATE/DROP/ALTER DATABASE
    direct_url: str  # our database, without the proxy

    def queued(self, to: str) -> int:
        return self.qq.queued_for(to)

    def healthy(self) -> None:
        for s in (self.clamd, self.spamd, self.pg):
            s.set_mode("proxy")
        self.dns.mode = "proxy"
        self.qq.set("record")

    def recovered(self) -> None:
        """After a fault is repaired, mail flows again (a pooled connection broken by
        the fault must not cost the next message)."""
        self.healthy()
        to = rcpt()
        reply = send(self.daemon, to)
        assert reply is not None and reply.startswith(b"250"), \
            f"no recovery: {first_line(reply)}\n{self.daemon.read_log()[-3000:]}"
        assert self.queued(to) == 1


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
        spamd_addr: tuple[str, int], dns_server: tuple[str, int],
        pg_url: str) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("faults")
    server = make_url(pg_url)
    name = f"mg_faults_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(pg_url, f'CREATE DATABASE "{name}"'))
    clamd = FaultyServer(clamd_socket, "clamd")
    spamd = FaultyServer(spamd_addr, "spamd")
    pg = FaultyServer((server.host or "127.0.0.1", server.port or 5432), "postgresql")
    dns = FaultyDns(dns_server)
    qq = QueueProgram(tmp)
    direct = server.set(database=name).render_as_string(hide_password=False)
    proxied = server.set(database=name, host="127.0.0.1", port=pg.port) \
        .render_as_string(hide_password=False)
    try:
        prepare_store(direct)
        text = (CONFIG.replace("CLAMD", clamd.address).replace("SPAMD", spamd.address)
                .replace("DNS", dns.address))
        d = start_daemon(tmp, text, upgrade=False, store=proxied)
        try:
            yield Rig(d, clamd, spamd, pg, dns, qq, name, pg_url, direct)
        finally:
            for stand_in in (clamd, spamd, pg):  # a fault left on by a failed test
                stand_in.set_mode("proxy")
            # bounded even with a hung store: grace + writer (5 s) + engine close (5 s)
            code = d.stop(timeout_s=45)
            assert code == 0, d.read_log()[-4000:]
    finally:
        for s in (clamd, spamd, pg):
            s.close()
        dns.close()
        asyncio.run(pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_baseline_every_real_service_working(rig: Rig, table: FaultTable) -> None:
    """The control rows: clean mail is queued once; a virus is refused, not queued."""
    rig.healthy()
    to = rcpt()
    check(record(table, "none (all real services up)", "DATA", "250", send(rig.daemon, to),
                 queued=rig.queued(to)))
    to = rcpt()
    reply = send(rig.daemon, to, extra=eicar().decode() + "\r\n")
    check(record(table, "none: EICAR through real clamd", "DATA", "5xx", reply,
                 queued=rig.queued(to)))
    assert reply is not None and b"virus" in reply


SCANNER_FAULTS = [
    ("down", "before scan (connect refused)"),
    ("garbage_now", "before scan (nonsense greeting)"),
    ("cut", "during scan (killed mid-stream)"),
    ("hang", "during scan (hung)"),
    ("garbage", "after scan (nonsense answer)"),
]


@pytest.mark.parametrize("scanner", ["clamd", "spamd"])
@pytest.mark.parametrize(("mode", "stage"), SCANNER_FAULTS)
def test_broken_scanner_tempfails_and_queues_nothing(rig: Rig, table: FaultTable,
                                                     scanner: str, mode: str,
                                                     stage: str) -> None:
    rig.healthy()
    getattr(rig, scanner).set_mode(mode)
    to = rcpt()
    started = time.monotonic()
    reply = send(rig.daemon, to)
    elapsed = time.monotonic() - started
    row = record(table, f"{scanner} {mode}", stage, "4xx", reply, queued=rig.queued(to))
    check(row)
    assert elapsed < 12, f"{scanner} {mode}: the client waited {elapsed:.1f}s"
    rig.recovered()


@pytest.mark.parametrize(("mode", "expected"), [("timeout", "4xx"), ("servfail", "4xx")])
def test_dns_failure_follows_the_zone_policy(rig: Rig, table: FaultTable, mode: str,
                                             expected: str) -> None:
    """bl.test has on_error = "tempfail" (rblsmtpd -c): an unanswerable lookup is 451."""
    rig.healthy()
    rig.dns.mode = mode
    to = rcpt()
    reply = send(rig.daemon, to, source="127.0.0.11")
    check(record(table, f"DNS {mode} (dnsbl, on_error=tempfail)", "CONNECT→RCPT", expected,
                 reply, queued=rig.queued(to)))
    rig.recovered()


def test_dns_listing_through_the_real_rbldnsd(rig: Rig, table: FaultTable) -> None:
    rig.healthy()
    to = rcpt()
    reply = send(rig.daemon, to, source="127.0.0.2")  # RFC 5782 test point: listed
    check(record(table, "none: client listed in bl.test", "CONNECT→RCPT", "5xx", reply,
                 queued=rig.queued(to)))


QUEUE_EXITS = [0, 11, 31, 51, 52, 53, 54, 55, 56, 61, 62, 71, 72, 73, 74, 75, 81, 91, 1, 25,
               99, 120]


@pytest.mark.parametrize("code", QUEUE_EXITS)
def test_queue_program_exit_codes(rig: Rig, table: FaultTable, code: int) -> None:
    """qmail.c's qmail_close: 0 queued; 11-40 permanent (554); everything else 451. The
    program reads everything and queues nothing (only exit 0 with the recorder queues)."""
    rig.healthy()
    if code == 0:
        rig.qq.set("record")
        expected = "250"
    else:
        rig.qq.set("exit", code=code)
        expected = "5xx" if 11 <= code <= 40 else "4xx"
    to = rcpt()
    reply = send(rig.daemon, to)
    check(record(table, f"qmail-queue exits {code}", "queue", expected, reply,
                 queued=rig.queued(to)))


@pytest.mark.parametrize(("mode", "fault"), [
    ("crash", "qmail-queue crashes (SIGSEGV)"),
    ("hang", "qmail-queue hangs (timeout_s=3)"),
    ("fsize", "qmail-queue over RLIMIT_FSIZE (SIGXFSZ)"),
])
def test_queue_program_crash_and_hang(rig: Rig, table: FaultTable, mode: str,
                                      fault: str) -> None:
    rig.healthy()
    rig.qq.set(mode)
    to = rcpt()
    reply = send(rig.daemon, to, extra="x" * 2000 + "\r\n")
    check(record(table, fault, "queue", "4xx", reply, queued=rig.queued(to)))
    rig.recovered()


def test_queue_spool_filesystem_full(rig: Rig, table: FaultTable, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "full", fill=True) as full:
        rig.healthy()
        rig.qq.set("record", record_into=full)
        to = rcpt()
        reply = send(rig.daemon, to)
        check(record(table, "queue filesystem full (64 KiB tmpfs)", "queue", "4xx", reply,
                     queued=rig.qq.queued_for(to, full)))
    rig.recovered()


# --- the store -----------------------------------------------------------------------------

def psql_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize(("fault", "expected"), [
    ("unreachable", "4xx"),
    ("hung", "4xx"),
    ("read-only", "250"),
    ("locked", "4xx"),
    ("deleted", "4xx"),
])
def test_store_faults(rig: Rig, table: FaultTable, fault: str, expected: str) -> None:
    """The store is read at CONNECT (DNSBL overrides, refreshed every 5 s) and at QUEUE
    (spam preferences of the recipients), and written after (the message log, off the
    SMTP path): a store that cannot be read tempfails, one that cannot be written costs
    statistics only."""
    rig.healthy()
    holder: subprocess.Popen[bytes] | None = None
    if fault == "unreachable":
        rig.pg.set_mode("down")
    elif fault == "hung":
        rig.pg.set_mode("hang")
    elif fault == "read-only":
        asyncio.run(pg_admin(rig.admin_url, f'ALTER DATABASE "{rig.db_name}" SET '
                             "default_transaction_read_only = on"))
        rig.pg.set_mode("proxy")  # resets the pooled connections: new ones are read-only
    elif fault == "locked":
        holder = subprocess.Popen(
            ["psql", psql_url(rig.direct_url), "-q", "-c",
             "BEGIN; LOCK TABLE mail_domain, mail_user, userpref IN ACCESS EXCLUSIVE MODE; "
             "SELECT pg_sleep(30); COMMIT;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    elif fault == "deleted":
        asyncio.run(pg_admin(rig.admin_url,
                             f'DROP DATABASE "{rig.db_name}" WITH (FORCE)'))
    to = rcpt()
    started = time.monotonic()
    try:
        reply = send(rig.daemon, to)
    finally:
        if holder is not None:  # the backend outlives a killed psql: end it first
            asyncio.run(pg_admin(rig.admin_url, "SELECT pg_terminate_backend(pid) FROM "
                                 "pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                                 "AND pid <> pg_backend_pid()"))
            holder.kill()
            holder.wait()
        if fault == "read-only":
            asyncio.run(pg_admin(rig.admin_url, f'ALTER DATABASE "{rig.db_name}" RESET '
                                 "default_transaction_read_only"))
        if fault == "deleted":
            asyncio.run(pg_admin(rig.admin_url, f'CREATE DATABASE "{rig.db_name}"'))
            prepare_store(rig.direct_url)
    elapsed = time.monotonic() - started
    check(record(table, f"store (PostgreSQL) {fault}", "reads: CONNECT, QUEUE", expected, reply,
                 queued=rig.queued(to)))
    # a hung store is met wherever the session reads it first: the CONNECT-time override
    # refresh waits for the pool's 10 s timeouts, the QUEUE-time read for [scan]
    # deadline_s; bounded either way, far below a client's 5-minute RCPT/DATA patience
    assert elapsed < 35, f"store {fault}: the client waited {elapsed:.1f}s"
    rig.pg.set_mode("proxy")  # read-only: fresh connections
    rig.recovered()


# --- the client going away -----------------------------------------------------------------

DISCONNECTS = [
    ("after greeting", []),
    ("after HELO", ["HELO fault.test"]),
    ("after MAIL", ["HELO fault.test", "MAIL FROM:<a@example.org>"]),
    ("after RCPT", ["HELO fault.test", "MAIL FROM:<a@example.org>", "RCPT TO:<{to}>"]),
    ("after DATA", ["HELO fault.test", "MAIL FROM:<a@example.org>", "RCPT TO:<{to}>", "DATA"]),
]


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize(("step", "commands"),
                         [*DISCONNECTS, ("mid-body", []), ("after final dot", [])])
def test_client_disconnects(rig: Rig, table: FaultTable, step: str, commands: list[str],
                            reset: bool) -> None:
    rig.healthy()
    to = rcpt()
    c = Client(rig.daemon.host, rig.daemon.port, source="127.0.0.9")
    try:
        assert c.reply().startswith(b"220")
        if step in ("mid-body", "after final dot"):
            commands = DISCONNECTS[-1][1]
        for line in commands:
            assert c.cmd(line.format(to=to))[:1] in (b"2", b"3")
        if step == "mid-body":
            c.send(message(to)[:40])
        elif step == "after final dot":
            c.send(message(to) + b".\r\n")
    finally:
        if reset:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    if step == "after final dot":
        rig.daemon.wait_log(f"rcpts={to}", 15)  # the hand-over finishes without the client
    rig.recovered()  # the daemon serves on; meanwhile anything in flight has settled
    how = "resets" if reset else "closes"
    check(record(table, f"client {how} connection", step,
                 "lost", None, queued=rig.queued(to), lost_may_queue=step == "after final dot"))
    if step == "after final dot":
        # the daemon had the whole message: it must queue it exactly once, not drop it
        assert rig.queued(to) == 1
        [line] = [x for x in rig.daemon.read_log().splitlines()
                  if f"rcpts={to}" in x and "event=transaction" in x]
        assert "result=accepted" in line, line


# --- the QMAILQUEUE wrapper: "exit 0" instead of "250" -------------------------------------

WRAPPER_ENV = {"TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "127.0.0.1"}  # from qmail-smtpd


def exit_reply(code: int, custom: bytes) -> bytes:
    """qmail-smtpd's view of a qmail-queue exit, as a reply for the table."""
    if code == 0:
        return b"250 exit 0"
    if (code == 82 and custom[:1] == b"D") or 11 <= code <= 40:
        return f"554 exit {code} {custom[:40]!r}".encode()
    return f"451 exit {code} {custom[:40]!r}".encode()


@pytest.mark.parametrize(("fault", "expected"), [
    ("none", "250"),
    ("clamd down", "4xx"),
    ("spamd hung", "4xx"),
    ("store unreachable", "4xx"),
    ("inner qmail-queue exits 53", "4xx"),
    ("inner qmail-queue crashes", "4xx"),
    ("daemon unreachable", "4xx"),
])
def test_queue_wrapper_faults(rig: Rig, table: FaultTable, fault: str, expected: str) -> None:
    """`mailguard queue` fed as qmail-smtpd feeds qmail-queue: exit 0 only when the
    message is queued once; any other status leaves nothing in the queue."""
    rig.healthy()
    control = rig.daemon.control
    if fault == "clamd down":
        rig.clamd.set_mode("down")
    elif fault == "spamd hung":
        rig.spamd.set_mode("hang")
    elif fault == "store unreachable":
        rig.pg.set_mode("down")
    elif fault == "inner qmail-queue exits 53":
        rig.qq.set("exit", code=53)
    elif fault == "inner qmail-queue crashes":
        rig.qq.set("crash")
    elif fault == "daemon unreachable":
        control = rig.daemon.tmp / "no-such-control.sock"
    to = rcpt()
    env = lean_env(control, **WRAPPER_ENV)
    run = run_queue_program(LEAN_QUEUE, message(to).replace(b"\r\n", b"\n"),
                            b"Fa@example.org\0T" + to.encode() + b"\0\0", env)
    check(record(table, f"QMAILQUEUE wrapper: {fault}", "queue (mailguard queue)", expected,
                 exit_reply(run.exit_code, run.custom), queued=rig.queued(to)))
    rig.recovered()
