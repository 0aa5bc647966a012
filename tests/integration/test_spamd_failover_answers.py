"""spamd failover on a bad *answer*, not only on a refused connection: a server that
answers with a temporary sysexits code (its SQL preferences down, overloaded) or with a
truncated answer is skipped for the next server, as clamd's ERROR replies are; a
permanent code (the request itself is wrong) is not retried elsewhere."""

from __future__ import annotations

import pytest

from mailguard.errors import PermanentError
from mailguard.scanners.spamd import SpamdClient
from tests.scanner_helpers import fake_server, gtube, message


@pytest.mark.parametrize("reply", [
    b"SPAMD/1.0 75 EX_TEMPFAIL\r\n",
    b"SPAMD/1.0 74 EX_IOERR\r\n",
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: True ; 9 / 5\r\n\r\nAB",
])
async def test_a_failing_answer_moves_on_to_the_next_server(
        spamd_addr: tuple[str, int], reply: bytes) -> None:
    async with fake_server(reply) as broken:
        client = SpamdClient([broken.address, f"{spamd_addr[0]}:{spamd_addr[1]}"], timeout_s=20)
        assert (await client.check(message(gtube()), "u@example.com")).spam
        assert broken.connections == 1


async def test_a_permanent_answer_is_not_retried(spamd_addr: tuple[str, int]) -> None:
    async with fake_server(b"SPAMD/1.0 76 Bad header line: x\r\n") as broken:
        client = SpamdClient([broken.address, f"{spamd_addr[0]}:{spamd_addr[1]}"], timeout_s=20)
        with pytest.raises(PermanentError):
            await client.check(message(gtube()), "u@example.com")
