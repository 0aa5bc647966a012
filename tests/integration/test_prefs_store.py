"""PrefsStore (mail_domain, mail_user, userpref) on a real SQLite file and the real
PostgreSQL, and the `mailguard domain` / `mailguard spampref` commands on top of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailguard.store.prefs import PrefsStore
from mailguard.store.prefs_records import DomainPrefs, PrefRow, UserPrefs
from mailguard.store.repo import Store

NOW = 1_800_000_000.0


@pytest.fixture
def prefs(store: Store) -> PrefsStore:
    return PrefsStore(store.db)


async def test_domains_and_users(prefs: PrefsStore) -> None:
    assert await prefs.domain("ex.test") is None
    got = await prefs.set_domain("Ex.Test", NOW, spam_enabled=True)
    assert got == DomainPrefs("ex.test", True, "", "", "")
    got = await prefs.set_domain("ex.test", NOW, spam_action="domain-box", spam_box="q@ex.test")
    assert got == DomainPrefs("ex.test", True, "domain-box", "q@ex.test", "")
    await prefs.set_domain("b.test", NOW, spam_enabled=False, language="de")
    assert [d.domain for d in await prefs.domains()] == ["b.test", "ex.test"]
    user = await prefs.set_user("Joe@Ex.Test", NOW, spam_action="user-box")
    assert user == UserPrefs("joe@ex.test", None, "user-box", None, None)
    user = await prefs.set_user("joe@ex.test", NOW, spam_enabled=False, language="fr")
    assert user == UserPrefs("joe@ex.test", False, "user-box", None, "fr")
    users, domains = await prefs.lookup(["JOE@ex.test", "new@ex.test", "x@b.test", "y@c.test"])
    assert set(users) == {"joe@ex.test"}
    assert set(domains) == {"ex.test", "b.test"}


async def test_userpref_rows(prefs: PrefsStore) -> None:
    await prefs.set_pref("Joe@Ex.Test", "required_score", "3")
    await prefs.set_pref("joe@ex.test", "required_score", "8")  # replaces
    await prefs.set_pref("@~ex.test", "whitelist_from", "*@a.test", add=True)
    await prefs.set_pref("@~ex.test", "whitelist_from", "*@b.test", add=True)
    await prefs.set_pref("@GLOBAL", "required_score", "6")
    rows = [(r.username, r.preference, r.value) for r in await prefs.prefs()]
    assert rows == [("@GLOBAL", "required_score", "6"),
                    ("@~ex.test", "whitelist_from", "*@a.test"),
                    ("@~ex.test", "whitelist_from", "*@b.test"),
                    ("joe@ex.test", "required_score", "8")]
    assert await prefs.unset_pref("@~ex.test", "whitelist_from", "*@a.test") == 1
    assert await prefs.unset_pref("@~ex.test", "whitelist_from", "*@zzz") == 0
    [row] = await prefs.prefs("@~ex.test")
    assert isinstance(row, PrefRow) and row.value == "*@b.test"


def cli(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILGUARD_CONFIG": "/dev/null"}
    return subprocess.run([sys.executable, "-m", "mailguard.cli.main", *args, "--store", store],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_commands(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/m.db"
    assert cli("db", "upgrade", store=store).returncode == 0
    res = cli("domain", "spam", "on", "Ex.Test", "--action", "central-box", store=store)
    assert res.stdout == "ex.test: spam filtering on, action central-box, " \
        "box (not configured: tagging instead)\n"
    assert cli("domain", "spam", "status", "nope.test", store=store).stdout == \
        "nope.test: spam filtering off\n"
    assert cli("domain", "spam", "on", "bad domain", store=store).returncode == 2
    assert cli("domain", "spam", "on", "a.test", "--action", "x", store=store).returncode == 2
    res = cli("spampref", "set", "joe@ex.test", "required_score", "8", store=store)
    assert res.returncode == 0 and res.stdout == "joe@ex.test\trequired_score\t8\n"
    assert cli("spampref", "set", "joe", "required_score", "8", store=store).returncode == 2
    assert cli("spampref", "set", "@GLOBAL", "x y", "8", store=store).returncode == 2
    res = cli("spampref", "unset", "joe@ex.test", "required_score", store=store)
    assert res.returncode == 0 and res.stdout == "1 row(s) removed\n"
    assert cli("spampref", "unset", "joe@ex.test", "required_score", store=store).returncode == 1
    assert cli("domain", "list", store=store).stdout == \
        "ex.test: spam filtering on, action central-box, box (not configured: tagging instead)\n"
