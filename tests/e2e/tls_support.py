"""Helpers for the STARTTLS / AUTH end-to-end tests: a certificate made at test time,
client TLS contexts, STARTTLS on the raw Client, and `mailguard account` runs."""

from __future__ import annotations

import base64
import contextlib
import io
import ssl
import subprocess
import sys
from pathlib import Path

from mailguard.cli.main import main
from tests.e2e.daemon_harness import Client

HOST = "mx.test"


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for mx.test: (cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST}", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def client_context(cert: Path) -> ssl.SSLContext:
    """A client that trusts exactly our test certificate (and checks the host name)."""
    return ssl.create_default_context(cafile=str(cert))


def wrap(c: Client, ctx: ssl.SSLContext) -> None:
    """Run the TLS handshake on the client's connection (nothing may be buffered)."""
    assert c.buf == b"", c.buf
    c.sock = ctx.wrap_socket(c.sock, server_hostname=HOST)


def starttls(c: Client, ctx: ssl.SSLContext) -> None:
    assert c.cmd("STARTTLS") == b"220 ready to start TLS\r\n"
    wrap(c, ctx)


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def account(store: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`mailguard account ARGS --store STORE` with `stdin` as its input, run in this
    process (a subprocess per call costs seconds of imports on a busy machine)."""
    argv = ["account", *args, "--store", store]
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        sys.stdin = saved
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
