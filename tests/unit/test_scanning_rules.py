"""Pure parts of the QUEUE stage: effective settings, treatments, groups, header editing,
scanner reply parsing and the [clamd]/[spamd]/[spam] configuration."""

from __future__ import annotations

import pytest

from mailguard.checks.spam_rules import Effective, Scan, effective, treat
from mailguard.config import load
from mailguard.errors import ConfigError, PermanentError, TemporaryError
from mailguard.headers import edit, header_line, multiline_header
from mailguard.scanners.clamd import Clean, Infected, parse_reply
from mailguard.scanners.spamd import SpamResult, parse_response
from mailguard.scanning.grouping import group
from mailguard.settings.scan import SpamConfig
from mailguard.store.prefs_records import DomainPrefs, UserPrefs
from mailguard.verdict import Disposition

CFG = SpamConfig(central_box="junk@central.test")
D_ON = DomainPrefs("ex.test", spam_enabled=True)


@pytest.mark.parametrize(("user", "domain", "cfg", "want"), [
    (None, None, CFG, Effective(False, "tag", "", "")),
    (None, D_ON, CFG, Effective(True, "tag", "", "")),  # new users of an enabled domain
    (UserPrefs("u@ex.test", spam_enabled=False), D_ON, CFG, Effective(False, "tag", "", "")),
    (UserPrefs("u@ex.test", spam_enabled=True), None, CFG, Effective(True, "tag", "", "")),
    (None, DomainPrefs("ex.test", True, "domain-box"), CFG,
     Effective(True, "domain-box", "spam@ex.test", "")),
    (None, DomainPrefs("ex.test", True, "domain-box", "q@ex.test", "de"), CFG,
     Effective(True, "domain-box", "q@ex.test", "de")),
    (UserPrefs("u@ex.test", spam_action="user-box", language="fr"),
     DomainPrefs("ex.test", True, "delete", "", "de"), CFG,
     Effective(True, "user-box", "u-spam@ex.test", "fr")),
    (UserPrefs("u@ex.test", spam_action="user-box", spam_box="me+junk@ex.test"), D_ON, CFG,
     Effective(True, "user-box", "me+junk@ex.test", "")),
    (None, DomainPrefs("ex.test", True, "central-box"), CFG,
     Effective(True, "central-box", "junk@central.test", "")),
    (None, DomainPrefs("ex.test", True, "central-box"), SpamConfig(),  # no box: tag instead
     Effective(True, "tag", "", "")),
    (None, DomainPrefs("ex.test", True, "bogus"), SpamConfig(default_action="release"),
     Effective(True, "release", "", "")),
    (None, DomainPrefs("ex.test", True, ""), SpamConfig(default_action="delete"),
     Effective(True, "delete", "", "")),
    # the domain says users may not override: their on/off and action are ignored, their
    # language and box (for the domain's user-box action) still count
    (UserPrefs("u@ex.test", spam_enabled=False, spam_action="release", language="fr"),
     DomainPrefs("ex.test", True, "delete", users_may_override=False), CFG,
     Effective(True, "delete", "", "fr")),
    (UserPrefs("u@ex.test", spam_enabled=True, spam_action="tag"),
     DomainPrefs("ex.test", False, "delete", users_may_override=False), CFG,
     Effective(False, "delete", "", "")),
    (UserPrefs("u@ex.test", spam_action="tag", spam_box="me+junk@ex.test"),
     DomainPrefs("ex.test", True, "user-box", users_may_override=False), CFG,
     Effective(True, "user-box", "me+junk@ex.test", "")),
    (UserPrefs("u@ex.test", spam_enabled=False, spam_action="release"),  # allowed: theirs
     DomainPrefs("ex.test", True, "delete", users_may_override=True), CFG,
     Effective(False, "release", "", "")),
])
def test_effective(user: UserPrefs | None, domain: DomainPrefs | None, cfg: SpamConfig,
                   want: Effective) -> None:
    assert effective("u@ex.test", user, domain, cfg) == want


SPAM = SpamResult(True, 12.5, 5.0, ("GTUBE", "X"))
HAM = SpamResult(False, 0.1, 5.0, ())
HAM_HEADERS = ("X-Spam-Flag: NO", "X-Spam-Score: 0.1",
               "X-Spam-Status: No, score=0.1 required=5.0 tests=none")
SPAM_HEADERS = ("X-Spam-Flag: YES", "X-Spam-Score: 12.5",
                "X-Spam-Status: Yes, score=12.5 required=5.0 tests=GTUBE,X")


def eff(action: str, box: str = "") -> Effective:
    return Effective(True, action, box, "")


@pytest.mark.parametrize(("scan", "result", "e", "want"), [
    (Scan.OFF, None, eff("tag"), Disposition()),
    (Scan.TOO_LARGE, None, eff("tag"), Disposition(("X-Spam-Status: unscanned (size)",), True)),
    (Scan.ERROR, None, eff("delete"), Disposition(("X-Spam-Status: unscanned",), True)),
    (Scan.HAM, HAM, eff("delete"), Disposition(HAM_HEADERS, True)),
    (Scan.HAM, HAM, eff("user-box", "b@x"), Disposition(HAM_HEADERS, True)),
    (Scan.SPAM, SPAM, eff("tag"), Disposition(SPAM_HEADERS, True, "[SPAM]")),
    (Scan.SPAM, SPAM, eff("release"), Disposition(SPAM_HEADERS, True)),
    (Scan.SPAM, SPAM, eff("user-box", "u-spam@x"), Disposition(SPAM_HEADERS, True, "", "u-spam@x")),
    (Scan.SPAM, SPAM, eff("central-box", "c@x"), Disposition(SPAM_HEADERS, True, "", "c@x")),
    (Scan.SPAM, SPAM, eff("delete"), Disposition(drop=True)),
])
def test_treat(scan: Scan, result: SpamResult | None, e: Effective, want: Disposition) -> None:
    assert treat(scan, result, e, SpamConfig()) == want


