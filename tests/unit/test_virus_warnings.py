"""Virus warnings, pure: who is warned, in which language, with which text and headers."""

from __future__ import annotations

import base64
import email
import email.policy
from collections.abc import Callable, Sequence
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailguard.notify.templates import TemplateSet
from mailguard.notify.virus import OutgoingMail, build_warnings
from mailguard.settings.virus import VirusConfig

HOST = "mx.example.com"
NOW = 1_800_000_000.0
VIRUS = "Win.Test.EICAR_HDB-1"
SUBJECT = f"VIRUS WARNING : {VIRUS}"
ORIGINAL = (
    b"Received: from evil.test by mx.example.com\n"
    b"From: Someone <someone@elsewhere.test>\n"
    b"To: alice@example.com, bob@example.com\n"
    b"Subject: invoice\n"
    b"Message-ID: <orig-123@elsewhere.test>\n"
    b"X-Original-Marker: marker-4711\n"
    b"\n"
    b"BODY-SECRET line one\n"
    b"X-Looks-Like: a header but is in the body\n"
)
TEMPLATES = TemplateSet.load()

# a distinctive phrase of each language's templates (all three audiences)
PHRASE = {
    "en": "This is an automatic message",
    "de": "Dies ist eine automatisch erzeugte Nachricht",
    "fr": "Ceci est un message automatique",
    "es": "Este es un mensaje automático",
}


def is_local(domain: str) -> bool:
    return domain in ("example.com", "example.org")


def no_language(addr: str) -> str | None:
    return None


def build(
    *,
    original: bytes = ORIGINAL,
    sender: str = "someone@elsewhere.test",
    rcpts: Sequence[str] = ("alice@example.com",),
    virus: str = VIRUS,
    cfg: VirusConfig | None = None,
    authenticated: bool = False,
    language_for: Callable[[str], str | None] = no_language,
    templates: TemplateSet = TEMPLATES,
) -> list[OutgoingMail]:
    return build_warnings(
        original=original,
        sender=sender,
        rcpts=rcpts,
        virus=virus,
        hostname=HOST,
        cfg=cfg or VirusConfig(),
        is_local=is_local,
        authenticated=authenticated,
        language_for=language_for,
        now=NOW,
        templates=templates,
    )


