"""qmail control files (control.c reading rules), rcpthosts/badmailfrom matching, and cdb.

rcpthosts is checked the way the daemon applies it: config.load() with the control dir
merges rcpthosts and morercpthosts.cdb into `server.local_domains`, and LocalDomains (what
the relay check asks) matches a domain against them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.config import load
from mailguard.domains import LocalDomains
from mailguard.errors import ConfigError
from mailguard.qmail.cdb import CdbError, CdbReader, build_cdb, cdb_hash, write_cdb
from mailguard.qmail.control import ControlFiles, badmailfrom_match, read_control


def control_dir(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    d = tmp_path / "control"
    d.mkdir()
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (d / name).write_bytes(data)
    return d


def local_domains(d: Path) -> LocalDomains:
    """The daemon's rcpthosts rule for control dir `d` (as Resources.is_local_domain)."""
    config = load(None, {"server": {"qmail_control_dir": str(d)}})
    return LocalDomains.parse(config.server.local_domains)


# --- reading ------------------------------------------------------------------------------


def test_empty_directory_gives_qmail_defaults(tmp_path: Path) -> None:
    ctl = read_control(control_dir(tmp_path, {}))
    assert ctl == ControlFiles()
    assert (ctl.databytes, ctl.timeoutsmtpd, ctl.tarpitcount, ctl.tarpitdelay) == (0, 1200, 0, 5)
    assert ctl.rcpthosts is None  # missing: qmail-smtpd accepts every domain
    assert ctl.me is None and ctl.smtpgreeting is None and ctl.morercpthosts_cdb is None


def test_me_is_the_default_for_greeting_localiphost_and_inject_domains(tmp_path: Path) -> None:
    ctl = read_control(control_dir(tmp_path, {"me": "mx.example.com\n"}))
    assert ctl.me == "mx.example.com"
    assert ctl.smtpgreeting == ctl.localiphost == "mx.example.com"
    assert ctl.defaultdomain == ctl.plusdomain == "mx.example.com"
    assert ctl.greeting_host == "mx.example.com"


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("mx.example.com", "mx.example.com"),  # no newline
        ("mx.example.com \t\n", "mx.example.com"),  # trailing blanks stripped
        ("mx.example.com\nsecond line\n", "mx.example.com"),  # first line only
        ("  mx.example.com\n", "  mx.example.com"),  # leading blanks kept
        ("mx.example.com\r\n", "mx.example.com\r"),  # control.c strips " \t\n", not "\r"
        ("", ""),  # an empty file is "", not missing: no fallback to me
        ("\nlater\n", ""),
    ],
)
def test_readline_rules(tmp_path: Path, content: str, value: str) -> None:
    ctl = read_control(control_dir(tmp_path, {"me": "me.example", "smtpgreeting": content}))
    assert ctl.smtpgreeting == value


def test_explicit_files_override_me(tmp_path: Path) -> None:
    d = control_dir(
        tmp_path,
        {
            "me": "me.example",
            "smtpgreeting": "greet.example ESMTP welcome\n",
            "localiphost": "lip.example\n",
            "defaultdomain": "dd.example\n",
            "plusdomain": "pd.example\n",
        },
    )
    ctl = read_control(d)
    assert ctl.smtpgreeting == "greet.example ESMTP welcome"
    assert ctl.greeting_host == "greet.example"
    assert (ctl.localiphost, ctl.defaultdomain, ctl.plusdomain) == (
        "lip.example",
        "dd.example",
        "pd.example",
    )


def test_readfile_rules(tmp_path: Path) -> None:
    content = (
        "example.com\n"
        "\n"  # blank line skipped
        "# a comment\n"  # control_readfile skips lines starting with #
        ".Example.NET  \t\n"  # trailing blanks stripped, case kept
        "   \n"  # only blanks: empty after stripping, skipped
        "  indented.example\n"  # leading blanks kept (qmail does not strip them)
        "x.example # not a comment\n"  # only a leading # makes a comment
        "last.example"  # no final newline
    )
    ctl = read_control(control_dir(tmp_path, {"rcpthosts": content, "badmailfrom": content}))
    expected = (
        "example.com",
        ".Example.NET",
        "  indented.example",
        "x.example # not a comment",
        "last.example",
    )
    assert ctl.rcpthosts == expected
    assert ctl.badmailfrom == expected


