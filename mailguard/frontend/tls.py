"""The server's TLS context: built once at start-up and shared by STARTTLS and the
implicit-TLS (SMTPS) listeners. A certificate that cannot be loaded stops the start with
a configuration error naming the file, rather than failing each client's handshake."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from mailguard.config import Config
from mailguard.errors import ConfigError

SERVERCERT = "servercert.pem"  # qmail TLS patch: key and certificate in one file


def cert_paths(config: Config) -> tuple[str, str] | None:
    """(cert, key) files to use, or None when TLS is not configured: `tls.cert` (and
    `tls.key`, default the cert file), else `<qmail_control_dir>/servercert.pem` if it
    exists."""
    tls = config.tls
    if tls.cert:
        return tls.cert, tls.key or tls.cert
    control = config.server.qmail_control_dir
    if control and (Path(control) / SERVERCERT).is_file():
        path = str(Path(control) / SERVERCERT)
        return path, path
    return None


def build_tls_context(config: Config) -> ssl.SSLContext | None:
    """The server context, or None without a certificate. Raises ConfigError for files
    that cannot be read or do not match, and when a TLS-only feature has no certificate."""
    paths = cert_paths(config)
    if paths is None:
        if config.tls.smtps_listen:
            raise ConfigError(config.source, "tls.smtps_listen", "needs a certificate (tls.cert)")
        if config.auth.enabled and config.auth.require_tls:
            raise ConfigError(
                config.source, "auth.require_tls",
                "AUTH only after STARTTLS needs a certificate (tls.cert); "
                "set one, or require_tls = false",
            )
        return None
    cert, key = paths
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # server side, no client certs
    ctx.minimum_version = ssl.TLSVersion[config.tls.min_version.replace("TLSv1.", "TLSv1_")]
    for name, path in (("tls.cert", cert), ("tls.key", key)):
        if not Path(path).is_file():
            raise ConfigError(config.source, name, f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise ConfigError(config.source, name, f"{path}: permission denied")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            config.source, "tls.cert",
            f"cannot load certificate {cert} with key {key}: {exc}",
        ) from None
    return ctx
