"""Start-up, limits, timeouts and graceful shutdown of the daemon process."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import BASE_CONFIG
from tests.e2e.daemon_harness import RECORDER, Client, Daemon, body, codes, run_cli, start_daemon

Connect = Callable[..., Client]
Daemons = list[Daemon]


def test_sigterm_mid_session_loses_nothing_that_got_250(
    tmp_path: Path, make_daemon: Daemons, connect: Connect
) -> None:
    d = start_daemon(tmp_path, BASE_CONFIG)
    make_daemon.append(d)
    busy = connect(d)
    busy.reply()
    assert codes(
        [
            busy.cmd("MAIL FROM:<a@example.org>"),
            busy.cmd("RCPT TO:<inflight@example.com>"),
            busy.cmd("DATA"),
        ]
    ) == [250, 250, 354]
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    idle = connect(d)
    idle.reply()
    assert idle.cmd("NOOP") == b"250 ok\r\n"
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGTERM)
    # The idle session is told at once; the one in DATA may finish.
    assert idle.reply().startswith(b"421 mx.test service shutting down")
    busy.send(b"second half\r\n.\r\n")
    final = busy.reply()
    assert final.startswith(b"250 ok "), final
    assert busy.reply().startswith(b"421 ")
    assert d.proc.wait(10) == 0
    d.stop()
    [msg] = d.spooled("example.com", "inflight")
    assert msg.endswith(b"first half\nsecond half\n")
    # New connections are refused once it has stopped.
    try:
        Client(d.host, d.port).close()
        raise AssertionError("still accepting")
    except ConnectionRefusedError:
        pass


def test_sigterm_deadline_421s_unfinished_transactions(
    tmp_path: Path, make_daemon: Daemons, connect: Connect
) -> None:
    d = start_daemon(
        tmp_path, BASE_CONFIG.replace("shutdown_grace_s = 5", "shutdown_grace_s = 0.5")
    )
    make_daemon.append(d)
    slow = connect(d)
    slow.reply()
    assert codes(
        [
            slow.cmd("MAIL FROM:<a@example.org>"),
            slow.cmd("RCPT TO:<slow@example.com>"),
            slow.cmd("DATA"),
        ]
    ) == [250, 250, 354]
    slow.send(b"Subject: never finished\r\n")
    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert slow.reply().startswith(b"421 mx.test service shutting down")
    assert d.proc.wait(10) == 0
    d.stop()
    assert time.monotonic() - started < 5
    assert d.spooled("example.com", "slow") == []


def test_connection_limits(tmp_path: Path, make_daemon: Daemons, connect: Connect) -> None:
    cfg = BASE_CONFIG.replace(
        "databytes = 5000", "databytes = 5000\nmax_connections_per_ip = 2\n" "max_connections = 3"
    )
    d = start_daemon(tmp_path, cfg)
    make_daemon.append(d)
    first = [connect(d, source="127.0.0.5") for _ in range(2)]
    for c in first:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
    third = connect(d, source="127.0.0.5")
    assert third.reply() == (
        b"421 mx.test too many connections from your address, try again later (#4.3.2)\r\n"
    )
    assert third.closed_by_peer()
    other = connect(d, source="127.0.0.6")
    assert other.reply() == b"220 mx.test ESMTP\r\n"
    fourth = connect(d, source="127.0.0.7")
    assert fourth.reply() == b"421 mx.test too many connections, try again later (#4.3.2)\r\n"
    first[0].cmd("QUIT")
    time.sleep(0.2)
    again = connect(d, source="127.0.0.5")
    assert again.reply() == b"220 mx.test ESMTP\r\n"


def test_idle_timeout(tmp_path: Path, make_daemon: Daemons, connect: Connect) -> None:
    d = start_daemon(
        tmp_path, BASE_CONFIG.replace("databytes = 5000", "databytes = 5000\ntimeout_s = 1")
    )
    make_daemon.append(d)
    c = connect(d)
    c.reply()
    assert c.cmd("NOOP") == b"250 ok\r\n"
    started = time.monotonic()
    assert c.reply() == b"451 timeout (#4.4.2)\r\n"
    assert 0.8 < time.monotonic() - started < 3
    assert c.closed_by_peer()


def test_ipv6_listener(tmp_path: Path, make_daemon: Daemons, connect: Connect) -> None:
    cfg = BASE_CONFIG.replace('listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:0", "[::1]:0"]')
    d = start_daemon(tmp_path, cfg)
    make_daemon.append(d)
    assert [h for h, _ in d.addresses] == ["127.0.0.1", "::1"]
    c = connect(d, index=1)
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert codes(c.transaction("a@example.org", ["six@example.com"], body("v6")))[-1] == 250
    [msg] = d.spooled("example.com", "six")
    assert b"(::1)" in msg


def test_qmail_queue_delivery_and_exit_codes(
    tmp_path: Path, make_daemon: Daemons, connect: Connect
) -> None:
    record = tmp_path / "queue"
    record.mkdir()
    cfg = BASE_CONFIG.replace(
        'method = "maildir"', f'method = "qmail-queue"\nqmail_queue = "{RECORDER}"'
    )
    os.environ["RECORD_DIR"] = str(record)
    try:
        d = start_daemon(tmp_path, cfg)
    finally:
        del os.environ["RECORD_DIR"]
    make_daemon.append(d)
    c = connect(d)
    c.reply()
    replies = c.transaction(
        "a@example.org", ["q1@example.com", "q2@sub.example.net"], body("queued")
    )
    assert codes(replies) == [250, 250, 553, 354, 250]
    [env] = sorted(record.glob("*.env"))
    assert env.read_bytes() == b"Fa@example.org\0Tq1@example.com\0\0"
    msg = env.with_suffix(".msg").read_bytes()
    assert msg.startswith(b"Received: from unknown (HELO ") is False  # no HELO given
    assert msg.startswith(b"Received: from unknown (127.0.0.1)\n  by mx.test with SMTP; ")
    assert msg.endswith(b"Subject: queued\n\nhello\n")
    qp = int(replies[-1].split(b" qp ")[1])
    assert qp > 0


def test_refuses_to_start_on_uninitialised_store(tmp_path: Path) -> None:
    res = run_cli(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--spool",
        str(tmp_path / "spool"),
        "--store",
        f"sqlite+aiosqlite:///{tmp_path}/fresh.db",
    )
    assert res.returncode == 1
    assert "database is not initialised" in res.stderr
    assert "mailguard db upgrade" in res.stderr


def test_config_errors_name_file_key_and_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    for text, key, reason in [
        ("[server]\nlisen = []\n", "server.lisen", "unknown key"),
        ('[server]\ndatabytes = "big"\n', "server.databytes", "must be an integer"),
        (
            '[server]\nrelay_networks = ["10.0.0.0/33"]\n',
            "server.relay_networks",
            "'10.0.0.0/33' is not a CIDR",
        ),
        ('[delivery]\nmethod = "smtp"\n', "delivery.method", "must be one of"),
        ('[checks.relay]\nmode = "sometimes"\n', "checks.relay.mode", "must be one of"),
        ('[checks.relay]\nmode = "log"\n', "checks.relay.mode", "relay control is always"),
        ('[checks.nosuch]\nmode = "off"\n', "checks.nosuch", "unknown check"),
        ("[server\n", "(syntax)", ""),
    ]:
        cfg.write_text(text)
        res = run_cli("config", "check", "--config", str(cfg))
        assert res.returncode == 2, text
        assert f"{cfg}: {key}: {reason}" in res.stderr, res.stderr
    res = run_cli("config", "check", "--config", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_config_check_prints_effective_config_with_qmail_control_files(tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.mkdir()
    (control / "me").write_text("mx.qmail.test\n")
    (control / "rcpthosts").write_text("example.com\n.example.org\n")
    (control / "databytes").write_text("1000000\n")
    (control / "badmailfrom").write_text("@spam.test\n")
    cfg = tmp_path / "mg.toml"
    cfg.write_text(f'[server]\nqmail_control_dir = "{control}"\nlocal_domains = ["own.test"]\n')
    res = run_cli("config", "check", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert 'hostname = "mx.qmail.test"' in out
    assert 'greeting = "mx.qmail.test"' in out
    assert 'local_domains = ["own.test", "example.com", ".example.org"]' in out
    assert "databytes = 1000000" in out
    assert 'badmailfrom = ["@spam.test"]' in out
    assert "timeout_s = 1200" in out


def test_prometheus_metrics_endpoint(
    tmp_path: Path, make_daemon: Daemons, connect: Connect
) -> None:
    d = start_daemon(tmp_path, BASE_CONFIG + '\n[metrics]\nlisten = "127.0.0.1:0"\n')
    make_daemon.append(d)
    c = connect(d)
    c.reply()
    assert codes(c.transaction("a@example.org", ["m@example.com"], body("metrics")))[-1] == 250
    c.cmd("QUIT")
    log = d.wait_log("event=metrics_listening")
    port = int(log.split("event=metrics_listening address=127.0.0.1:")[1].split()[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, text = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b'mailguard_transactions_total{outcome="accepted"} 1' in text
    assert b"mailguard_connections_total 1" in text
    assert b'mailguard_check_runs_total{check="relay",outcome="pass"} 1' in text
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /other HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 404")