def test_groups_keep_order_share_boxes_and_leave_out_drops() -> None:
    box = Disposition(SPAM_HEADERS, True, redirect_to="c@x")
    tr = {"a": Disposition(), "b": box, "c": Disposition(drop=True), "d": Disposition(), "e": box}
    groups = group(["a", "b", "c", "d", "e"], tr)
    assert [(g.originals, g.envelope) for g in groups] == [
        (("a", "d"), ("a", "d")), (("b", "e"), ("c@x",))]


MSG = (b"Received: x\nX-Spam-Flag: YES\nSubject:  hello\n  folded\n"
       b"x-spam-status: forged\n\tcontinued\nTo: u\n\nX-Spam-Flag: body\n")


def test_edit_strips_prepends_and_prefixes() -> None:
    out = edit(MSG, drop=lambda n: n.startswith("x-spam-"), prepend=["X-A: 1", "X-B: 2\n\t3"],
               subject_prefix="[SPAM]")
    assert out == (b"X-A: 1\nX-B: 2\n\t3\nReceived: x\nSubject: [SPAM] hello\n  folded\n"
                   b"To: u\n\nX-Spam-Flag: body\n")
    assert edit(out, subject_prefix="[SPAM]") == out  # not twice
    crlf = edit(b"To: u\r\n\r\nbody\r\n", prepend=["X-A: 1"], subject_prefix="[S]")
    assert crlf == b"X-A: 1\r\nTo: u\r\nSubject: [S]\r\n\r\nbody\r\n"
    assert edit(b"Subject:\n\nb\n", subject_prefix="[S]") == b"Subject: [S] \n\nb\n"


def test_header_values_cannot_inject() -> None:
    assert header_line("X-A", "v\r\nBcc: evil\0") == "X-A: v??Bcc: evil?"
    long = header_line("X-Spam-Status", "Yes, tests=" + ",".join(["RULE_NAME_X"] * 20))
    assert all(len(line) <= 78 for line in long.split("\n"))
    assert all(line.startswith("\t") for line in long.split("\n")[1:])
    report = multiline_header("X-Spam-Report", ["a", "", "  ", "b\x1b[0m", "\u00e9"])
    assert report == "X-Spam-Report:\n\ta\n\tb?[0m\n\t?"


@pytest.mark.parametrize(("raw", "want"), [
    (b"stream: OK\0", Clean()),
    (b"stream: Eicar-Test-Signature FOUND\0", Infected("Eicar-Test-Signature")),
    (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", Infected("Win.Test.EICAR_HDB-1")),
])
def test_clamd_replies(raw: bytes, want: object) -> None:
    assert parse_reply(raw) == want


@pytest.mark.parametrize("raw", [b"INSTREAM size limit exceeded. ERROR\0", b"", b"OK\0",
                                 b"stream: FOUND\0", b"stream: ok\0"])
def test_clamd_bad_replies(raw: bytes) -> None:
    with pytest.raises(TemporaryError):
        parse_reply(raw)


def test_spamd_response() -> None:
    raw = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: False ; -1.5 / 5.0\r\n\r\nA_B,C_D\r\n"
    assert parse_response(raw, report=False) == SpamResult(False, -1.5, 5.0, ("A_B", "C_D"))
    with pytest.raises(PermanentError):
        parse_response(b"SPAMD/1.0 65 EX_DATAERR\r\n", report=False)
    with pytest.raises(TemporaryError):
        parse_response(b"SPAMD/1.0 74 EX_IOERR\r\n", report=False)


@pytest.mark.parametrize(("toml", "key"), [
    ("[clamd]\nservers = ['unix:relative']", "clamd.servers"),
    ("[clamd]\nenabled = true\nservers = []", "clamd.servers"),
    ("[clamd]\non_error = 'open'", "clamd.on_error"),
    ("[clamd]\nscan_timeout_s = 0", "clamd.scan_timeout_s"),
    ("[spamd]\nservers = ['host:notaport']", "spamd.servers"),
    ("[spam]\ndefault_action = 'central-box'", "spam.central_box"),
    ("[spam]\ndefault_action = 'quarantine'", "spam.default_action"),
    ("[spam]\nuser_box_extension = 'a b'", "spam.user_box_extension"),
    ("[scan]\ndeadline_s = -1", "scan.deadline_s"),
])
def test_config_refuses(tmp_path: object, toml: str, key: str) -> None:
    from pathlib import Path  # noqa: PLC0415

    path = Path(str(tmp_path)) / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == key


def test_config_defaults_and_values(tmp_path: object) -> None:
    from pathlib import Path  # noqa: PLC0415

    path = Path(str(tmp_path)) / "c.toml"
    path.write_text("[clamd]\nenabled = true\nservers = ['unix:/run/c.sock', '[::1]:3310']\n"
                    "[spamd]\nservers = ['127.0.0.1:783']\n[spam]\ndefault_action = 'release'\n")
    cfg = load(path)
    assert cfg.clamd.servers == ("unix:/run/c.sock", "[::1]:3310")
    assert cfg.clamd.on_error == "tempfail" and cfg.clamd.on_too_large == "pass"
    assert cfg.spamd.on_error == "tempfail" and cfg.spamd.max_size_bytes == 512_000
    assert cfg.spam.default_action == "release" and cfg.scan.deadline_s == 120.0
