"""run_qmail_queue against real processes: the recording qmail-queue and a few misfits."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from mailguard.clock import FrozenClock
from mailguard.qmail.exitcodes import reply_for_exit
from mailguard.qmail.queue_program import QueueResult, run_qmail_queue

RECORDER = str(Path(__file__).resolve().parents[1] / "tools" / "recording_qmail_queue.py")
NOW = 1_795_711_998.0
MESSAGE = b"Subject: hi\r\n\r\n8-bit \xe9\xff, NUL \0 and a bare CR \r stay.\r\n"


def recorded(directory: Path) -> list[tuple[bytes, bytes]]:
    """(message, envelope) pairs the recorder wrote, oldest first."""
    envs = sorted(directory.glob("*.env"))
    return [(e.with_suffix(".msg").read_bytes(), e.read_bytes()) for e in envs]


async def run(
    program: list[str],
    env: Mapping[str, str],
    *,
    message: bytes = MESSAGE,
    sender: str = "a@b.example",
    rcpts: tuple[str, ...] = ("c@d.example",),
    timeout_s: float = 20.0,
    cwd: str | None = None,
    custom_fd: bool = True,
) -> QueueResult:
    return await run_qmail_queue(
        program,
        message,
        sender,
        rcpts,
        timeout_s=timeout_s,
        clock=FrozenClock(NOW),
        env=env,
        cwd=cwd,
        custom_fd=custom_fd,
    )


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    d = tmp_path / "queue"
    d.mkdir()
    return d


@pytest.fixture
def qq_env(record_dir: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "RECORD_DIR": str(record_dir)}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_message_and_envelope_arrive_exactly(
    record_dir: Path, qq_env: dict[str, str]
) -> None:
    result = await run(
        [RECORDER], qq_env, sender="", rcpts=("x@y.example", "jörg@z.example", "\udcff@w")
    )
    assert result.exit_code == 0 and result.queued and result.input_complete
    assert str(result.reply) == f"250 ok 1795711998 qp {result.pid}"
    assert result.pid > 0 and result.custom_text == b""
    assert recorded(record_dir) == [
        (MESSAGE, b"F\0Tx@y.example\0T" + "jörg".encode() + b"@z.example\0T\xff@w\0\0")
    ]


async def test_five_megabytes_do_not_deadlock(record_dir: Path, qq_env: dict[str, str]) -> None:
    big = os.urandom(5 * 1024 * 1024)
    result = await run([RECORDER], qq_env, message=big)
    assert result.queued
    assert recorded(record_dir) == [(big, b"Fa@b.example\0Tc@d.example\0\0")]


@pytest.mark.parametrize(
    "code", [11, 12, 31, 40, 51, 52, 53, 54, 55, 56, 61, 62, 66, 71, 72, 73, 74, 81, 91, 100, 111]
)
async def test_exit_codes_map_to_qmail_smtpd_replies(qq_env: dict[str, str], code: int) -> None:
    result = await run([RECORDER], {**qq_env, "FAKE_QQ_EXIT": str(code)})
    assert result.exit_code == code
    assert result.reply == reply_for_exit(code)
    assert not result.queued


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "Dvirus found: Eicar-Test-Signature (#5.7.1)",
            "554 virus found: Eicar-Test-Signature (#5.7.1)",
        ),
        ("Zscanner unavailable (#4.3.0)", "451 scanner unavailable (#4.3.0)"),
        ("", "451 qq temporary problem (#4.3.0)"),
    ],
)
async def test_exit_82_reads_its_reply_from_fd_6(
    qq_env: dict[str, str], text: str, line: str
) -> None:
    result = await run([RECORDER], {**qq_env, "FAKE_QQ_EXIT": "82", "FAKE_QQ_TEXT": text})
    assert result.exit_code == 82
    assert result.custom_text == text.encode()
    assert str(result.reply) == line


async def test_without_custom_fd_nothing_is_open_on_fd_6(qq_env: dict[str, str]) -> None:
    env = {**qq_env, "FAKE_QQ_EXIT": "82", "FAKE_QQ_TEXT": "Dignored"}
    result = await run([RECORDER], env, custom_fd=False)
    assert result.custom_text == b""
    assert str(result.reply) == "451 qq temporary problem (#4.3.0)"


async def test_recorder_checks_the_envelope_like_qmail_queue(
    record_dir: Path, qq_env: dict[str, str]
) -> None:
    result = await run([RECORDER], qq_env, rcpts=("x" * 1003 + "@y",))
    assert result.exit_code == 11
    assert str(result.reply) == "554 envelope address too long for qq (#5.1.3)"
    assert recorded(record_dir) == []


async def test_program_that_exits_without_reading(qq_env: dict[str, str]) -> None:
    result = await run(["/bin/false"], qq_env)
    assert result.exit_code == 1
    assert str(result.reply) == "451 qq temporary problem (#4.3.0)"


async def test_exit_0_without_reading_everything_is_a_read_error(qq_env: dict[str, str]) -> None:
    # qmail.c: exit 0 after a failed write is "qq read error", never a 250.
    result = await run(["/bin/true"], qq_env, message=b"x" * (5 * 1024 * 1024))
    assert (result.exit_code, result.input_complete) == (54, False)
    assert str(result.reply) == "451 qq read error (#4.3.0)"


@pytest.mark.parametrize("program", ["/nonexistent/qmail-queue", "no-such-program-anywhere"])
async def test_missing_program_cannot_be_executed(qq_env: dict[str, str], program: str) -> None:
    result = await run([program], qq_env)
    assert (result.exit_code, result.pid) == (120, 0)
    assert str(result.reply) == "451 unable to exec qq (#4.3.0)"


async def test_non_executable_program_cannot_be_executed(
    tmp_path: Path, qq_env: dict[str, str]
) -> None:
    script = tmp_path / "qq"
    script.write_text("#!/bin/sh\nexit 0\n")
    for program in (script, tmp_path):  # a plain file, a directory
        result = await run([str(program)], qq_env)
        assert str(result.reply) == "451 unable to exec qq (#4.3.0)"


async def test_hanging_program_is_killed_at_the_timeout(qq_env: dict[str, str]) -> None:
    start = time.monotonic()
    result = await run([RECORDER], {**qq_env, "FAKE_QQ_SLEEP": "60"}, timeout_s=0.5)
    assert time.monotonic() - start < 3
    assert (result.exit_code, result.timed_out) == (52, True)
    assert str(result.reply) == "451 qq timeout (#4.3.0)"
    assert gone(result.pid)


async def test_program_that_never_reads_a_big_message_times_out(qq_env: dict[str, str]) -> None:
    start = time.monotonic()
    result = await run(
        ["/bin/sleep", "60"], qq_env, message=b"x" * (5 * 1024 * 1024), timeout_s=0.5
    )
    assert time.monotonic() - start < 3
    assert result.timed_out and gone(result.pid)


@pytest.mark.parametrize(("signal", "code"), [("SEGV", -11), ("KILL", -9), ("TERM", -15)])
async def test_program_killed_by_a_signal_crashed(
    qq_env: dict[str, str], signal: str, code: int
) -> None:
    result = await run(["/bin/sh", "-c", f"kill -{signal} $$"], qq_env)
    assert result.exit_code == code
    assert str(result.reply) == "451 qq crashed (#4.3.0)"


async def test_children_left_holding_the_pipes_do_not_hold_us(qq_env: dict[str, str]) -> None:
    start = time.monotonic()
    result = await run(["/bin/sh", "-c", "sleep 3 & echo Dtoo late >&6; exit 82"], qq_env)
    assert time.monotonic() - start < 2
    assert result.exit_code == 82
    assert str(result.reply) == "554 too late"


async def test_cwd_is_where_the_program_runs(tmp_path: Path, qq_env: dict[str, str]) -> None:
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    script = home / "bin" / "qq"
    script.write_text('#!/bin/sh\npwd > "$RECORD_DIR/cwd"\ncat >/dev/null\ncat <&1 >/dev/null\n')
    script.chmod(0o755)
    result = await run(["bin/qq"], qq_env, cwd=str(home))  # relative to cwd, like qmail.c
    assert result.queued
    assert (Path(qq_env["RECORD_DIR"]) / "cwd").read_text() == f"{home}\n"


async def test_missing_cwd_is_trouble_in_home_directory(
    tmp_path: Path, qq_env: dict[str, str]
) -> None:
    result = await run([RECORDER], qq_env, cwd=str(tmp_path / "nope"))
    assert result.exit_code == 61
    assert str(result.reply) == "451 qq trouble in home directory (#4.3.0)"


async def test_cancelling_kills_and_reaps_the_program(
    tmp_path: Path, qq_env: dict[str, str]
) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    program = ["/bin/sh", "-c", f"echo $$ > {fifo}; exec sleep 60"]
    task = asyncio.create_task(run(program, qq_env))
    pid = int(await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 10))  # it is running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pid)  # killed, and reaped: no zombie left for kill(pid, 0) to find


async def test_no_descriptors_leak(qq_env: dict[str, str]) -> None:
    before = set(os.listdir("/proc/self/fd"))
    for env in ({**qq_env, "FAKE_QQ_EXIT": "82", "FAKE_QQ_TEXT": "Dx y z"}, qq_env):
        await run([RECORDER], env)
    await run(["/nonexistent"], qq_env)
    await run([RECORDER], {**qq_env, "FAKE_QQ_SLEEP": "60"}, timeout_s=0.2)
    assert set(os.listdir("/proc/self/fd")) == before


async def test_concurrent_runs_do_not_mix(record_dir: Path, qq_env: dict[str, str]) -> None:
    senders = [f"s{i}@example.com" for i in range(12)]
    results = await asyncio.gather(
        *(run([RECORDER], qq_env, sender=s, message=s.encode() * 10000) for s in senders)
    )
    assert all(r.queued for r in results)
    assert len({r.pid for r in results}) == len(senders)
    got = sorted(recorded(record_dir))
    assert got == sorted((s.encode() * 10000, f"F{s}\0Tc@d.example\0\0".encode()) for s in senders)


async def test_without_pidfd_the_exit_is_polled(
    monkeypatch: pytest.MonkeyPatch, record_dir: Path, qq_env: dict[str, str]
) -> None:
    monkeypatch.delattr(os, "pidfd_open")  # non-Linux, or Linux before 5.3
    assert (await run([RECORDER], qq_env)).queued
    slow = await run([RECORDER], {**qq_env, "FAKE_QQ_SLEEP": "60"}, timeout_s=0.3)
    assert slow.timed_out and gone(slow.pid)
    assert len(recorded(record_dir)) == 2
