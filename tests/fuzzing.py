"""Shared hypothesis settings for the fuzz tests: few examples in CI, more on demand.

MAILGUARD_FUZZ_EXAMPLES=5000 pytest tests/unit/test_fuzz_parsers.py tests/e2e/test_fuzz_smtp.py
runs a longer campaign. No example database is written (the tree is shared): a failure
prints its minimal example, which belongs in a regular test."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def examples(ci_default: int) -> int:
    """`ci_default`, or MAILGUARD_FUZZ_EXAMPLES when set."""
    return int(os.environ.get("MAILGUARD_FUZZ_EXAMPLES", "") or ci_default)


def timeout_s(ci_default: int, per_example_s: float) -> float:
    """pytest-timeout for a fuzz test: the default 120 s in CI, more for a campaign."""
    return max(120.0, examples(ci_default) * per_example_s)


def fuzz_settings(ci_default: int) -> settings:
    return settings(
        max_examples=examples(ci_default),
        deadline=None,  # a shared 2-core machine: timing is not what is under test
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=not os.environ.get("MAILGUARD_FUZZ_EXAMPLES"),  # CI: reproducible
    )
