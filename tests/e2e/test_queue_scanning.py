"""QMAILQUEUE with the real scanners: the qmail-hooks/qmail-queue shim, fed exactly as
qmail-smtpd feeds qmail-queue (message on fd 0, envelope on fd 1, fd 6 open for exit 82),
in front of a daemon with [clamd]/[spamd] against the test services whose real
qmail-queue is the recording one. What the caller sees (exit status, fd-6 text) and what
reaches the queue (envelope, bytes) for a virus, spam, ham and a scanner that is down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, ROOT, Client, Daemon, start_daemon
from tests.e2e.tcpserver_harness import (
    LEAN_SMTPD,
    QUEUE_SHIM,
    build_rules,
    have_ucspi,
    lean_env,
    recorded,
    run_queue_program,
    start_tcpserver,
)
from tests.scanner_helpers import closed_port, eicar, gtube, message, with_attachment

SHIM = [str(QUEUE_SHIM)]
Rig = tuple[Daemon, Callable[..., Path]]
SPAMFILTER = ROOT / "qmail-hooks" / "spamfilter"
VIRUS = "Eicar-Test-Signature-Mailguard.UNOFFICIAL"
VIRUS_TEXT = f"5.7.1 message refused: virus {VIRUS} found"
SMTP_ENV = {"TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "127.0.0.1"}  # as tcpserver sets

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["filtered.test", "boxed.test", "plain.test"]
shutdown_grace_s = 5

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/inner-qq"

[clamd]
enabled = true
servers = [CLAMD]
scan_timeout_s = 20

[spamd]
servers = [SPAMD]
timeout_s = 20

[queue]
deadline_s = 60
"""


def envelope(sender: str, *rcpts: str) -> bytes:
    return b"F" + sender.encode() + b"\0" + b"".join(b"T" + r.encode() + b"\0" for r in rcpts) \
        + b"\0"


def rcpts_of(env: bytes) -> list[str]:
    return [p[1:].decode() for p in env.split(b"\0")[1:] if p.startswith(b"T")]


def inner_queue(tmp: Path) -> Callable[..., Path]:
    """The daemon's real qmail-queue: the recording one. Returns setup(**env) -> the
    directory it records into for the next messages (FAKE_QQ_EXIT etc. in env)."""
    script = tmp / "inner-qq"
    script.write_text(f'#!/bin/sh\n. "{tmp}/qq.env"\nexec "{sys.executable}" "{RECORDER}"\n')
    script.chmod(0o755)
    count = iter(range(1_000_000))

    def setup(**env: str) -> Path:
        rec = tmp / f"rec{next(count)}"
        rec.mkdir()
        lines = [f"export RECORD_DIR='{rec}'"] + [f"export {k}='{v}'" for k, v in env.items()]
        (tmp / "qq.env").write_text("\n".join(lines) + "\n")
        return rec

    setup()
    return setup


def scan_config(clamd: str, spamd: str, extra: str = "") -> str:
    return (CONFIG.replace("CLAMD", f'"{clamd}"').replace("SPAMD", f'"{spamd}"') + extra)


def start(tmp: Path, text: str, *, store: str | None = None) -> Rig:
    setup = inner_queue(tmp)
    extra = ("--store", store) if store else ()
    return start_daemon(tmp, text, extra_args=extra), setup


@pytest.fixture(scope="module")
def qd(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
       spamd_addr: tuple[str, int], spamd_prefs: str) -> Iterator[Rig]:
    """The daemon, with spamd's own preferences database as its store: what
    `mailguard spampref` writes there is what spamd reads."""
    tmp = tmp_path_factory.mktemp("qscan")
    d, setup = start(tmp, scan_config(f"unix:{clamd_socket}", f"{spamd_addr[0]}:{spamd_addr[1]}"),
                     store=f"sqlite+aiosqlite:///{spamd_prefs}")
    yield d, setup
    assert d.stop() == 0


