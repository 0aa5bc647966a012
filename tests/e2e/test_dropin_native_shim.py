"""The compiled drop-in (contrib/shim/mailguard-smtpd.c, built here with the C compiler)
against the Python one (mailguard/lean/smtpd.py through qmail-hooks/qmail-smtpd): the
same request line byte for byte (tricky environments: UTF-8, bytes that are not UTF-8,
quotes, backslashes, control characters, duplicates, Python's locale coercion), the same
replies to the client and exit status for every answer of the daemon, and the paths
where it hands over to Python (pipes, no MAILGUARD_CONTROL, --help, a configuration
file to read the 421's host name from). Then the real thing: tcpserver, the daemon, a
stopped daemon.

Without a C compiler the tests skip — and fail under CI / MAILGUARD_REQUIRE_SERVICES
(tests/conftest.py): `contrib/install-deps.sh all` installs gcc."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailguard.control import protocol
from tests.e2e.daemon_harness import RECORDER, ROOT, Client, Daemon, start_daemon
from tests.e2e.tcpserver_harness import (
    SMTPD_SHIM,
    Tcpserver,
    build_rules,
    have_ucspi,
    lean_env,
    recorded,
    start_tcpserver,
)
from tests.e2e.test_dropin_smtpd import CONFIG, MESSAGE, QUEUED

BUILD = ROOT / "contrib" / "shim" / "build.sh"
NOT_A_PYTHON = "/nonexistent/python3"  # MAILGUARD_PYTHON when Python must not be needed
UNAVAILABLE = b" service temporarily unavailable (#4.3.0)\r\n"


@dataclass(frozen=True)
class Shims:
    native: Path  # <tmp>/native/qmail-hooks/qmail-smtpd, with bin/mailguard-smtpd built
    binary: Path
    python: Path  # <tmp>/python/qmail-hooks/qmail-smtpd: no bin/, the Python path


@pytest.fixture(scope="module")
def shims(tmp_path_factory: pytest.TempPathFactory) -> Shims:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:  # under CI the conftest hook makes this skip a failure
        pytest.skip("no C compiler (gcc): contrib/install-deps.sh all installs it")
    base = tmp_path_factory.mktemp("shims")
    native, python = base / "native" / "qmail-hooks", base / "python" / "qmail-hooks"
    for d in (native, python):
        d.mkdir(parents=True)
        shutil.copy2(SMTPD_SHIM, d / "qmail-smtpd")
    binary = native / "bin" / "mailguard-smtpd"
    res = subprocess.run([str(BUILD), str(binary)], env={**os.environ, "CC": compiler},
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
    again = subprocess.run([str(BUILD), str(binary)], env={**os.environ, "CC": compiler},
                           capture_output=True, text=True, timeout=60, check=True)
    assert "up to date" in again.stdout  # idempotent: install-deps may run it every time
    return Shims(native / "qmail-smtpd", binary, python / "qmail-smtpd")


# -- a fake daemon: captures the request line and the descriptor, answers as told --------

HOLD = b"<hold>"  # answer nothing, keep the connection open until the fake stops


@dataclass
class Capture:
    line: bytes
    fd_ino: int


@dataclass
class FakeDaemon:
    path: Path
    answers: list[bytes]
    captured: list[Capture] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(16)
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):  # the shim gave up first
                self._one(conn)
            if conn not in self.held:
                conn.close()

    def _one(self, conn: socket.socket) -> None:
        data, fds = b"", []
        while b"\n" not in data:
            chunk, anc, _flags, _addr = conn.recvmsg(1 << 20, socket.CMSG_SPACE(16))
            fds += protocol.unpack_fds(anc)
            if not chunk:
                break
            data += chunk
        ino = os.fstat(fds[0]).st_ino if fds else -1
        for fd in fds:
            os.close(fd)  # the client's EOF then comes from the shim alone
        self.captured.append(Capture(data, ino))
        for answer in self.answers:
            if answer == HOLD:
                self.held.append(conn)
                return
            conn.sendall(answer)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        self.thread.join(5)
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[..., FakeDaemon]]:
    made: list[FakeDaemon] = []

    def make(*answers: bytes) -> FakeDaemon:
        f = FakeDaemon(tmp_path / f"fake{len(made)}.sock", list(answers))
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


@dataclass
class Run:
    code: int
    client: bytes  # what the program wrote to the client connection until it closed
    stderr: bytes
    ino: int  # the inode of the client connection (to compare with what was handed over)


# exec a program with exactly these environment entries (duplicates, entries without '='
# included), which subprocess cannot: hex-encoded entries, "--", the argv
LAUNCHER = """
import ctypes, sys
i = sys.argv.index("--")
env = [bytes.fromhex(h) for h in sys.argv[1:i]]
argv = [a.encode() for a in sys.argv[i + 1:]]
envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
argp = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
ctypes.CDLL(None).execve(argv[0], argp, envp)
sys.exit(99)
"""


def run(program: list[str], env: dict[bytes, bytes] | list[bytes],
        timeout_s: float = 20) -> Run:
    """The program with fd 0 = fd 1 = one end of a socketpair, as tcpserver runs it."""
    ours, theirs = socket.socketpair()
    ino = os.fstat(theirs.fileno()).st_ino
    if isinstance(env, list):
        cmd = [sys.executable, "-c", LAUNCHER, *(e.hex() for e in env), "--", *program]
        proc = subprocess.Popen(cmd, env={}, stdin=theirs.fileno(), stdout=theirs.fileno(),
                                stderr=subprocess.PIPE)
    else:
        proc = subprocess.Popen(program, env=env, stdin=theirs.fileno(), stdout=theirs.fileno(),
                                stderr=subprocess.PIPE)
    theirs.close()
    ours.settimeout(timeout_s)
    out = b""
    with ours:
        while chunk := ours.recv(65536):
            out += chunk
    _, err = proc.communicate(timeout=timeout_s)
    return Run(proc.returncode, out, err, ino)


def base_env(control: Path, **extra: bytes) -> dict[bytes, bytes]:
    env = {b"PATH": os.environ.get("PATH", "/usr/bin:/bin").encode(),
           b"MAILGUARD_CONTROL": os.fsencode(control),
           b"MAILGUARD_PYTHON": sys.executable.encode(), b"MAILGUARD_LIB": os.fsencode(ROOT),
           b"MAILGUARD_CONFIG": b"/nonexistent/mailguard.toml"}
    env.update({k.encode(): v for k, v in extra.items()})
    return env


TRICKY: dict[bytes, bytes] = {
    b"TCPREMOTEIP": b"192.0.2.7",
    b"RELAYCLIENT": b"",
    b"UTF8": "h\u00e9llo \u20ac \U0001d11e \u4e2d".encode(),
    b"NOT_UTF8": b"\xff\xfe\x80abc\xe2\x82A\xed\xa0\x80\xf4\x90\x80\x80\xc0\xaf\xe0\x80\xf0",
    b"TRUNCATED": b"ok\xe2\x82",
    b"QUOTES": b'he said "hi" \\ back\\slash \\u0041 / \'single\'',
    b"CONTROL": bytes(range(1, 32)) + b"\x7f",
    b"EMPTY": b"",
    b"EQUALS": b"a=b==c=",
    b"K\xe9Y\xff": b"non-UTF-8 name",
    b"SPACE NAME": b" lead and trail ",
}

LOCALES: dict[str, dict[bytes, bytes]] = {
    "none": {},  # Python coerces the C locale: LC_CTYPE=C.UTF-8 joins the environment
    "LANG=C": {b"LANG": b"C"},
    "LC_ALL=C": {b"LC_ALL": b"C"},  # no coercion
    "LANG=C.UTF-8": {b"LANG": b"C.UTF-8"},
    "LC_CTYPE=POSIX": {b"LC_CTYPE": b"POSIX"},  # replaced in place by the coercion
    "LANG=missing": {b"LANG": b"xx_YY.ISO-8859-1"},  # not installed: the C locale
    "LC_ALL=empty": {b"LC_ALL": b"", b"LANG": b"C"},
}


PYTHON_DIRECT = [sys.executable, "-I", "-S", "-c",
                 "import sys; sys.path.insert(0, sys.argv[1])\n"
                 "from mailguard.lean.smtpd import main; sys.exit(main())", str(ROOT)]


@pytest.mark.parametrize("locale", list(LOCALES))
def test_the_request_line_is_pythons_byte_for_byte(
        shims: Shims, fake: Callable[..., FakeDaemon], tmp_path: Path, locale: str) -> None:
    daemon = fake(b'{"taken":true}\n', b'{"done":true}\n')
    env = {**base_env(daemon.path), **LOCALES[locale], **TRICKY}
    # through the sh shim (which drops names that are not shell identifiers: both lose
    # them alike), and each program started directly (every name kept)
    runs = [run([str(shims.native)], {**env, b"MAILGUARD_PYTHON": NOT_A_PYTHON.encode()}),
            run([str(shims.python)], env),
            run([str(shims.binary)], {**env, b"MAILGUARD_PYTHON": NOT_A_PYTHON.encode()}),
            run(PYTHON_DIRECT, env)]
    for r in runs:
        assert (r.code, r.client) == (0, b""), r.stderr
    lines = [cap.line.replace(NOT_A_PYTHON.encode(), sys.executable.encode())
             for cap in daemon.captured]
    assert lines[0] == lines[1]
    assert lines[2] == lines[3]
    # ... and it is protocol.encode of the environment as os.environ decodes it
    request = protocol.decode(daemon.captured[2].line)
    assert daemon.captured[2].line == protocol.encode(request)
    sent = request["env"]
    for name, value in TRICKY.items():
        assert sent[os.fsdecode(name)] == os.fsdecode(value)
    assert sent["NOT_UTF8"].startswith("\udcff\udcfe\udc80abc\udce2\udc82A\udced\udca0\udc80")
    # the connection itself rode along: fd 0, the client socket
    assert [cap.fd_ino for cap in daemon.captured] == [r.ino for r in runs]


def test_duplicate_and_malformed_entries_as_os_environ_sees_them(
        shims: Shims, fake: Callable[..., FakeDaemon]) -> None:
    daemon = fake(b'{"taken":true}\n', b'{"done":true}\n')
    elsewhere = fake(b'{"taken":true}\n', b'{"done":true}\n')
    env = [b"A=first", b"NO_EQUALS_SIGN", b"=empty name", b"A=second", b"LC_CTYPE=C",
           b"MAILGUARD_CONTROL=" + os.fsencode(daemon.path),
           b"MAILGUARD_CONTROL=" + os.fsencode(elsewhere.path),
           b"MAILGUARD_CONFIG=/nonexistent", b"MAILGUARD_LIB=" + os.fsencode(ROOT),
           b"MAILGUARD_PYTHON=" + sys.executable.encode(), b"PATH=/usr/bin:/bin"]
    # started directly: os.environ's view (the first of duplicates, ...); through the sh
    # shim: the shell's (the last of duplicates): the same for both shims either way
    runs = [run([str(shims.binary)], env), run(PYTHON_DIRECT, env),
            run([str(shims.native)], env), run([str(shims.python)], env)]
    assert [r.code for r in runs] == [0, 0, 0, 0], [r.stderr for r in runs]
    lines = [cap.line for cap in daemon.captured + elsewhere.captured]
    assert len(daemon.captured) == len(elsewhere.captured) == 2
    assert lines[0] == lines[1] and lines[2] == lines[3]
    sent = protocol.decode(lines[0])["env"]
    assert sent["A"] == "first" and sent[""] == "empty name" and sent["LC_CTYPE"] == "C.UTF-8"
    assert list(sent)[:3] == ["A", "", "LC_CTYPE"]


# Each answer of the daemon: the client sees the same bytes, the exit status is the same.
ANSWERS: dict[str, tuple[bytes, ...]] = {
    "served": (b'{"taken":true}\n', b'{"done":true}\n'),
    "one-write": (b'{"taken":true}\n{"done":true}\n',),
    "refused": (b'{"error":"shutting down"}\n',),
    "closed-before-taken": (),
    "died-in-session": (b'{"taken":true}\n',),
    "error-in-session": (b'{"taken":true}\n', b'{"error":"boom"}\n'),
    "neither": (b'{"other":1}\n',),
    "taken-false": (b'{"taken":false,"error":""}\n',),
    "spaces-are-malformed": (b'{"taken": true}\n', b'{"done":true}\n'),
    "stripped": (b'\x1f {"taken":1}\x0c\r\n', b'{"done":true}\n'),
    "escaped-key": (b'{"t\\u0061ken":"y","taken":0,"taken":{"a":null}}\n', b'{"done":1}\n'),
    "error-object": (b'{"taken":true}\n', b'{"error":{"x":[]}}\n'),
    "error-empty": (b'{"error":"","taken":true}\n', b'{"error":{}}\n'),
    "error-zero": (b'{"error":-0,"taken":-007}\n', b'{"done":true}\n'),
    "not-ascii": (b'{"error":"\xc3\xa9"}\n',),
    "trailing": (b'{"taken":true}x\n',),
    "truncated": (b'{"taken":true',),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_every_answer_ends_as_in_python(shims: Shims, fake: Callable[..., FakeDaemon],
                                        answer: str) -> None:
    daemon = fake(*ANSWERS[answer])
    env = base_env(daemon.path, TCPLOCALHOST=b"mx.native")
    native = run([str(shims.native)], {**env, b"MAILGUARD_PYTHON": NOT_A_PYTHON.encode()})
    python = run([str(shims.python)], env)
    assert (native.code, native.client) == (python.code, python.client), (
        native.stderr, python.stderr)
    assert native.client in (b"", b"421 mx.native" + UNAVAILABLE)


# A string the JSON scanner rejects: lean/smtpd.py dies of a SystemError there (_json's
# scanstring raises json.JSONDecodeError, and the lean process never imports json), exit 1
# without the 421; the compiled shim treats it as every other malformed reply.
MALFORMED_STRINGS = {
    "bad-escape": b'{"error":"\\x"}\n',
    "control-char": b'{"taken":true,"e":"a\tb"}\n',
}


@pytest.mark.parametrize("answer", list(MALFORMED_STRINGS))
def test_a_malformed_string_is_a_malformed_reply(
        shims: Shims, fake: Callable[..., FakeDaemon], answer: str) -> None:
    daemon = fake(MALFORMED_STRINGS[answer])
    env = base_env(daemon.path, TCPLOCALHOST=b"mx.native")
    native = run([str(shims.native)], {**env, b"MAILGUARD_PYTHON": NOT_A_PYTHON.encode()})
    python = run([str(shims.python)], env)
    assert (native.code, native.client) == (1, b"421 mx.native" + UNAVAILABLE)
    assert (python.code, python.client) == (native.code, native.client)


@pytest.mark.parametrize("host", [b"mx.native", b"h\xffst\xc3\xa9 x\x01\xe2\x82", b""])
def test_the_421_host_name_without_a_configuration_file(
        shims: Shims, tmp_path: Path, host: bytes) -> None:
    env = base_env(tmp_path / "missing.sock", TCPLOCALHOST=host)
    native = run([str(shims.native)], {**env, b"MAILGUARD_PYTHON": NOT_A_PYTHON.encode()})
    python = run([str(shims.python)], env)
    assert native.code == python.code == 1
    assert native.client == python.client
    assert native.client.startswith(b"421 ") and native.client.endswith(UNAVAILABLE)
    assert b"cannot reach the daemon at" in native.stderr


def test_the_421_host_name_from_the_configuration_file_is_pythons(
        shims: Shims, fake: Callable[..., FakeDaemon], tmp_path: Path) -> None:
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text('[server]\nhostname = "cfg.example"\n')
    daemon = fake(b'{"error":"no"}\n')
    for control in (tmp_path / "missing.sock", daemon.path):  # before / after the request
        env = base_env(control, MAILGUARD_CONFIG=os.fsencode(cfg), TCPLOCALHOST=b"tcp.local")
        native = run([str(shims.native)], env)
        python = run([str(shims.python)], env)
        assert native.code == python.code == 1
        assert native.client == python.client == b"421 cfg.example" + UNAVAILABLE


def test_no_acknowledgement_421_after_five_seconds(
        shims: Shims, fake: Callable[..., FakeDaemon]) -> None:
    daemon = fake(HOLD)
    started = time.monotonic()
    native = run([str(shims.native)],
                 base_env(daemon.path, TCPLOCALHOST=b"mx.native",
                          MAILGUARD_PYTHON=NOT_A_PYTHON.encode()))
    assert 4.8 < time.monotonic() - started < 6.5
    assert (native.code, native.client) == (1, b"421 mx.native" + UNAVAILABLE)
    assert b"no acknowledgement within 5 s (timed out)" in native.stderr


def test_python_takes_over_where_the_native_shim_is_not_sure(
        shims: Shims, fake: Callable[..., FakeDaemon], tmp_path: Path) -> None:
    """The fallbacks exec MAILGUARD_PYTHON with exactly the sh shim's arguments."""
    record = tmp_path / "argv"
    spy = tmp_path / "python3"
    spy.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" END >> {record}\n'
                   f'exec {sys.executable} "$@"\n')
    spy.chmod(0o755)
    daemon = fake(b'{"taken":true}\n', b'{"done":true}\n')
    env = {**base_env(daemon.path), b"MAILGUARD_PYTHON": os.fsencode(spy)}
    # MAILGUARD_CONTROL unset: the configuration file names the socket
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(f'[control]\nsocket = "{daemon.path}"\n')
    no_control = {k: v for k, v in env.items() if k != b"MAILGUARD_CONTROL"}
    no_control[b"MAILGUARD_CONFIG"] = os.fsencode(cfg)
    for program in (shims.native, shims.python):
        assert run([str(program)], no_control).code == 0
    assert len(daemon.captured) == 2
    argvs = record.read_bytes().split(b"END\0")
    assert argvs[0] == argvs[1]  # the same snippet and MAILGUARD_LIB
    assert argvs[0].startswith(b"-I\0-S\0-c\0\nimport sys;")
    # --help / -h: lean/smtpd.py's text, nothing else touched
    for flag in ("--help", "-h"):
        for program in (shims.native, shims.python):
            res = subprocess.run([str(program), flag], env=env, capture_output=True,
                                 timeout=30, check=True)
            assert res.stdout.startswith(b"`mailguard smtpd`: the drop-in for qmail-smtpd")
    assert len(daemon.captured) == 2