def parsed(mail: OutgoingMail) -> EmailMessage:
    msg = email.message_from_bytes(mail.message, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body_of(mail: OutgoingMail) -> str:
    part = parsed(mail).get_body()
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def head_of(mail: OutgoingMail) -> bytes:
    return mail.message.partition(b"\n\n")[0]


def by_audience(mails: list[OutgoingMail]) -> dict[str, list[OutgoingMail]]:
    out: dict[str, list[OutgoingMail]] = {}
    for m in mails:
        out.setdefault(m.audience, []).append(m)
    return out


@pytest.mark.parametrize("lang", ["en", "de", "fr", "es"])
@pytest.mark.parametrize("audience", ["recipient", "sender", "admin"])
def test_each_audience_and_language(audience: str, lang: str) -> None:
    target = {
        "recipient": "alice@example.com",
        "sender": "carol@example.com",
        "admin": "postmaster@mx.example.com",
    }[audience]
    mails = build(sender="carol@example.com", language_for=lambda a: lang if a == target else "en")
    [mail] = [m for m in mails if m.audience == audience]
    assert mail.rcpts == (target,) and mail.language == lang
    assert mail.sender == ""  # null envelope sender: a bounce of a warning can't loop
    assert b"\r" not in mail.message
    msg = parsed(mail)
    assert msg["Subject"] == SUBJECT
    assert f"\nSubject: {SUBJECT}\n".encode() in mail.message  # exact, not encoded
    assert msg["To"] == target
    assert msg["From"] == "MAILER-DAEMON@mx.example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert mail.message.startswith(b"Date: Fri, 15 Jan 2027 08:00:00 +0000\n")
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert msg["Message-ID"].endswith(f".virus@{HOST}>")
    body = body_of(mail)
    assert PHRASE[lang] in body
    assert VIRUS in body
    for line in ORIGINAL.decode().split("\n\n")[0].splitlines():
        assert f"\n    {line}\n" in body  # every original header, indented
    assert "BODY-SECRET" not in body and "X-Looks-Like" not in body
    assert "$" not in body  # every placeholder filled


def test_non_ascii_languages_are_quoted_printable_and_english_is_7bit() -> None:
    mails = build(
        rcpts=("alice@example.com", "bob@example.org"),
        language_for=lambda a: "de" if a.startswith("alice") else None,
    )
    cte = {m.language: parsed(m)["Content-Transfer-Encoding"] for m in mails}
    assert cte == {"de": "quoted-printable", "en": "7bit"}
    lengths = {m.language: max(len(x) for x in m.message.split(b"\n")) for m in mails}
    assert lengths["de"] <= 76 and lengths["en"] <= 998


# (policy, envelope sender, authenticated, warned address or None)
SENDER_CASES: list[tuple[str, str, bool, str | None]] = [
    ("local", "carol@example.com", False, "carol@example.com"),
    ("local", "carol@EXAMPLE.ORG", False, "carol@EXAMPLE.ORG"),
    ("local", "forged@elsewhere.test", False, None),  # backscatter: never by default
    ("local", "forged@elsewhere.test", True, "forged@elsewhere.test"),  # logged in
    ("local", "carol", False, "carol@mx.example.com"),  # qmail appends its own domain
    ("local", "", True, None),  # the null sender is never warned
    ("local", "#@[]", True, None),  # qmail's double-bounce sender
    ("local", "carol@example.com\r\nBcc: x@y", False, None),  # not an address
    ("always", "forged@elsewhere.test", False, "forged@elsewhere.test"),
    ("always", "", False, None),
    ("always", "broken@", False, None),
    ("never", "carol@example.com", True, None),
    ("never", "", False, None),
]


@pytest.mark.parametrize(("policy", "sender", "authenticated", "warned"), SENDER_CASES)
def test_notify_sender_policy(
    policy: str, sender: str, authenticated: bool, warned: str | None
) -> None:
    cfg = VirusConfig(notify_sender=policy)  # type: ignore[arg-type]
    mails = by_audience(build(sender=sender, authenticated=authenticated, cfg=cfg))
    got = [m.rcpts for m in mails.get("sender", [])]
    assert got == ([(warned,)] if warned else [])
    assert [m.rcpts for m in mails["recipient"]] == [("alice@example.com",)]
    assert [m.rcpts for m in mails["admin"]] == [("postmaster@mx.example.com",)]


def test_only_local_recipients_each_address_once_and_switches() -> None:
    rcpts = (
        "alice@example.com",
        "far@remote.test",
        "Postmaster@mx.example.com",
        "bob@example.org",
        "carol@example.com",
    )
    mails = build(
        sender="carol@example.com", rcpts=rcpts, cfg=VirusConfig(admin="Postmaster@mx.example.com")
    )
    got = {m.audience: m.rcpts for m in mails}
    # the admin is also a recipient and the sender sent to herself: one warning each,
    # the most informative one; the remote recipient is not ours to warn
    assert got == {
        "recipient": ("alice@example.com", "bob@example.org"),
        "sender": ("carol@example.com",),
        "admin": ("Postmaster@mx.example.com",),
    }
    assert [m.audience for m in mails] == ["recipient", "sender", "admin"]
    assert build(cfg=VirusConfig(notify_recipients=False, notify_admin=False)) == []
    only_admin = build(cfg=VirusConfig(notify_recipients=False, admin="av@example.org"))
    assert [(m.audience, m.rcpts) for m in only_admin] == [("admin", ("av@example.org",))]


def test_one_warning_per_language_without_disclosing_recipients() -> None:
    rcpts = ("alice@example.com", "bob@example.com", "ana@example.org")
    langs = {"alice@example.com": "fr", "bob@example.com": "fr-CA", "ana@example.org": "es"}
    mails = by_audience(build(rcpts=rcpts, language_for=langs.get))["recipient"]
    assert [(m.language, m.rcpts) for m in mails] == [
        ("fr", ("alice@example.com", "bob@example.com")),
        ("es", ("ana@example.org",)),
    ]
    assert parsed(mails[0])["To"] == "undisclosed-recipients:;"
    assert parsed(mails[1])["To"] == "ana@example.org"


def test_configured_addresses() -> None:
    cfg = VirusConfig(from_address="av@example.com", from_header='"Virus scanner" <av@x.test>')
    [mail] = by_audience(build(cfg=cfg))["recipient"]
    assert mail.sender == "av@example.com"
    assert b'\nFrom: "Virus scanner" <av@x.test>\n' in head_of(mail)


# (what language_for answers, default_language, language written)
LANGUAGE_CASES: list[tuple[str | None, str, str]] = [
    ("de", "en", "de"),
    ("DE", "en", "de"),
    ("de-AT", "en", "de"),
    ("es_MX", "en", "es"),
    (None, "fr", "fr"),
    ("pt", "fr", "fr"),  # no Portuguese templates: the default language
    ("pt", "nl", "en"),  # nor Dutch: English
    ("../../etc/passwd", "de", "de"),  # not a language tag
    ("", "es", "es"),
]


@pytest.mark.parametrize(("preferred", "default", "written"), LANGUAGE_CASES)
def test_language_choice(preferred: str | None, default: str, written: str) -> None:
    mails = build(cfg=VirusConfig(default_language=default), language_for=lambda a: preferred)
    [mail] = by_audience(mails)["recipient"]
    assert mail.language == written
    assert PHRASE[written] in body_of(mail)


def test_a_failing_language_lookup_falls_back() -> None:
    def broken(addr: str) -> str | None:
        raise RuntimeError("store down")

    mails = build(cfg=VirusConfig(default_language="es"), language_for=broken)
    assert {m.language for m in mails} == {"es"}


def test_admin_templates_win_over_builtins_and_add_languages(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "recipient.txt").write_text(
        "Subject: [AV] $virus for you\n\nLocal text: $virus from $sender.\n$headers\n"
    )
    (tmp_path / "it").mkdir()  # a language the package lacks, only for recipients
    (tmp_path / "it" / "recipient.txt").write_text("Messaggio bloccato: $virus\n")
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "admin.txt").write_bytes(b"Subject: x\n\n\xff broken utf-8\n")
    (tmp_path / "not a language").mkdir()
    templates = TemplateSet.load(tmp_path)
    langs = {
        "alice@example.com": "en",
        "bob@example.com": "it",
        "carol@example.com": "it",
        "postmaster@mx.example.com": "de",
    }
    mails = build(
        sender="carol@example.com",
        rcpts=("alice@example.com", "bob@example.com"),
        language_for=langs.get,
        templates=templates,
    )
    got = {(m.audience, m.language): m for m in mails}
    assert set(got) == {("recipient", "en"), ("recipient", "it"), ("sender", "en"), ("admin", "de")}
    en = got[("recipient", "en")]
    assert parsed(en)["Subject"] == f"[AV] {VIRUS} for you"
    assert body_of(en).startswith(f"Local text: {VIRUS} from carol@example.com.\n    Received:")
    it = got[("recipient", "it")]
    assert parsed(it)["Subject"] == SUBJECT  # no Subject line: the standard one
    assert body_of(it) == f"Messaggio bloccato: {VIRUS}\n"
    # no Italian sender template: the default language's built-in one
    assert PHRASE["en"] in body_of(got[("sender", "en")])
    # the broken override is skipped: the built-in German one is used
    assert PHRASE["de"] in body_of(got[("admin", "de")])


