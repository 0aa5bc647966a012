"""Virus warnings for a message whose envelope has non-UTF-8 bytes (qmail takes any
byte; the front end keeps them as surrogate escapes): the warnings are still written,
with the bytes shown as replacement characters, instead of failing to build at all."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from mailguard.notify.templates import TemplateSet
from mailguard.notify.virus import build_warnings
from mailguard.settings.virus import VirusConfig

EIGHT_BIT_SENDER = b"j\xf6rg@elsewhere.test".decode("utf-8", "surrogateescape")
EIGHT_BIT_RCPT = b"b\xe4r@example.com".decode("utf-8", "surrogateescape")


def test_warnings_are_built_for_eight_bit_envelopes() -> None:
    mails = build_warnings(
        original=b"Subject: invoice\n\nbody\n", sender=EIGHT_BIT_SENDER,
        rcpts=(EIGHT_BIT_RCPT, "alice@example.com"), virus="Eicar", hostname="mx.example.com",
        cfg=VirusConfig(), is_local=lambda d: d == "example.com", authenticated=False,
        language_for=lambda a: None, now=1_800_000_000.0, templates=TemplateSet.load(),
    )
    admin = [m for m in mails if m.audience == "admin"]
    assert len(admin) == 1
    admin[0].message.decode("utf-8")  # the whole message is valid UTF-8
    msg = email.message_from_bytes(admin[0].message, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body()
    assert body is not None
    text = body.get_content()
    assert "j\ufffdrg@elsewhere.test" in text and "b\ufffdr@example.com" in text
