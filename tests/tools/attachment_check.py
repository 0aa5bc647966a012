"""A QUEUE-stage check as a new engineer would add one (docs/DEVELOPING.md walks through
it): refuse messages that carry an executable attachment. The tests add it to the
registry (tests/tools/serve_with_attachment_check.py) and nothing else."""

from __future__ import annotations

import email
import email.policy

from mailguard.context import Session
from mailguard.policy import CheckPolicy
from mailguard.resources import Resources
from mailguard.verdict import CONTINUE, Reply, Stage, Verdict, reject

EXECUTABLE = (".exe", ".scr", ".pif", ".com", ".bat", ".cmd", ".js", ".vbs")
REFUSED = Reply(554, "executable attachments are not accepted here", "5.7.1")


class AttachmentCheck:
    name = "attachments"
    stages = frozenset({Stage.QUEUE})

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None
        msg = email.message_from_bytes(tx.data, policy=email.policy.default)
        for part in msg.walk():
            filename = (part.get_filename() or "").lower()
            if filename.endswith(EXECUTABLE):
                return reject(REFUSED, f"executable attachment {filename}")
        return CONTINUE


def build(res: Resources, policy: CheckPolicy) -> tuple[AttachmentCheck, CheckPolicy]:
    return AttachmentCheck(), policy