def cli(daemon: Daemon, store: str, program: list[str], *args: str) -> str:
    env = {**os.environ, "MAILGUARD": f"{sys.executable} -m mailguard.cli.main",
           "MAILGUARD_CONFIG": str(daemon.tmp / "mailguard.toml")}
    res = subprocess.run([*program, *args, "--store", store], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_virus_exit_82_with_text_and_only_warnings_queued(qd: Rig) -> None:
    daemon, setup = qd
    rec = setup()
    msg = with_attachment("eicar.com", eicar())
    env = envelope("a@example.org", "v1@filtered.test", "v2@plain.test", "far@remote.test")
    run = run_queue_program(SHIM, msg, env, lean_env(daemon.control, **SMTP_ENV))
    assert (run.exit_code, run.custom) == (82, f"D{VIRUS_TEXT}".encode()), run.stderr
    # Only the warnings reached the queue, each from the null sender: the local
    # recipients (one per language: here one warning for both) and the admin; neither the
    # remote recipient nor the (foreign, probably forged) sender.
    queued = recorded(rec)
    assert [e.split(b"\0")[0] for _m, e in queued] == [b"F", b"F"]
    assert sorted(r for _m, e in queued for r in rcpts_of(e)) == [
        "postmaster@mx.test", "v1@filtered.test", "v2@plain.test"]
    for m, _e in queued:
        assert message_from_bytes(m)["Subject"] == f"VIRUS WARNING : {VIRUS}"
        assert b"EICAR-STANDARD" not in m and base64_eicar() not in m
    log = daemon.wait_log("source=smtp scanned=yes exit=82")
    [line] = [x for x in log.splitlines() if "event=transaction" in x]
    assert "client=192.0.2.7" in line and "result=rejected reply=554" in line
    assert re.search(r"clamd=fail\(virus Eicar\S* \(clamd unix:/\S+\)\)", line), line


def test_virus_without_fd6_exits_31(qd: Rig) -> None:
    daemon, setup = qd
    rec = setup()
    run = run_queue_program(SHIM, message(eicar().decode()), envelope("a@example.org",
                            "v3@plain.test"), lean_env(daemon.control), fd6=False)
    assert (run.exit_code, run.custom) == (31, b"")
    assert [rcpts_of(e) for _m, e in recorded(rec)] in (
        [["v3@plain.test"], ["postmaster@mx.test"]], [["postmaster@mx.test"], ["v3@plain.test"]])


def test_spam_routed_per_recipient_in_separate_groups(qd: Rig,
                                                      spamd_prefs: str) -> None:
    daemon, setup = qd
    store = f"sqlite+aiosqlite:///{spamd_prefs}"
    assert cli(daemon, store, [str(SPAMFILTER)], "enable", "filtered.test") == \
        "filtered.test: spam filtering on, action tag (default)\n"
    assert cli(daemon, store, [str(SPAMFILTER)], "enable", "boxed.test", "--action",
               "domain-box") == "boxed.test: spam filtering on, action domain-box, box " \
        "spam@boxed.test\n"
    # A user of plain.test (filtering off there) turns it on for herself, with her own box.
    assert cli(daemon, store, [str(SPAMFILTER)], "enable", "ann@plain.test", "--action",
               "user-box") == "ann@plain.test: spam filtering on, action user-box, box " \
        "ann-spam@plain.test (own setting)\n"
    # One user of filtered.test trusts far more: SpamAssassin's own preference in SQL.
    cli(daemon, store, [sys.executable, "-m", "mailguard.cli.main"], "spampref", "set",
        "lenient@filtered.test", "required_score", "2000")
    rec = setup()
    rcpts = ("s1@filtered.test", "lenient@filtered.test", "s2@boxed.test", "s3@plain.test",
             "ann@plain.test")
    msg = message(gtube(), subject="offer")
    try:
        run = run_queue_program(SHIM, msg, envelope("a@example.org", *rcpts),
                                lean_env(daemon.control, **SMTP_ENV))
    finally:
        cli(daemon, store, [sys.executable, "-m", "mailguard.cli.main"], "spampref", "unset",
            "lenient@filtered.test", "required_score")
        cli(daemon, store, [str(SPAMFILTER)], "disable", "filtered.test")
        cli(daemon, store, [str(SPAMFILTER)], "disable", "boxed.test")
        cli(daemon, store, [str(SPAMFILTER)], "disable", "ann@plain.test")
    assert (run.exit_code, run.custom) == (0, b""), run.stderr
    groups = {tuple(rcpts_of(e)): (e, message_from_bytes(m), m) for m, e in recorded(rec)}
    assert sorted(groups) == [("ann-spam@plain.test",), ("lenient@filtered.test",),
                              ("s1@filtered.test",), ("s3@plain.test",), ("spam@boxed.test",)]
    for e, _p, _m in groups.values():
        assert e.startswith(b"Fa@example.org\0")
    _, tagged, _ = groups[("s1@filtered.test",)]
    assert (tagged["Subject"], tagged["X-Spam-Flag"]) == ("[SPAM] offer", "YES")
    _, lenient, _ = groups[("lenient@filtered.test",)]
    assert (lenient["Subject"], lenient["X-Spam-Flag"]) == ("offer", "NO")
    assert "required=2000.0" in lenient["X-Spam-Status"]
    _, boxed, _ = groups[("spam@boxed.test",)]
    assert boxed["X-MailGuard-Original-Recipient"] == "s2@boxed.test"
    assert (boxed["Subject"], boxed["X-Spam-Flag"]) == ("offer", "YES")
    _, ann, _ = groups[("ann-spam@plain.test",)]
    assert ann["X-MailGuard-Original-Recipient"] == "ann@plain.test"
    # filtering off: the message as it came, with only the virus scan's line on top
    _, _, plain = groups[("s3@plain.test",)]
    assert plain == b"X-MailGuard-Virus-Scan: clean\n" + msg


def test_ham_untouched_except_status_headers(qd: Rig,
                                            spamd_prefs: str) -> None:
    daemon, setup = qd
    store = f"sqlite+aiosqlite:///{spamd_prefs}"
    cli(daemon, store, [str(SPAMFILTER)], "enable", "filtered.test")
    rec = setup()
    msg = message("Hello,\n\nthe meeting is moved to Thursday at 10.\n\nRegards,\nSender",
                  headers="X-Spam-Flag: YES\n")  # never trusted: removed
    try:
        run = run_queue_program(SHIM, msg, envelope("a@example.org", "h@filtered.test"),
                                lean_env(daemon.control))
    finally:
        cli(daemon, store, [str(SPAMFILTER)], "disable", "filtered.test")
    assert run.exit_code == 0, run.stderr
    [(queued, env)] = recorded(rec)
    assert env == envelope("a@example.org", "h@filtered.test")
    head, _, body = queued.partition(b"\n\n")
    assert body == msg.partition(b"\n\n")[2]
    ours = [line for line in head.split(b"\n") if re.match(rb"X-(Spam|MailGuard)-", line)]
    assert ours[0] == b"X-MailGuard-Virus-Scan: clean"
    assert b"X-Spam-Flag: NO" in ours and b"X-Spam-Flag: YES" not in head
    rest = [line for line in head.split(b"\n")
            if not line.startswith((b"X-Spam-", b"X-MailGuard-", b"\t", b" "))]
    assert rest == [line for line in msg.partition(b"\n\n")[0].split(b"\n")
                    if not line.startswith(b"X-Spam-")]


def test_custom_fd6_off_and_sources_not_scanned(tmp_path: Path, clamd_socket: str,
                                                spamd_addr: tuple[str, int]) -> None:
    """`custom_fd6 = false`: a virus is exit 31 even with fd 6 open. `scan_sources =
    ["smtp"]`: local mail (qmail-inject, forwards) goes to the queue unscanned — logged
    and counted, never silently."""
    extra = '\n[queue]\ncustom_fd6 = false\nscan_sources = ["smtp"]\n'
    text = scan_config(f"unix:{clamd_socket}", f"{spamd_addr[0]}:{spamd_addr[1]}").replace(
        "\n[queue]\ndeadline_s = 60\n", extra)
    daemon, setup = start(tmp_path, text)
    try:
        rec = setup()
        msg = message(eicar().decode())
        env = envelope("a@example.org", "v@plain.test")
        run = run_queue_program(SHIM, msg, env, lean_env(daemon.control, **SMTP_ENV))
        assert (run.exit_code, run.custom) == (31, b"")
        assert [rcpts_of(e) for _m, e in recorded(rec)] != []
        rec = setup()
        run = run_queue_program(SHIM, msg, env, lean_env(daemon.control))  # qmail-inject
        assert (run.exit_code, run.custom) == (0, b"")
        assert recorded(rec) == [(msg, env)]  # exactly as given: not scanned at all
        log = daemon.wait_log("source=local scanned=no exit=0")
        assert "client=192.0.2.7" in log and "source=smtp scanned=yes exit=31" in log
    finally:
        assert daemon.stop() == 0


def test_clamd_down_nothing_queued(tmp_path: Path, spamd_addr: tuple[str, int]) -> None:
    daemon, setup = start(tmp_path, scan_config(f"127.0.0.1:{closed_port()}",
                                                f"{spamd_addr[0]}:{spamd_addr[1]}"))
    try:
        rec = setup()
        env = envelope("a@example.org", "u@plain.test")
        msg = message("just text")
        run = run_queue_program(SHIM, msg, env, lean_env(daemon.control, **SMTP_ENV))
        assert (run.exit_code, run.custom) == (
            82, b"Z4.3.0 virus scanner unavailable, try again later")
        run = run_queue_program(SHIM, msg, env, lean_env(daemon.control), fd6=False)
        assert (run.exit_code, run.custom) == (71, b"")
        assert recorded(rec) == []
    finally:
        assert daemon.stop() == 0


@pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")
def test_full_chain_virus_gets_554_with_the_fd6_text(qd: Rig,
                                                     tmp_path: Path) -> None:
    """tcpserver → mailguard smtpd → daemon → QMAILQUEUE=shim → daemon's QUEUE stage →
    recording queue: the client gets qmail-smtpd's reply for exit 82 (`554 <text>`)."""
    daemon, setup = qd
    rec = setup()
    rules = build_rules(tmp_path, [f':allow,QMAILQUEUE="{QUEUE_SHIM}"'])
    server = start_tcpserver(tmp_path, LEAN_SMTPD, lean_env(daemon.control), rules)
    c = Client("127.0.0.1", server.port)
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        body = with_attachment("eicar.com", eicar()).replace(b"\n", b"\r\n")
        replies = c.transaction("a@example.org", ["v@plain.test"], body)
        assert replies[-1] == f"554 {VIRUS_TEXT}\r\n".encode()
        replies = c.transaction("a@example.org", ["v@plain.test"], b"Subject: hi\r\n\r\nok\r\n")
        assert re.fullmatch(rb"250 ok \d+ qp \d+\r\n", replies[-1])
    finally:
        c.close()
        server.stop()
    queued = recorded(rec)
    assert sorted(rcpts_of(e)[0] for _m, e in queued) == [
        "postmaster@mx.test", "v@plain.test", "v@plain.test"]
    [(ham, env)] = [(m, e) for m, e in queued if not e.startswith(b"F\0")]
    assert env == envelope("a@example.org", "v@plain.test")
    assert ham.startswith(b"X-MailGuard-Virus-Scan: clean\nReceived: from unknown (127.0.0.1)")


def base64_eicar() -> bytes:
    import base64  # noqa: PLC0415

    return base64.b64encode(eicar())[:40]
