"""`mailguard` with one more line in the registry: the attachment check (tests only)."""

from __future__ import annotations

import sys

from mailguard import registry
from mailguard.cli.main import main
from mailguard.verdict import Stage

registry.CHECKS = (*registry.CHECKS, registry.CheckSpec(
    "attachments", frozenset({Stage.QUEUE}), "tests.tools.attachment_check:build",
    about="refuses executable attachments"))

if __name__ == "__main__":
    sys.exit(main())
