"""The transaction summary line: each check once, the decisive check's detail, auth=."""

from __future__ import annotations

import pytest

from mailguard.store.records import MessageRecord
from mailguard.summary import checks_text, summary_line
from mailguard.verdict import Action, CheckResult, Outcome, Stage


def r(check: str, outcome: Outcome, detail: str = "", *, enforced: bool = True) -> CheckResult:
    action = Action.CONTINUE if outcome in (Outcome.PASS, Outcome.SKIP) else Action.REJECT
    return CheckResult(check, Stage.RCPT, outcome, action, enforced, detail)


PASS, FAIL, ERROR = Outcome.PASS, Outcome.FAIL, Outcome.ERROR


@pytest.mark.parametrize(
    ("results", "detailed", "compact"),
    [
        ([], "", ""),
        ([r("badmailfrom", PASS), r("relay", PASS, "local domain")],
         "badmailfrom=pass relay=pass", "badmailfrom=pass relay=pass"),
        # a listed client: the connect-time detail; relay once although run per RCPT
        ([r("dnsbl", FAIL, "listed bl.test 127.0.0.3"), r("relay", PASS), r("relay", PASS)],
         "dnsbl=fail(listed bl.test 127.0.0.3) relay=pass", "dnsbl=fail relay=pass"),
        # the worst outcome of the transaction wins, with the detail of its first result
        ([r("greylist", PASS, "exempt: relay client"), r("greylist", FAIL, "greylisted: a"),
          r("greylist", FAIL, "greylisted: b")],
         "greylist=fail(greylisted: a)", "greylist=fail"),
        ([r("greylist", FAIL, "greylisted"), r("greylist", ERROR, "store down")],
         "greylist=error(store down)", "greylist=error"),
        # log mode: the would-be refusal, marked
        ([r("spf", FAIL, "fail for example.org", enforced=False)],
         "spf=fail(shadow: fail for example.org)", "spf=fail"),
        # a pass that made the client wait shows the delay
        ([r("tarpit", PASS), r("tarpit", PASS, "delayed 5s after 10 recipients")],
         "tarpit=pass(delayed 5s after 10 recipients)", "tarpit=pass"),
        ([r("spf", PASS, "softfail for example.org")], "spf=pass", "spf=pass"),
        ([r("dnsbl", FAIL, "x" * 300)], f"dnsbl=fail({'x' * 200})", "dnsbl=fail"),
    ],
)
def test_checks_text(results: list[CheckResult], detailed: str, compact: str) -> None:
    assert checks_text(results) == detailed
    assert checks_text(results, detail=False) == compact


REC = MessageRecord(ts=0.0, session_id="s1", client_ip="127.0.0.11", helo="vm",
                    mail_from="a@example.org", rcpts=(), size=0, outcome="rejected",
                    reply_code=550, queue_id="", duration_ms=3, verdicts="spf=fail")


def test_summary_line_with_auth_and_detailed_checks() -> None:
    line = summary_line(REC, (), auth="alice@example.com",
                        checks="spf=fail(fail for example.org)")
    assert line == (
        'event=transaction session=s1 client=127.0.0.11 helo=vm auth=alice@example.com '
        'from=<a@example.org> rcpts="" refused="" size=0 result=rejected reply=550 '
        'queue_id="" checks="spf=fail(fail for example.org)" duration_ms=3')


def test_summary_line_without_auth_uses_the_record() -> None:
    line = summary_line(REC, ("b@example.com=553",))
    assert " auth=" not in line
    assert 'refused="b@example.com=553" ' in line and ' checks="spf=fail" ' in line
