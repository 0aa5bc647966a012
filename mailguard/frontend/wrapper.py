"""Drop-in sessions behind a wrapper: sslserver (ucspi-ssl), stunnel, inetd-style or test
wrappers hand qmail-smtpd pipes or a socketpair instead of the client's TCP socket
(docs/drop-in.md, "SMTPS and pipes"). What the daemon may believe about such a session."""

from __future__ import annotations

import ipaddress


def behind_wrapper(peer: object) -> bool:
    """The descriptor handed over is not the remote client's own TCP connection but a
    wrapper's: pipes relayed by `mailguard smtpd` or a unix socketpair (no inet peer), or
    stunnel's socketpair, which it emulates with a loopback TCP connection."""
    if not isinstance(peer, tuple) or not peer or not peer[0]:
        return True
    try:
        return ipaddress.ip_address(str(peer[0])).is_loopback
    except ValueError:
        return False


def wrapped_tls(env: dict[str, str]) -> bool:
    """The wrapper ran TLS: ucspi-ssl's sslserver sets SSL_PROTOCOL and SSL_CIPHER; any
    other wrapper (stunnel) says so with MAILGUARD_TLS. Asked only behind a wrapper: a
    plain tcpserver service that happens to carry such a variable must not offer AUTH to
    a remote client in clear text."""
    return any(env.get(name) for name in ("SSL_PROTOCOL", "SSL_CIPHER", "MAILGUARD_TLS"))
