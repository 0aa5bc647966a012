"""`[server] workers = 2`: a supervisor and two worker processes sharing the listeners.

Which worker took a message shows in its Maildir file name (`…P<pid>Q…`): the workers'
pids come from the supervisor's `event=ready … pids=` line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import Client, Daemon, run_cli, start_daemon
from tests.e2e.tcpserver_harness import LEAN_SMTPD, Tcpserver, have_ucspi, lean_env, start_tcpserver
from tests.e2e.test_store_concurrency import session as load_session
from tests.e2e.tls_support import client_context, make_cert, starttls, wrap

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
max_connections_per_ip = 64
shutdown_grace_s = 5
workers = 2

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[metrics]
listen = "127.0.0.1:0"
"""
READY = re.compile(r"event=ready workers=2 pids=(\d+),(\d+) ")
METRICS_AT = re.compile(r"event=metrics_listening address=([\d.]+):(\d+)")
FILE_PID = re.compile(r"\.M\d+P(\d+)Q")
MESSAGE = b"Subject: workers\r\n\r\nhello\r\n"


class Running:
    """A daemon with workers, its log drained in the background (a full stderr pipe
    would stall every process writing to it)."""

    def __init__(self, tmp: Path, toml: str = CONFIG) -> None:
        self.d = start_daemon(tmp, toml)
        self.expected_status = 0  # of the supervisor, when the test is over
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._drain = threading.Thread(target=self._run)
        self._drain.start()

    def _run(self) -> None:
        while not self._done.wait(0 if self.d.proc.poll() is None else 0.05):
            with self._lock:
                self.d.read_log(0.05)  # returns at once at EOF: hence the wait above

    def log(self) -> str:
        with self._lock:
            return self.d.read_log()

    def wait_for(self, pattern: str, timeout_s: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged; log:\n{self.log()[-4000:]}")

    def worker_pids(self) -> set[int]:
        found = self.wait_for(READY.pattern)
        return {int(found.group(1)), int(found.group(2))}

    def metrics_url(self) -> str:
        found = self.wait_for(METRICS_AT.pattern)
        return f"http://{found.group(1)}:{found.group(2)}/metrics"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self._done.set()
        self._drain.join()
        return self.d.stop(sig, timeout_s=30)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    assert r.stop() == r.expected_status


def delivered_pids(d: Daemon, user: str = "u") -> list[int]:
    new = d.spool / "example.com" / user / "new"
    names = sorted(p.name for p in new.iterdir()) if new.is_dir() else []
    return [int(m.group(1)) for n in names if (m := FILE_PID.search(n))]


async def send_one(host: str, port: int, n: int) -> bytes:
    """One message over a new connection; the reply to the end of DATA."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if line[3:4] != b"-":
                    return line

        await reply()
        for line in (b"HELO w.test", f"MAIL FROM:<s{n}@sender.test>".encode(),
                     b"RCPT TO:<u@example.com>", b"DATA"):
            writer.write(line + b"\r\n")
            await reply()
        writer.write(MESSAGE + b".\r\n")
        final = await reply()
        writer.write(b"QUIT\r\n")
        await reply()
        return final
    finally:
        writer.close()


async def send_many(d: Daemon, count: int, parallel: int = 8) -> list[bytes]:
    gate = asyncio.Semaphore(parallel)

    async def one(n: int) -> bytes:
        async with gate:
            return await send_one(d.host, d.port, n)

    return list(await asyncio.gather(*(one(n) for n in range(count))))


def metric(url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not want and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_both_workers_serve_and_metrics_add_up(running: Running) -> None:
    pids = running.worker_pids()
    assert all(alive(p) for p in pids) and running.d.proc.pid not in pids
    assert running.log().count("event=listening") == 1  # bound once, by the supervisor
    replies = await send_many(running.d, 60)
    assert all(r.startswith(b"250") for r in replies), replies
    served = delivered_pids(running.d)
    assert len(served) == 60
    assert set(served) == pids  # both workers took connections on the one port
    url = running.metrics_url()
    # /metrics, answered by whichever worker accepts, is the sum over the workers
    assert metric(url, "mailguard_transactions_total", outcome="accepted") == 60
    assert metric(url, "mailguard_transactions_total", outcome="accepted") == 60


def kill_and_wait_restart(running: Running, pid: int) -> tuple[int, float]:
    """SIGKILL a worker; (the pid of its successor once it serves, the pause logged)."""
    os.kill(pid, signal.SIGKILL)
    died = running.wait_for(rf"event=worker_died worker=(\d) pid={pid} status=-9 "
                            r"lived_s=[\d.]+ restart_in_s=([\d.]+)")
    index = died.group(1)
    again = running.wait_for(rf"event=worker_started worker={index} pid=(?!{pid}\b)(\d+)")
    fresh = int(again.group(1))
    running.wait_for(rf"event=worker_ready worker={index} pid={fresh}\b")
    return fresh, float(died.group(2))


async def test_a_killed_worker_is_restarted_and_counts_stay(running: Running) -> None:
    first, second = sorted(running.worker_pids())
    assert all(r.startswith(b"250") for r in await send_many(running.d, 10))
    fresh, pause = kill_and_wait_restart(running, first)
    assert fresh not in (first, second) and alive(fresh) and not alive(first)
    assert alive(running.d.proc.pid)
    # dying young again: the pause before the next restart doubles (no spinning)
    fresher, longer = kill_and_wait_restart(running, fresh)
    assert longer == max(0.5, 2 * pause)
    before = set(delivered_pids(running.d))
    replies = await send_many(running.d, 30)
    assert all(r.startswith(b"250") for r in replies), replies
    assert set(delivered_pids(running.d)) - before <= {second, fresher}
    # what the dead workers counted still counts
    assert metric(running.metrics_url(), "mailguard_transactions_total",
                  outcome="accepted") == 40


def test_sigterm_lets_a_transaction_in_flight_finish(running: Running) -> None:
    running.worker_pids()
    c = Client(running.d.host, running.d.port)
    try:
        assert c.reply().startswith(b"220")
        assert c.cmd("HELO w.test").startswith(b"250")
        assert c.cmd("MAIL FROM:<late@sender.test>").startswith(b"250")
        assert c.cmd("RCPT TO:<u@example.com>").startswith(b"250")
        assert c.cmd("DATA").startswith(b"354")
        c.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        running.d.proc.send_signal(signal.SIGTERM)
        running.wait_for(r"event=shutdown sessions=\d+ grace_s=5(.|\n)*"
                         r"event=shutdown sessions=\d+ grace_s=5")  # both workers drain
        with pytest.raises(ConnectionRefusedError):  # no copy of the listener is left open
            socket.create_connection((running.d.host, running.d.port), timeout=5).close()
        c.send(b"second half\r\n.\r\n")
        assert c.reply().startswith(b"250")
    finally:
        c.close()
    assert running.stop() == 0
    log = running.log()
    assert "event=stopped workers=2" in log and log.count("event=worker_stopped") == 2
    assert b"second half" in (running.d.spooled("example.com", "u") or [b""])[0]
    assert not running.d.control.exists()  # removed once, by the supervisor


@pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")
async def test_dropin_sessions_through_the_shared_control_socket(running: Running,
                                                                 tmp_path: Path) -> None:
    pids = running.worker_pids()
    server: Tcpserver = start_tcpserver(tmp_path, LEAN_SMTPD, lean_env(running.d.control))
    try:
        def one(n: int) -> bytes:
            c = Client("127.0.0.1", server.port)
            try:
                assert c.reply().startswith(b"220")
                c.cmd("HELO dropin.test")
                replies = c.transaction(f"d{n}@sender.test", ["u@example.com"], MESSAGE)
                c.cmd("QUIT")
                return replies[-1]
            finally:
                c.close()

        loop = asyncio.get_running_loop()
        replies = await asyncio.gather(*(loop.run_in_executor(None, one, n) for n in range(12)))
    finally:
        server.stop()
    assert all(r.startswith(b"250 ok") for r in replies), replies
    served = delivered_pids(running.d)
    assert len(served) == 12 and set(served) <= pids


def test_sqlite_store_two_workers_many_sessions_no_tempfail(tmp_path: Path) -> None:
    toml = CONFIG + '\n[checks.greylist]\nmode = "enforce"\n\n[greylist]\nkey = "ip"\ndelay_s = 0\n'
    r = Running(tmp_path, toml)
    try:
        pids = r.worker_pids()
        codes: list[bytes] = []

        async def load() -> None:
            await asyncio.gather(*(load_session(r.d, n, codes) for n in range(32)))

        asyncio.run(load())
        failures = sorted({c for c in codes if not c.startswith((b"2", b"3"))})
        assert failures == [], r.log()[-3000:]
        delivered = list((r.d.spool / "example.com" / "known" / "new").iterdir())
        assert len(delivered) == 32 * 6
        assert {int(m.group(1)) for p in delivered if (m := FILE_PID.search(p.name))} == pids
        assert "database is locked" not in r.log()
    finally:
        assert r.stop() == 0


def test_workers_zero_means_one_per_core(tmp_path: Path) -> None:
    r = Running(tmp_path, CONFIG.replace("workers = 2", "workers = 0"))
    try:
        cores = os.cpu_count() or 1
        if cores == 1:
            assert "event=worker_started" not in r.log()
        else:
            assert r.wait_for(rf"event=ready workers={cores} pids=")
    finally:
        assert r.stop() == 0



def test_sighup_reaches_every_worker(running: Running) -> None:
    pids = running.worker_pids()
    running.d.proc.send_signal(signal.SIGHUP)
    running.wait_for(r"event=reload_requested workers=2")
    running.wait_for(r"event=reloaded reason='SIGHUP'(.|\n)*event=reloaded reason='SIGHUP'")
    assert "event=worker_died" not in running.log()
    assert all(alive(p) for p in pids)


def test_a_port_in_use_is_reported_once_and_no_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "mailguard.toml"
        cfg.write_text(CONFIG.replace("127.0.0.1:0", f"127.0.0.1:{port}", 1)
                       .replace("{tmp}", str(tmp_path))
                       + f'\n[control]\nsocket = "{tmp_path}/control.sock"\n')
        res = run_cli("serve", "--config", str(cfg),
                      "--store", f"sqlite+aiosqlite:///{tmp_path}/mailguard.db")
    assert res.returncode == 1
    assert res.stderr.count("mailguard: cannot start:") == 1, res.stderr
    assert "address already in use" in res.stderr and "event=worker_started" not in res.stderr


def test_a_worker_that_cannot_start_stops_the_start(tmp_path: Path) -> None:
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(CONFIG.replace("{tmp}", str(tmp_path))
                   + f'\n[control]\nsocket = "{tmp_path}/control.sock"\n')
    res = run_cli("serve", "--config", str(cfg),  # a store nobody initialised
                  "--store", f"sqlite+aiosqlite:///{tmp_path}/mailguard.db")
    assert res.returncode == 1
    assert "database is not initialised" in res.stderr
    assert "event=worker_failed" in res.stderr and "event=ready" not in res.stderr
    assert not (tmp_path / "control.sock").exists()


def test_implicit_tls_and_starttls_in_workers(tmp_path: Path) -> None:
    make_cert(tmp_path / "tls")
    tls = (f'\n[tls]\ncert = "{tmp_path}/tls/cert.pem"\nkey = "{tmp_path}/tls/key.pem"\n'
           'smtps_listen = ["127.0.0.1:0"]\n')
    r = Running(tmp_path, CONFIG + tls)
    ctx = client_context(tmp_path / "tls" / "cert.pem")
    try:
        pids = r.worker_pids()
        (host, port), (tls_host, tls_port) = r.d.addresses
        junk = Client(tls_host, tls_port)  # no handshake: costs that worker nothing
        junk.send(b"EHLO not-tls\r\n")
        for n in range(12):
            c = Client(tls_host, tls_port) if n % 2 else Client(host, port)
            try:
                if n % 2:
                    wrap(c, ctx)
                    assert c.reply().startswith(b"220")
                else:
                    assert c.reply().startswith(b"220")
                    c.cmd("EHLO tls.test")
                    starttls(c, ctx)
                c.cmd("EHLO tls.test")
                assert c.transaction(f"t{n}@sender.test", ["u@example.com"],
                                     MESSAGE)[-1].startswith(b"250")
            finally:
                c.close()
        junk.close()
        assert len(delivered_pids(r.d)) == 12 and set(delivered_pids(r.d)) <= pids
    finally:
        assert r.stop() == 0


def test_workers_stop_when_the_supervisor_is_killed(running: Running) -> None:
    pids = running.worker_pids()
    running.d.proc.kill()  # SIGKILL: no chance to stop them itself
    running.expected_status = -signal.SIGKILL
    running.d.proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)  # none serves on unsupervised
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((running.d.host, running.d.port), timeout=5).close()