def test_empty_rcpthosts_is_not_missing(tmp_path: Path) -> None:
    ctl = read_control(control_dir(tmp_path, {"rcpthosts": "# nothing\n"}))
    assert ctl.rcpthosts == ()
    assert "example.com" not in local_domains(tmp_path / "control")


@pytest.mark.parametrize(
    ("name", "content", "value"),
    [
        ("databytes", "10485760\n", 10485760),
        ("databytes", "0", 0),
        ("timeoutsmtpd", "300 \n", 300),
        ("tarpitcount", "50\n", 50),
        ("tarpitdelay", "2\n", 2),
    ],
)
def test_numbers(tmp_path: Path, name: str, content: str, value: int) -> None:
    ctl = read_control(control_dir(tmp_path, {name: content}))
    assert getattr(ctl, name) == value


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("databytes", "10M\n"),  # qmail's scan_ulong would silently take 10
        ("databytes", "-1\n"),
        ("timeoutsmtpd", "abc\n"),  # qmail would silently use the default
        ("tarpitdelay", "\n"),
        ("tarpitcount", "1 2\n"),
        ("databytes", "١٢\n"),  # non-ASCII digits
    ],
)
def test_malformed_numbers_are_config_errors(tmp_path: Path, name: str, content: str) -> None:
    d = control_dir(tmp_path, {name: content})
    with pytest.raises(ConfigError) as err:
        read_control(d)
    assert err.value.source == str(d)
    assert err.value.key == name
    assert "number" in err.value.reason


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        read_control(tmp_path / "nope")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_control(control_dir(tmp_path, {"badmailfrom": b"\xff@x\n"}))
    assert err.value.key == "badmailfrom"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    # control.c: any error but ENOENT is fatal. A directory in place of the file is one that
    # even root gets (EISDIR).
    d = control_dir(tmp_path, {})
    (d / "rcpthosts").mkdir()
    with pytest.raises(ConfigError, match="unreadable") as err:
        read_control(d)
    assert err.value.key == "rcpthosts"


def test_morercpthosts_text_and_cdb(tmp_path: Path) -> None:
    d = control_dir(tmp_path, {"rcpthosts": "a.example\n", "morercpthosts": "b.example\n"})
    write_cdb(d / "morercpthosts.cdb", [(b"b.example", b""), (b".c.example", b"")])
    ctl = read_control(d)
    assert ctl.morercpthosts == ("b.example",)
    assert ctl.morercpthosts_cdb is not None
    assert set(ctl.morercpthosts_cdb) == {b"b.example", b".c.example"}
    domains = local_domains(d)
    assert "B.Example" in domains
    assert "mx.c.example" in domains
    assert "c.example" not in domains
    assert "a.example" in domains


def test_corrupt_cdb_is_a_config_error(tmp_path: Path) -> None:
    d = control_dir(tmp_path, {"morercpthosts.cdb": b"short"})
    with pytest.raises(ConfigError) as err:
        read_control(d)
    assert err.value.key == "morercpthosts.cdb"


# --- rcpthosts / badmailfrom --------------------------------------------------------------

HOSTS = "example.com\n.example.net\nMixed.Example\n"


@pytest.mark.parametrize(
    ("domain", "accepted"),
    [
        ("example.com", True),
        ("EXAMPLE.COM", True),  # case-insensitive
        ("mail.example.com", False),  # an entry without "." matches only itself
        ("example.net", False),  # ".example.net" matches subdomains, not the domain itself
        ("mail.example.net", True),
        ("a.b.c.example.net", True),  # any depth
        ("Mail.EXAMPLE.net", True),
        ("badexample.net", False),  # not a suffix at a dot
        ("mixed.example", True),  # entries are case-insensitive too
        ("example.org", False),
        ("", False),  # "user@": nothing to look up
    ],
)
def test_rcpthosts_match(tmp_path: Path, domain: str, accepted: bool) -> None:
    domains = local_domains(control_dir(tmp_path, {"rcpthosts": HOSTS}))
    assert (domain in domains) is accepted


def test_missing_rcpthosts_adds_no_domain(tmp_path: Path) -> None:
    # qmail-smtpd without rcpthosts accepts every domain (an open relay); mailguard only
    # gets no domain from the missing file (config.resolve), so nothing is local here.
    assert "anything.example" not in local_domains(control_dir(tmp_path, {"me": "mx\n"}))