def test_an_override_directory_that_vanished_leaves_the_builtins(tmp_path: Path) -> None:
    templates = TemplateSet.load(tmp_path / "missing")
    assert templates.languages() == ["de", "en", "es", "fr"]


INJECTIONS = [
    "Eicar\r\nBcc: victim@x",
    "Eicar\nBcc: victim@x",
    "Eicar\rBcc: victim@x",
    "Eicar\x00\nBcc: victim@x",
    "Eicar\u2028Bcc: victim@x",
    "Eicar\x85Bcc: victim@x",
]


@pytest.mark.parametrize("virus", INJECTIONS)
def test_virus_names_cannot_inject_headers(virus: str) -> None:
    for mail in build(virus=virus, sender="carol@example.com"):
        head = head_of(mail)
        assert b"\nBcc" not in head and b"\rBcc" not in head
        assert all(not line.lower().startswith(b"bcc") for line in mail.message.split(b"\n"))
        msg = parsed(mail)
        assert msg["Bcc"] is None and not msg.defects
        assert msg["Subject"] == "VIRUS WARNING : Eicar Bcc: victim@x"
        assert "Eicar Bcc: victim@x" in body_of(mail)


def test_encoded_junk_in_the_original_subject_stays_in_one_line(tmp_path: Path) -> None:
    junk = base64.b64encode(b"Hi\r\nBcc: victim@x\r\n\r\nfake body").decode()
    original = f"Subject: =?utf-8?b?{junk}?=\nFrom: =?x-unknown?q?a?=\n\nbody\n".encode()
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "admin.txt").write_text("Subject: $subject / $virus\n\n[$subject] [$from]\n")
    templates = TemplateSet.load(tmp_path)
    [mail] = by_audience(build(original=original, templates=templates))["admin"]
    msg = parsed(mail)
    assert msg["Bcc"] is None
    assert msg["Subject"] == f"Hi Bcc: victim@x fake body / {VIRUS}"
    assert body_of(mail) == "[Hi Bcc: victim@x fake body] [=?x-unknown?q?a?=]\n"


