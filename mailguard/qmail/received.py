"""The Received header qmail-smtpd puts on top of every message, byte for byte.

Follows qmail's received.c `received()` and date822fmt.c:

    Received: from relay1.uu.net (HELO uunet.uu.net) (7@192.48.96.5)
      by silverton.berkeley.edu with SMTP; 26 Sep 1995 04:46:54 -0000

Lines end in LF, as qmail stores them (the queue and Maildir hold LF text; whoever
speaks SMTP or writes CRLF files converts).  Standard library only: imported by the
lean per-connection processes.
"""

from __future__ import annotations

import time

# received.c issafe(): everything else becomes '?', byte by byte, so that nothing a
# client sends (HELO, TCPREMOTEHOST from DNS, ident) can break the header.
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@%+/=:-[]")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def safeput(text: str) -> bytes:
    """received.c safeput(): unsafe bytes (of the UTF-8 form) become `?`."""
    raw = text.encode("utf-8", "surrogateescape")
    return bytes(b if b in _SAFE else 0x3F for b in raw)


def date822fmt(when: float) -> bytes:
    """date822fmt.c: `26 Nov 2026 16:53:18 -0000` in GMT, day not zero-padded, whole
    seconds (qmail's now() has no fractions).  Without the trailing LF."""
    t = time.gmtime(int(when))
    return (
        f"{t.tm_mday} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} -0000"
    ).encode("ascii")


def _ascii_lower(text: str) -> bytes:
    # qmail's case_diffs() folds ASCII letters only.
    return text.encode("utf-8", "surrogateescape").lower()


def received_header(
    *,
    remote_ip: str,
    remote_host: str | None,
    remote_info: str | None,
    helo: str | None,
    local_host: str,
    protocol: str,
    when: float,
) -> bytes:
    """The two-line header, ending in LF.

    `remote_host` None (no TCPREMOTEHOST) prints as `unknown`.  The HELO part is left out
    when no HELO/EHLO was given (`helo` None) or when it equals the remote host name,
    compared case-insensitively (qmail-smtpd.c dohelo: `case_diffs(remotehost, helo)`);
    an empty HELO argument still prints `(HELO )`, as qmail does.  IPv6 addresses print
    as they are (`:` is safe).  `protocol` is ours (SMTP, ESMTP, ESMTPS, ESMTPA...) and
    qmail writes it unfiltered, so it must be a plain token.
    """
    if not protocol or not protocol.isascii() or not protocol.isalnum():
        raise ValueError(f"bad protocol name {protocol!r}")
    host = remote_host if remote_host is not None else "unknown"
    out = [b"Received: from ", safeput(host)]
    if helo is not None and _ascii_lower(helo) != _ascii_lower(host):
        out += [b" (HELO ", safeput(helo), b")"]
    out.append(b" (")
    if remote_info is not None:
        out += [safeput(remote_info), b"@"]
    out += [safeput(remote_ip), b")\n  by ", safeput(local_host)]
    out += [b" with ", protocol.encode("ascii"), b"; ", date822fmt(when), b"\n"]
    return b"".join(out)
