"""Issue 11's pure parts: the replaced qmail-smtpd's texts read from its binary, the
control-file signature that triggers a reload, timeoutsmtpd 0, which wrappers are
believed about TLS, and what a reload keeps until a restart."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from mailguard.app import keep_restart_only
from mailguard.clock import SystemClock
from mailguard.config import Config, ServerConfig
from mailguard.delivery.qmail_queue import QmailQueueDelivery
from mailguard.frontend.conversation import hands_to_qmail_queue
from mailguard.frontend.wrapper import behind_wrapper, wrapped_tls
from mailguard.qmail.cdb import write_cdb
from mailguard.qmail.control import SmtpdTexts, read_control, signature, smtpd_texts

NETQMAIL = (b"\x7fELF\x00\x00220 \x00 ESMTP\r\n\x00"
            b"214 qmail home page: http://pobox.com/~djb/qmail.html\r\n\x00"
            b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n\x00")
NOTQMAIL = (b"\x00\x00214 notqmail home page: https://notqmail.org\r\n\x00"
            b"451 See https://cr.yp.to/docs/smtplf.html.\r\n\x00")


def qmail_dir(tmp: Path, binary: bytes | None) -> str:
    (tmp / "control").mkdir()
    if binary is not None:
        (tmp / "bin").mkdir()
        (tmp / "bin" / "qmail-smtpd").write_bytes(binary)
    return str(tmp / "control")


@pytest.mark.parametrize(("binary", "help_text", "bare_lf"), [
    (NETQMAIL, "qmail home page: http://pobox.com/~djb/qmail.html",
     "See http://pobox.com/~djb/docs/smtplf.html."),
    (NOTQMAIL, "notqmail home page: https://notqmail.org", "See https://cr.yp.to/docs/smtplf.html."),
    (None, SmtpdTexts().help, SmtpdTexts().bare_lf),  # no binary: notqmail's words
    (b"\x00junk 214 not a reply\r\n\x00", SmtpdTexts().help, SmtpdTexts().bare_lf),
])
def test_texts_of_the_replaced_binary(tmp_path: Path, binary: bytes | None, help_text: str,
                                      bare_lf: str) -> None:
    texts = smtpd_texts(qmail_dir(tmp_path, binary))
    assert texts == SmtpdTexts(help=help_text, bare_lf=bare_lf)
    assert smtpd_texts("") == SmtpdTexts()


def test_signature_sees_edits_renames_and_new_files(tmp_path: Path) -> None:
    control = Path(qmail_dir(tmp_path, None))
    (control / "rcpthosts").write_text("a.example\n")
    first = signature(str(control))
    assert signature(str(control)) == first  # nothing changed: equal, no reload
    with open(control / "rcpthosts", "a") as fh:
        fh.write("b.example\n")
    second = signature(str(control))
    assert second != first
    write_cdb(control / "morercpthosts.tmp", [(b"c.example", b"")])  # qmail-newmrh
    os.rename(control / "morercpthosts.tmp", control / "morercpthosts.cdb")
    third = signature(str(control))
    assert third != second
    (control / "timeoutsmtpd").write_text("0\n")
    assert signature(str(control)) != third


@pytest.mark.parametrize(("text", "expected"), [("0\n", 1), ("1\n", 1), ("30\n", 30),
                                                 (None, 1200)])
def test_timeoutsmtpd_zero_is_one_second(tmp_path: Path, text: str | None,
                                          expected: int) -> None:
    control = Path(qmail_dir(tmp_path, None))
    if text is not None:
        (control / "timeoutsmtpd").write_text(text)
    assert read_control(control).timeoutsmtpd == expected  # qmail-smtpd: timeout <= 0 → 1


@pytest.mark.parametrize(("peer", "expected"), [
    ("", True),  # a unix socketpair: `mailguard smtpd`'s relay of pipes
    (("127.0.0.1", 40000), True),  # stunnel's emulated socketpair
    (("::1", 40000, 0, 0), True),
    (("192.0.2.7", 40000), False),  # the client's own TCP connection (tcpserver)
    (("2001:db8::7", 40000, 0, 0), False),
])
def test_behind_wrapper(peer: object, expected: bool) -> None:
    assert behind_wrapper(peer) is expected


@pytest.mark.parametrize(("env", "expected"), [
    ({"SSL_PROTOCOL": "TLSv1.3", "SSL_CIPHER": "TLS_AES_256_GCM_SHA384"}, True),  # sslserver
    ({"MAILGUARD_TLS": "stunnel"}, True),
    ({"SSL_PROTOCOL": ""}, False),
    ({"TCPREMOTEIP": "192.0.2.7"}, False),
])
def test_wrapped_tls(env: dict[str, str], expected: bool) -> None:
    assert wrapped_tls(env) is expected


def test_reload_keeps_what_only_a_restart_changes() -> None:
    old = Config()
    new = replace(old, server=replace(old.server, listen=("127.0.0.1:2600",), databytes=5))
    kept, changed = keep_restart_only(old, new)
    assert changed == ["server.listen"]
    assert kept.server.listen == old.server.listen
    assert kept.server.databytes == 5  # everything else is the new file's
    same, none = keep_restart_only(old, replace(old, server=ServerConfig(databytes=7)))
    assert none == [] and same.server.databytes == 7


def test_unqualified_recipients_go_to_a_qmail_queue_even_wrapped() -> None:
    qq = QmailQueueDelivery(["/bin/true"], SystemClock(), timeout_s=5)

    class Wrapper:  # a delivery wrapper that keeps the real one as `inner`
        def __init__(self, inner: object) -> None:
            self.inner = inner

    assert hands_to_qmail_queue(qq)
    assert hands_to_qmail_queue(Wrapper(Wrapper(qq)))
    assert not hands_to_qmail_queue(Wrapper(object()))
    assert not hands_to_qmail_queue(object())
