"""`[tls]` and `[auth]`: the loader refuses bad values; the TLS context is built from the
configured files or qmail's control/servercert.pem, and bad files stop the start."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from mailguard.config import Config, load
from mailguard.errors import ConfigError
from mailguard.frontend.tls import build_tls_context, cert_paths
from tests.services import missing


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for mx.test (key and cert in separate PEM files)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.test",
         "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def load_text(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "mg.toml"
    p.write_text(text)
    return load(p)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[auth]\nmechanisms = ["CRAM-MD5"]', "auth.mechanisms", "unsupported mechanism"),
        ("[auth]\nmechanisms = []", "auth.mechanisms", "at least one"),
        ('[auth]\nbackend = "ldap"', "auth.backend", "must be one of"),
        ('[auth]\nbackend = "checkpassword"', "auth.checkpassword", "needs the program"),
        ("[auth]\nmax_failures_per_ip = 0", "auth.max_failures_per_ip", "must be > 0"),
        ("[auth]\nfailure_delay_s = -1", "auth.failure_delay_s", "must be >= 0"),
        ("[auth]\nrequire_tls = 1", "auth.require_tls", "true or false"),
        ('[tls]\nmin_version = "TLSv1.1"', "tls.min_version", "must be one of"),
        ('[tls]\nkey = "/k.pem"', "tls.key", "without a cert"),
        ('[tls]\nsmtps_listen = ["[::1"]', "tls.smtps_listen", "missing ']'"),
        ("[tls]\nciphers = 1", "tls.ciphers", "unknown key"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    assert err.value.key == key
    assert reason in err.value.reason


def test_defaults(tmp_path: Path) -> None:
    c = load(None)
    assert c.auth.enabled is False and c.auth.require_tls is True
    assert c.auth.mechanisms == ("PLAIN", "LOGIN") and c.auth.backend == "users"
    assert (c.auth.max_failures_per_ip, c.auth.failure_window_s, c.auth.failure_delay_s) == (
        5, 600.0, 2.0)
    assert c.tls.cert == "" and c.tls.smtps_listen == () and c.tls.min_version == "TLSv1.2"
    assert build_tls_context(c) is None  # no certificate: no STARTTLS


def test_context_from_files_and_from_qmail_control(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    c = load_text(tmp_path, f'[tls]\ncert = "{cert}"\nkey = "{key}"\nmin_version = "TLSv1.3"\n')
    ctx = build_tls_context(c)
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    # qmail TLS patch convention: control/servercert.pem holds key and certificate
    control = tmp_path / "control"
    control.mkdir()
    (control / "me").write_text("mx.test\n")
    c2 = load_text(tmp_path, f'[server]\nqmail_control_dir = "{control}"\n')
    assert cert_paths(c2) is None
    (control / "servercert.pem").write_bytes(key.read_bytes() + cert.read_bytes())
    both = str(control / "servercert.pem")
    assert cert_paths(c2) == (both, both)
    assert build_tls_context(c2) is not None


def test_unusable_certificates_stop_the_start(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = make_cert(tmp_path / "other")
    cases = [
        (f'[tls]\ncert = "{tmp_path}/missing.pem"', "tls.cert", "missing.pem: no such file"),
        (f'[tls]\ncert = "{cert}"', "tls.cert", "cannot load certificate"),  # no key in it
        (f'[tls]\ncert = "{other_cert}"\nkey = "{key}"', "tls.cert", "cannot load certificate"),
        ('[tls]\nsmtps_listen = ["127.0.0.1:0"]', "tls.smtps_listen", "needs a certificate"),
        ("[auth]\nenabled = true", "auth.require_tls", "needs a certificate"),
    ]
    for text, key_name, reason in cases:
        config = load_text(tmp_path, text)
        with pytest.raises(ConfigError) as err:
            build_tls_context(config)
        assert (err.value.key, reason in err.value.reason) == (key_name, True), text
    # AUTH without TLS is allowed when explicitly asked for
    open_auth = load_text(tmp_path, "[auth]\nenabled = true\nrequire_tls = false")
    assert build_tls_context(open_auth) is None


@pytest.fixture(autouse=True)
def _need_openssl() -> None:
    if shutil.which("openssl") is None:
        missing("openssl is not installed")
