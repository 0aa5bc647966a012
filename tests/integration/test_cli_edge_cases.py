"""Admin commands at the edges of the schema: what PostgreSQL would refuse (userpref's
varchar(100) username) is a usage error on every backend, before the store is touched."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.daemon_harness import run_cli


def test_spampref_name_longer_than_the_column_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    assert run_cli("db", "upgrade", "--store", url).returncode == 0
    name = "u" * 89 + "@example.com"  # 101 characters
    done = run_cli("spampref", "set", name, "required_score", "5", "--store", url)
    assert done.returncode == 2
    assert done.stderr == "mailguard: NAME must be at most 100 characters\n"
    fits = run_cli("spampref", "set", name[1:], "required_score", "5", "--store", url)
    assert fits.returncode == 0, fits.stderr