def test_non_ascii_and_long_virus_names_are_encoded_and_folded() -> None:
    [mail] = by_audience(build(virus="Virüs.Prüfung-1"))["recipient"]
    assert b"Subject: =?utf-8?" in head_of(mail)
    assert head_of(mail).isascii()
    assert parsed(mail)["Subject"] == "VIRUS WARNING : Virüs.Prüfung-1"
    long_name = " ".join(f"Part{i}" for i in range(80))
    [mail] = by_audience(build(virus=long_name))["recipient"]
    lines = head_of(mail).split(b"\n")
    assert all(len(line) <= 78 for line in lines)
    subject = str(parsed(mail)["Subject"])
    assert subject.startswith("VIRUS WARNING : Part0 Part1") and subject.endswith("...")
    assert len(subject) < 220


def test_hostile_envelope_addresses_are_sanitised_in_the_text() -> None:
    mails = build(
        sender="x@y\nBcc: v@w",
        rcpts=("alice@example.com", "evil\n@example.com"),
        cfg=VirusConfig(notify_sender="always"),
    )
    assert [(m.audience, m.rcpts) for m in mails] == [
        ("recipient", ("alice@example.com",)),
        ("admin", ("postmaster@mx.example.com",)),
    ]
    admin_body = body_of(mails[1])
    assert "x@y Bcc: v@w" in admin_body
    assert "alice@example.com, evil @example.com" in admin_body


def test_the_typed_template_set_requires_english() -> None:
    with pytest.raises(ValueError, match="English"):
        TemplateSet({})


def test_defaults() -> None:
    cfg = VirusConfig()
    assert (cfg.notify_recipients, cfg.notify_admin, cfg.notify_sender) == (True, True, "local")
    assert cfg.admin_address(HOST) == "postmaster@mx.example.com"
    assert cfg.from_header_value(HOST) == "MAILER-DAEMON@mx.example.com"
    assert replace(cfg, admin="a@b.c").admin_address(HOST) == "a@b.c"


BROKEN_ORIGINALS: list[tuple[bytes, str]] = [
    (b"", "    -\n"),
    (b"\xff\xfe\x00 garbage BODY-SECRET\n", "    -\n"),
    (b"Subject: caf\xe9\nBODY-SECRET without a blank line\n", "    Subject: caf\ufffd\n"),
    (
        b"Subject: =?utf-8?q?broken\r\nContent-Type: multipart/mixed\r\n\r\nBODY-SECRET",
        "    Content-Type: multipart/mixed\n",
    ),
    (b"Subject: \xe2\x82\xac 100\x00\n\nBODY-SECRET\n", "    Subject: \u20ac 100?\n"),
]


@pytest.mark.parametrize(("original", "shown"), BROKEN_ORIGINALS)
def test_broken_and_8bit_originals(original: bytes, shown: str) -> None:
    mails = build(original=original)
    assert [m.audience for m in mails] == ["recipient", "admin"]
    for mail in mails:
        msg = parsed(mail)
        assert msg["Subject"] == SUBJECT and not msg.defects
        body = body_of(mail)
        assert shown in body and "BODY-SECRET" not in body
