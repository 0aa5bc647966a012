"""SPF without DNS: the policy per result, the header lines, the configuration."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailguard.checks.spf import SpfOutcome, headers, verdict
from mailguard.config import build
from mailguard.errors import ConfigError
from mailguard.settings.spf import SpfConfig
from mailguard.verdict import Action

TAG = SpfConfig()
STRICT = SpfConfig(fail="reject", softfail="reject", neutral="tempfail", none="tag",
                   permerror="reject", temperror="tempfail")


def outcome(result: str, explanation: str = "why") -> SpfOutcome:
    return SpfOutcome(result, explanation, "example.org", "mailfrom")


@pytest.mark.parametrize(
    ("result", "cfg", "action", "reply"),
    [
        ("pass", STRICT, Action.CONTINUE, None),
        ("fail", TAG, Action.CONTINUE, None),
        ("softfail", TAG, Action.CONTINUE, None),
        ("neutral", TAG, Action.CONTINUE, None),
        ("none", TAG, Action.CONTINUE, None),
        ("permerror", TAG, Action.CONTINUE, None),
        ("temperror", TAG, Action.CONTINUE, None),
        ("fail", STRICT, Action.REJECT, "550 5.7.23 SPF validation failed: why"),
        ("softfail", STRICT, Action.REJECT, "550 5.7.23 SPF validation failed: why"),
        ("neutral", STRICT, Action.TEMPFAIL, "451 4.7.23 SPF temporary error: why"),
        ("none", STRICT, Action.CONTINUE, None),
        ("permerror", STRICT, Action.REJECT, "550 5.7.24 SPF validation error: why"),
        ("temperror", STRICT, Action.TEMPFAIL, "451 4.7.24 SPF temporary error: why"),
    ],
)
def test_verdict_per_result(result: str, cfg: SpfConfig, action: Action,
                            reply: str | None) -> None:
    v = verdict(outcome(result), cfg)
    assert v.action is action
    assert (str(v.reply) if v.reply else None) == reply
    assert v.reason == f"{result} for example.org"


def test_explanation_is_cleaned_for_the_reply() -> None:
    reject = replace(TAG, fail="reject")
    v = verdict(outcome("fail", "see (http://x.example/why)\r\n\tnow\x00"), reject)
    assert str(v.reply) == "550 5.7.23 SPF validation failed: see http://x.example/why now"
    v = verdict(outcome("fail", ""), reject)
    assert str(v.reply) == "550 5.7.23 SPF validation failed: fail"


@pytest.mark.parametrize(
    ("o", "sender", "expected"),
    [
        (SpfOutcome("pass", "ok", "pass.example", "mailfrom"), "a@pass.example", [
            "Received-SPF: pass (mx.test: domain of pass.example designates 192.0.2.1 as "
            'permitted sender) client-ip=192.0.2.1; envelope-from="a@pass.example"; '
            "helo=client.example; identity=mailfrom;",
            "Authentication-Results: mx.test; spf=pass smtp.mailfrom=pass.example",
        ]),
        (SpfOutcome("fail", "no", "fail.example", "mailfrom"), 'we"ird@fail.example', [
            "Received-SPF: fail (mx.test: domain of fail.example does not designate "
            '192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="we\\"ird'
            '@fail.example"; helo=client.example; identity=mailfrom;',
            "Authentication-Results: mx.test; spf=fail smtp.mailfrom=fail.example",
        ]),
        (SpfOutcome("none", "", "client.example", "helo"), "", [
            "Received-SPF: none (mx.test: domain of client.example does not designate "
            'permitted sender hosts) client-ip=192.0.2.1; envelope-from=""; '
            "helo=client.example; identity=helo;",
            "Authentication-Results: mx.test; spf=none smtp.helo=client.example",
        ]),
        (SpfOutcome("temperror", "DNS (timeout)", "t.example", "mailfrom"), "a@t.example", [
            "Received-SPF: temperror (mx.test: temporary error in processing during lookup "
            "of t.example: DNS timeout) client-ip=192.0.2.1; envelope-from=\"a@t.example\"; "
            "helo=client.example; identity=mailfrom;",
            "Authentication-Results: mx.test; spf=temperror smtp.mailfrom=t.example",
        ]),
    ],
)
def test_headers(o: SpfOutcome, sender: str, expected: list[str]) -> None:
    assert headers(o, hostname="mx.test", ip="192.0.2.1", sender=sender,
                   helo="client.example") == expected


def test_config() -> None:
    cfg = build(SpfConfig, {"fail": "reject", "temperror": "tempfail"}, "t.toml", "spf")
    assert (cfg.fail, cfg.softfail, cfg.temperror) == ("reject", "tag", "tempfail")
    assert cfg.action("pass") == "tag" and cfg.action("fail") == "reject"
    for data, key in (({"fail": "drop"}, "spf.fail"), ({"query_time_s": 0}, "spf.query_time_s"),
                      ({"pass": "reject"}, "spf.pass")):
        with pytest.raises(ConfigError) as info:
            build(SpfConfig, data, "t.toml", "spf")
        assert info.value.key == key
