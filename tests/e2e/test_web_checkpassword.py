"""The web page's login through a qmail checkpassword program (as vpopmail's vchkpw is
used), the same backend SMTP AUTH uses: a good password logs in, a wrong one is 401,
a backend that fails temporarily gives 503 and never a session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.web_harness import Web, login

CHECKPW = Path(__file__).resolve().parents[1] / "tools" / "checkpassword_test.py"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = Web(tmp_path, users=(), extra_config=(
        f'[auth]\nbackend = "checkpassword"\ncheckpassword = ["{CHECKPW}", "/bin/true"]\n'))
    yield w
    w.stop()


def test_login_through_checkpassword(web: Web) -> None:
    with web.client() as c:
        assert login(c, "good", "nope").status_code == 401
        broken = login(c, "tempfail", "whatever")
        assert broken.status_code == 503 and "mg_session" not in broken.headers.get(
            "set-cookie", "")
        ok = login(c, "good", "secret")
        assert ok.status_code == 303 and "mg_session=" in ok.headers["set-cookie"]
        assert "Spam settings for good" in c.get("/").text
