"""Issue 12, the control socket trusts whoever reaches it: with `socket_mode = 0o666`
(local injection) any local user could hand over an `smtp` op with `RELAYCLIENT` and a
made-up `TCPREMOTEIP`. The daemon reads the peer's credentials (SO_PEERCRED): only root,
its own user and `[control] trusted_users` / `trusted_groups` may pass an environment;
anyone else's request runs as local injection. And it refuses to start when another user
could bind the socket first (its directory writable by every user, not sticky).

Real unprivileged user: `nobody`, through setpriv, running the real lean programs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailguard.control.server import Peer, Trust, UnsafeSocketDirectory, check_directory
from mailguard.settings.control import ControlConfig
from tests.e2e.daemon_harness import (
    RECORDER,
    ROOT,
    Daemon,
    mailguard_cmd,
    start_daemon,
    upgrade_store,
)
from tests.e2e.tcpserver_harness import (
    LEAN_QUEUE,
    LEAN_SMTPD,
    lean_env,
    recorded,
    run_queue_program,
)

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
AS_NOBODY = [SETPRIV, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"
qmail_queue = "{tmp}/inner-qq"

[control]
socket = "{ctl}/control.sock"
socket_mode = 0o666
"""
# a relay client from a made-up address, as tcprules would say for a trusted network
CLAIMS = {"RELAYCLIENT": "", "TCPREMOTEIP": "198.51.100.9", "TCPLOCALIP": "127.0.0.1"}
SESSION = (b"HELO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<victim@outside.test>\r\n"
           b"RCPT TO:<b@example.com>\r\nQUIT\r\n")
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"


def public_dir(mode: int) -> Path:
    """A directory under /tmp that nobody can reach (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="mg-ctl-", dir="/tmp"))
    d.chmod(mode)
    return d


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("trust")
    ctl = public_dir(0o755)
    inner = tmp / "inner-qq"
    inner.write_text(f"#!/bin/sh\nexport RECORD_DIR='{tmp}/rec'\n"
                     f'exec "{sys.executable}" "{RECORDER}"\n')
    inner.chmod(0o755)
    (tmp / "rec").mkdir()
    d = start_daemon(tmp, CONFIG.replace("{ctl}", str(ctl)))
    yield d
    assert d.stop() == 0
    shutil.rmtree(ctl, ignore_errors=True)


def control_of(d: Daemon) -> Path:
    text = (d.tmp / "mailguard.toml").read_text()
    return Path(text.split('socket = "', 1)[1].split('"', 1)[0])


def smtpd(d: Daemon, prefix: list[str]) -> bytes:
    """`mailguard smtpd` on pipes (as under sslserver), run through `prefix`."""
    run = subprocess.run([*prefix, *LEAN_SMTPD], input=SESSION, capture_output=True,
                         env=lean_env(control_of(d), **CLAIMS), cwd=ROOT, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_nobody_cannot_relay_with_relayclient(daemon: Daemon) -> None:
    out = smtpd(daemon, AS_NOBODY)
    assert out.splitlines(keepends=True)[3:5] == [NOT_RCPTHOSTS, b"250 ok\r\n"], out
    log = daemon.wait_log("event=control_untrusted op=smtp")
    assert "uid=65534 gid=65534 ignored=RELAYCLIENT,TCPLOCALIP,TCPREMOTEIP" in log
    assert "client=198.51.100.9" not in log  # the claimed identity is not believed
    # the same environment from root (a trusted peer) is obeyed, as tcpserver's
    out = smtpd(daemon, [])
    assert out.splitlines(keepends=True)[3:5] == [b"250 ok\r\n", b"250 ok\r\n"], out


def test_nobody_queues_as_local_injection(daemon: Daemon) -> None:
    env = lean_env(control_of(daemon), **CLAIMS)
    run = run_queue_program([*AS_NOBODY, *LEAN_QUEUE], b"Subject: q\n\nx\n",
                            b"Fnobody@mx.test\0Tb@example.com\0\0", env)
    assert (run.exit_code, run.custom) == (0, b""), run.stderr
    assert recorded(daemon.tmp / "rec")[-1][1] == b"Fnobody@mx.test\0Tb@example.com\0\0"
    log = daemon.wait_log("from=<nobody@mx.test>")
    line = next(x for x in log.splitlines() if "from=<nobody@mx.test>" in x)
    assert "client=127.0.0.1" in line and "source=local" in line, line
    assert "event=control_untrusted op=queue" in log


def test_trusted_users_and_groups() -> None:
    nobody = Peer(pid=1, uid=65534, gid=65534)
    assert not Trust.from_config(ControlConfig()).trusts(nobody)
    assert Trust.from_config(ControlConfig()).trusts(Peer(1, 0, 0))  # root
    assert Trust.from_config(ControlConfig()).trusts(Peer(1, os.geteuid(), 12345))
    assert Trust.from_config(ControlConfig(trusted_users=("nobody",))).trusts(nobody)
    assert Trust.from_config(ControlConfig(trusted_users=("65534",))).trusts(nobody)
    assert Trust.from_config(ControlConfig(trusted_groups=("nogroup",))).trusts(nobody)
    assert not Trust.from_config(ControlConfig(trusted_users=("no-such-user-x",))).trusts(nobody)


def serve(tmp: Path, ctl: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp / "mailguard.toml"
    cfg.write_text(CONFIG.replace("{tmp}", str(tmp)).replace("{ctl}", str(ctl)))
    store = f"sqlite+aiosqlite:///{tmp}/mailguard.db"
    upgrade_store(store)
    return subprocess.run([*mailguard_cmd("serve", "--config", str(cfg), "--store", store)],
                          capture_output=True, text=True, timeout=30, check=False)


def test_refuses_to_start_in_a_directory_anyone_can_write(tmp_path: Path) -> None:
    ctl = public_dir(0o777)
    try:
        run = serve(tmp_path, ctl)
        assert run.returncode == 1, run.stderr
        assert f"refusing to start: {ctl}, the control socket's directory" in run.stderr
        assert "writable by every user (mode 0o777)" in run.stderr
        assert not (ctl / "control.sock").exists()
    finally:
        shutil.rmtree(ctl, ignore_errors=True)


def test_a_sticky_directory_is_accepted(tmp_path: Path) -> None:
    ctl = public_dir(0o1777)
    try:
        d = start_daemon(tmp_path, CONFIG.replace("{ctl}", str(ctl)))
        assert (ctl / "control.sock").exists()
        assert d.stop() == 0
    finally:
        shutil.rmtree(ctl, ignore_errors=True)


def test_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(UnsafeSocketDirectory, match="belongs to uid 65534"):
        check_directory(str(theirs))
    shared = tmp_path / "shared"  # group-writable: allowed (a warning in the log)
    shared.mkdir()
    shared.chmod(0o775)
    check_directory(str(shared))
    nested = public_dir(0o777)  # a safe directory below an unsafe one: refused too
    try:
        (nested / "sub").mkdir(mode=0o755)
        with pytest.raises(UnsafeSocketDirectory, match="writable by every user"):
            check_directory(str(nested / "sub"))
    finally:
        shutil.rmtree(nested, ignore_errors=True)
