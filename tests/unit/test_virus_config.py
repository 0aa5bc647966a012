"""`[virus]` in the strict configuration loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.config import load, to_toml
from mailguard.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mg.toml"
    p.write_text(text)
    return p


def test_defaults_and_a_full_section(tmp_path: Path) -> None:
    c = load(None)
    assert c.virus.notify_sender == "local" and c.virus.admin == ""
    assert c.virus.admin_address(c.server.hostname) == "postmaster@localhost"
    p = write(
        tmp_path,
        f"""[virus]
notify_recipients = false
notify_admin = true
admin = "av@example.com"
notify_sender = "always"
from_address = "av@example.com"
from_header = "Virus scanner <av@example.com>"
templates_dir = "{tmp_path}"
default_language = "de"
""",
    )
    c = load(p)
    assert (c.virus.notify_recipients, c.virus.notify_sender) == (False, "always")
    assert c.virus.templates_dir == str(tmp_path) and c.virus.default_language == "de"
    assert '[virus]\nnotify_recipients = false' in to_toml(c)


# (the [virus] line, the key named in the error)
BAD: list[tuple[str, str]] = [
    ('notify_sender = "sometimes"', "virus.notify_sender"),
    ("notify_admin = 1", "virus.notify_admin"),
    ('admin = "postmaster"', "virus.admin"),
    ('admin = "a b@example.com"', "virus.admin"),
    ('from_address = "<>"', "virus.from_address"),
    ('from_header = "x\\r\\nBcc: y@z"', "virus.from_header"),
    ('templates_dir = "/nonexistent/templates"', "virus.templates_dir"),
    ('default_language = "../etc"', "virus.default_language"),
    ('langauge = "en"', "virus.langauge"),
]


@pytest.mark.parametrize(("line", "key"), BAD)
def test_bad_values_are_refused(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, f"[virus]\n{line}\n"))
    assert info.value.key == key
