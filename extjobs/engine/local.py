"""Programs run on the master itself: a node's fence command.

:func:`run_local_process` starts the program in a session of its own with exactly the
given environment, collects capped output, and kills the whole process group when the
timeout expires or the caller is cancelled — nothing keeps running behind the job's
back, as with remote steps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

import anyio
from anyio.abc import ByteReceiveStream

from extjobs.errors import CommandTimeoutError
from extjobs.model.remote import CommandResult

#: How long a killed process group gets to be reaped before we stop waiting for it.
REAP_TIMEOUT = 5.0


class _Capped:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    async def drain(self, stream: ByteReceiveStream) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            while True:
                chunk = await stream.receive()
                room = max(0, self.cap - len(self.data))
                self.data += chunk[:room]
                self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_local_process(
    argv: Sequence[str], env: Mapping[str, str], *, timeout: float, cap: int = 65536
) -> CommandResult:
    """Run ``argv`` on this machine; see the module docstring.

    Returns the result whatever the exit status; a program that cannot be started gives
    exit status 127 and the reason on stderr. Raises :class:`CommandTimeoutError` after
    ``timeout`` seconds (the process group is killed first). Cancellable: the process
    group is killed too.
    """
    started = time.monotonic()
    try:
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return CommandResult(
            exit_status=127,
            stderr=f"cannot run {argv[0]!r}: {exc.strerror or exc}",
            duration=time.monotonic() - started,
        )
    out, err = _Capped(cap), _Capped(cap)
    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None
                assert process.stderr is not None
                tg.start_soon(out.drain, process.stdout)
                tg.start_soon(err.drain, process.stderr)
            returncode = await process.wait()
    except TimeoutError:
        _kill_group(process.pid)
        with anyio.move_on_after(REAP_TIMEOUT, shield=True):
            await process.wait()
        raise CommandTimeoutError(
            f"{argv[0]} on the master took longer than {timeout:g}s and was killed",
            node="master",
            timeout=timeout,
        ) from None
    except BaseException:
        _kill_group(process.pid)
        with anyio.move_on_after(REAP_TIMEOUT, shield=True):
            await process.wait()
        raise
    finally:
        with anyio.move_on_after(REAP_TIMEOUT, shield=True):
            await process.aclose()
    signame = None
    if returncode < 0:
        with contextlib.suppress(ValueError):
            signame = signal.Signals(-returncode).name
    return CommandResult(
        exit_status=returncode if returncode >= 0 else None,
        stdout=out.text(),
        stderr=err.text(),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
        duration=time.monotonic() - started,
        signal=signame,
    )