def test_rcpthosts_cdb_is_consulted_with_the_same_suffixes(tmp_path: Path) -> None:
    d = control_dir(tmp_path, {"rcpthosts": ""})
    write_cdb(d / "morercpthosts.cdb", [(b"more.example", b""), (b".sub.example", b"")])
    domains = local_domains(d)
    assert "MORE.example" in domains  # looked up lower-cased
    assert "x.y.sub.example" in domains
    assert "sub.example" not in domains
    assert "other.example" not in domains


@pytest.mark.parametrize(
    ("addr", "listed"),
    [
        ("spammer@bad.example", True),
        ("SPAMMER@Bad.Example", True),
        ("other@bad.example", False),
        ("anyone@evil.example", True),  # "@evil.example" entry
        ("anyone@EVIL.example", True),
        ("anyone@sub.evil.example", False),  # @domain is exact, no subdomains
        ("a@b@evil.example", True),  # domain from the last "@"
        ("", False),  # null sender
        ("evil.example", False),
    ],
)
def test_badmailfrom_match(addr: str, listed: bool) -> None:
    entries = ["spammer@bad.example", "@Evil.Example"]
    assert badmailfrom_match(addr, entries) is listed


# --- cdb ----------------------------------------------------------------------------------


def test_cdb_hash_matches_djb() -> None:
    # h = 5381; h = ((h << 5) + h) ^ c, 32-bit.
    assert cdb_hash(b"") == 5381
    assert cdb_hash(b"a") == ((5381 << 5) + 5381) ^ ord("a")
    assert 0 <= cdb_hash(b"x" * 1000) < 2**32


def test_empty_cdb_is_the_bare_header() -> None:
    data = build_cdb([])
    assert len(data) == 2048
    db = CdbReader(data)
    assert list(db.items()) == []
    assert db.get(b"x") is None


def test_cdb_round_trip_with_duplicates_and_binary(tmp_path: Path) -> None:
    items = [(f"key{i}".encode(), f"value{i}".encode() * (i % 7)) for i in range(2000)]
    items += [(b"dup", b"first"), (b"dup", b"second"), (b"", b"empty key"), (b"\0\xff", b"\n")]
    path = tmp_path / "t.cdb"
    write_cdb(path, items)
    assert [p.name for p in tmp_path.iterdir()] == ["t.cdb"]  # no temporary left behind
    db = CdbReader.from_path(path)
    assert list(db.items()) == items
    assert db.get(b"key1234") == b"value1234" * (1234 % 7)
    assert db.get(b"key0") == b""
    assert list(db.get_all(b"dup")) == [b"first", b"second"]
    assert db.get(b"") == b"empty key"
    assert db.get(b"\0\xff") == b"\n"
    assert b"key1999" in db and b"key2000" not in db
    assert db.get(b"missing", b"default") == b"default"


def test_cdb_layout_is_cdbmake_compatible() -> None:
    # One record: header entry for its bucket has 2 slots; the record follows the header.
    data = build_cdb([(b"a", b"b")])
    h = cdb_hash(b"a")
    bucket = h & 255
    pos = int.from_bytes(data[8 * bucket : 8 * bucket + 4], "little")
    slots = int.from_bytes(data[8 * bucket + 4 : 8 * bucket + 8], "little")
    assert slots == 2
    assert data[2048:2058] == b"\x01\0\0\0\x01\0\0\0ab"
    slot = (h >> 8) % 2
    entry = data[pos + 8 * slot : pos + 8 * slot + 8]
    assert entry == h.to_bytes(4, "little") + (2048).to_bytes(4, "little")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0" * 100,
        (4000).to_bytes(4, "little") * 512,  # tables beyond the end of the file
    ],
)
def test_cdb_rejects_malformed_files(data: bytes) -> None:
    with pytest.raises(CdbError):
        CdbReader(data)


def test_cdb_truncated_record_is_reported() -> None:
    data = bytearray(build_cdb([(b"key", b"value")]))
    data[2048:2052] = (10_000).to_bytes(4, "little")  # key length beyond the tables
    db = CdbReader(bytes(data))
    with pytest.raises(CdbError):
        list(db.items())
