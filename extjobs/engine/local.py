"""Programs run on the master itself: a node's fence command.

:func:`run_local_process` starts the program in a session of its own with exactly the
given environment, collects capped output, and kills it when the timeout expires or the
caller is cancelled — its session, its process group and their descendants, ``setsid``
children included, as on the nodes (:mod:`extjobs.nodes.killtree`): nothing keeps
running behind the job's back.

After a crash, :func:`kill_local_leftover` finds such a program the dead daemon left
running and kills it the same way. The journal holds the step's command and when it
started; a leftover is a process of this machine that

* leads a session of its own (every run here starts one),
* is not a child of this daemon,
* runs the journalled program with the journalled arguments (a script started through
  its ``#!`` line shows its interpreter first, which is allowed),
* has exactly the journalled environment (``/proc/PID/environ``, as exec gave it), and
* started no earlier than the journal entry (2 s of slack for the clock's rounding).

A program that replaced itself with another one (``exec``) no longer matches and is left
alone, as is anything on another machine (a takeover by a master elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import attrs

from extjobs.errors import CommandTimeoutError
from extjobs.model.remote import CommandResult
from extjobs.nodes.pipes import read_chunks, spawn, wait_exit

#: How long a killed process group gets to be reaped before we stop waiting for it.
REAP_TIMEOUT = 5.0
#: How much earlier than its journal entry a leftover may seem to have started: the boot
#: time in /proc/stat is whole seconds.
_START_SLACK = 2.0


class _Capped:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    async def drain(self, fd: int) -> None:
        """Read the pipe ``fd`` to its end."""
        async for chunk in read_chunks(fd):
            room = max(0, self.cap - len(self.data))
            self.data += chunk[:room]
            self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


# -- processes of this machine, from /proc ------------------------------------------------


@attrs.frozen
class _Proc:
    pid: int
    ppid: int
    pgrp: int
    session: int
    #: Clock ticks after boot.
    start_ticks: int


def _read_proc(pid: int) -> _Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the name, which is in parentheses and may contain anything.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return _Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _processes() -> list[_Proc]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := _read_proc(int(entry))) is not None:
            found.append(proc)
    return found


def _tree(session: int) -> set[int]:
    """The processes of ``session`` (or of the process group of that id) and all their
    descendants."""
    procs = _processes()
    hit = {p.pid for p in procs if session in (p.session, p.pgrp) and p.pid > 1}
    grew = True
    while grew:
        more = {p.pid for p in procs if p.pid not in hit and p.ppid in hit and p.pid > 1}
        hit |= more
        grew = bool(more)
    return hit


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree(session: int) -> set[int]:
    """SIGKILL session ``session`` of this machine with every descendant, stopping them
    all first until no new one appears (at most 20 rounds); the pids killed. Blocking
    (reads ``/proc``), quick."""
    if session <= 1:
        raise ValueError(f"refusing to kill session {session}")
    found: set[int] = set()
    for _ in range(20):
        new = _tree(session) - found
        if not new:
            break
        _signal(new, signal.SIGSTOP)
        found |= new
    _signal(found, signal.SIGKILL)
    return found


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


def _environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = [os.fsdecode(part).partition("=") for part in raw.split(b"\0")[:-1]]
    return {name: value for name, _, value in pairs}


def _runs(cmdline: list[str], argv: Sequence[str]) -> bool:
    """Whether ``cmdline`` is ``argv`` run directly, or through a ``#!`` interpreter (the
    kernel puts the interpreter first and the program's path, perhaps found along
    ``PATH``, in place of ``argv[0]``)."""
    if not argv or len(cmdline) < len(argv):
        return False
    program = cmdline[len(cmdline) - len(argv)]
    return cmdline[len(cmdline) - len(argv) + 1 :] == list(argv[1:]) and (
        program == argv[0] or program.endswith("/" + argv[0])
    )


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def find_local_leftovers(
    argv: Sequence[str], env: Mapping[str, str], *, started: float
) -> list[int]:
    """The session leaders on this machine that are a run of ``argv`` with ``env`` that
    the journal saw start at ``started`` (see the module docstring). Blocking."""
    me = os.getpid()
    boot, ticks = _boot_time(), os.sysconf("SC_CLK_TCK")
    found = []
    for proc in _processes():
        if proc.pid != proc.session or proc.pid <= 1 or proc.ppid == me:
            continue
        if boot + proc.start_ticks / ticks < started - _START_SLACK:
            continue
        cmdline = _cmdline(proc.pid)
        if cmdline is None or not _runs(cmdline, argv):
            continue
        if _environ(proc.pid) == dict(env):
            found.append(proc.pid)
    return found


def kill_local_leftover(argv: Sequence[str], env: Mapping[str, str], *, started: float) -> int:
    """Kill every leftover run of ``argv`` (see :func:`find_local_leftovers`) with its
    session and descendants; how many runs were killed. Blocking: call it in a worker
    thread."""
    leaders = find_local_leftovers(argv, env, started=started)
    for leader in leaders:
        kill_tree(leader)
    return len(leaders)


def _kill_run(pid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        kill_tree(pid)


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
        child = spawn(argv, env=env)
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
                tg.start_soon(out.drain, child.stdout)
                tg.start_soon(err.drain, child.stderr)
            returncode = await wait_exit(child.process)
    except TimeoutError:
        _kill_run(child.pid)
        with anyio.move_on_after(REAP_TIMEOUT, shield=True):
            await wait_exit(child.process)
        raise CommandTimeoutError(
            f"{argv[0]} on the master took longer than {timeout:g}s and was killed",
            node="master",
            timeout=timeout,
        ) from None
    except BaseException:
        _kill_run(child.pid)
        with anyio.move_on_after(REAP_TIMEOUT, shield=True):
            await wait_exit(child.process)
        raise
    finally:
        child.close()
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