# -- the real daemon, under the real tcpserver -------------------------------------------

needs_ucspi = pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("native-dropin"), CONFIG)
    yield d
    assert d.stop() == 0


@pytest.fixture
def tcpserver(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Callable[..., Tcpserver]]:
    started: list[Tcpserver] = []
    rules = build_rules(tmp_path_factory.mktemp("rules"),
                        ['127.0.0.2:allow,RELAYCLIENT=""', ":allow"])

    def make(program: Path, env: dict[str, str]) -> Tcpserver:
        log_dir = tmp_path / f"tcpserver{len(started)}"  # a log of its own
        log_dir.mkdir()
        server = start_tcpserver(log_dir, [str(program)], env, rules)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def native_env(d: Daemon, record_dir: Path, **extra: str) -> dict[str, str]:
    env = lean_env(d.control, QMAILQUEUE=str(RECORDER), RECORD_DIR=str(record_dir),
                   MAILGUARD_CONFIG=str(d.tmp / "mailguard.toml"), MAILGUARD_LIB=str(ROOT))
    env.update(extra)
    return env


def exit_statuses(server: Tcpserver, count: int) -> list[str]:
    """tcpserver -v's `end <pid> status <wait status>` lines (256 = exit 1)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ends = [ln.rsplit(" ", 1)[-1] for ln in server.log.read_text().splitlines()
                if " end " in ln]
        if len(ends) >= count:
            return ends
        time.sleep(0.05)
    raise AssertionError(server.log.read_text())


@needs_ucspi
def test_native_session_delivers_mail(shims: Shims, daemon: Daemon,
                                      tcpserver: Callable[..., Tcpserver],
                                      tmp_path: Path) -> None:
    record_dir = tmp_path / "rec"
    record_dir.mkdir()
    # no Python at all: every step here is the compiled shim's
    server = tcpserver(shims.native, native_env(daemon, record_dir,
                                                MAILGUARD_PYTHON=NOT_A_PYTHON))
    c = Client("127.0.0.1", server.port, source="127.0.0.2")  # RELAYCLIENT="" by tcprules
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        replies = c.transaction("a@example.org", ["out@foreign.test"], MESSAGE)
        assert QUEUED.fullmatch(replies[-1]), replies
        assert c.cmd("QUIT") == b"221 mx.test\r\n"
        assert c.closed_by_peer()
    finally:
        c.close()
    assert exit_statuses(server, 1) == ["0"]
    [(message, envelope)] = recorded(record_dir)
    assert envelope == b"Fa@example.org\0Tout@foreign.test\0\0"
    assert message.endswith(b"\nFrom: a@example.org\nSubject: drop-in\n\nhello\n")


@needs_ucspi
def test_environment_under_tcpserver_arrives_as_pythons(
        shims: Shims, fake: Callable[..., FakeDaemon], tcpserver: Callable[..., Tcpserver],
        tmp_path: Path) -> None:
    daemon = fake(b'{"taken":true}\n', b'{"done":true}\n')
    env = lean_env(daemon.path, MAILGUARD_LIB=str(ROOT),
                   ODD=os.fsdecode(b"caf\xc3\xa9 \xff\xfe \"q\" \\"))
    for program in (shims.native, shims.python):
        server = tcpserver(program, env)
        c = Client("127.0.0.1", server.port, source="127.0.0.2")
        assert c.reply() == b""  # the fake daemon closed its copy: only EOF
        c.close()
    deadline = time.monotonic() + 10
    while len(daemon.captured) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    native, python = (protocol.decode(cap.line)["env"] for cap in daemon.captured)
    assert native["RELAYCLIENT"] == "" and native["TCPREMOTEIP"] == "127.0.0.2"
    assert native["ODD"] == "caf\u00e9 \udcff\udcfe \"q\" \\"
    for varying in ("TCPREMOTEPORT", "TCPLOCALPORT"):
        native.pop(varying)
        python.pop(varying)
    assert native == python
    assert list(native) == list(python)


@needs_ucspi
def test_daemon_down_gets_421_and_exit_1(shims: Shims, daemon: Daemon,
                                         tcpserver: Callable[..., Tcpserver],
                                         tmp_path: Path) -> None:
    record_dir = tmp_path / "rec"
    record_dir.mkdir()
    missing = str(tmp_path / "missing.sock")
    # host name from the configuration file: the Python snippet writes it
    server = tcpserver(shims.native, native_env(daemon, record_dir, MAILGUARD_CONTROL=missing))
    # no configuration file: the compiled shim alone (tcpserver -l localhost)
    bare = tcpserver(shims.native, native_env(daemon, record_dir, MAILGUARD_CONTROL=missing,
                                              MAILGUARD_CONFIG="/nonexistent",
                                              MAILGUARD_PYTHON=NOT_A_PYTHON))
    for srv, host in ((server, b"mx.test"), (bare, b"localhost")):
        c = Client("127.0.0.1", srv.port)
        try:
            assert c.reply() == b"421 " + host + UNAVAILABLE
            assert c.closed_by_peer()
        finally:
            c.close()
        assert exit_statuses(srv, 1) == ["256"]
    assert recorded(record_dir) == []


@needs_ucspi
def test_stopped_daemon_gets_421_within_six_seconds(
        shims: Shims, make_daemon: list[Daemon], tcpserver: Callable[..., Tcpserver],
        tmp_path: Path) -> None:
    (tmp_path / "stopped").mkdir()
    d = start_daemon(tmp_path / "stopped", CONFIG)
    make_daemon.append(d)
    record_dir = tmp_path / "rec"
    record_dir.mkdir()
    server = tcpserver(shims.native, native_env(d, record_dir))
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        c = Client("127.0.0.1", server.port)
        started = time.monotonic()
        assert c.reply() == b"421 mx.test" + UNAVAILABLE
        assert 4.8 < time.monotonic() - started < 6.5
        assert c.closed_by_peer()
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    assert "event=smtp_abandoned" in d.wait_log("event=smtp_abandoned")
    assert c.reply() == b""
    c.close()
    c = Client("127.0.0.1", server.port)
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        assert c.cmd("QUIT") == b"221 mx.test\r\n"
    finally:
        c.close()
    assert exit_statuses(server, 2) == ["256", "0"]
    assert recorded(record_dir) == []


def test_pipes_fall_back_to_the_python_relay(shims: Shims, daemon: Daemon,
                                             tmp_path: Path) -> None:
    """fd 0 / fd 1 pipes (sslserver, inetd-style wrappers): lean/smtpd.py relays them."""
    env = native_env(daemon, tmp_path)
    proc = subprocess.Popen([str(shims.native)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(b"QUIT\r\n", timeout=30)
    assert proc.returncode == 0, err
    assert out == b"220 mx.test ESMTP\r\n221 mx.test\r\n"


@needs_ucspi
def test_no_mailguard_control_falls_back_to_the_configuration_file(
        shims: Shims, daemon: Daemon, tcpserver: Callable[..., Tcpserver],
        tmp_path: Path) -> None:
    env = native_env(daemon, tmp_path)
    del env["MAILGUARD_CONTROL"]  # the socket is named by [control] socket of the file
    server = tcpserver(shims.native, env)
    c = Client("127.0.0.1", server.port)
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        assert c.cmd("QUIT") == b"221 mx.test\r\n"
    finally:
        c.close()
    assert exit_statuses(server, 1) == ["0"]
