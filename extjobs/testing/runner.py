"""A :class:`~extjobs.nodes.runner.NodeRunner` that answers from rules and records calls.

Theory of operation: every request (``run``, ``put_tree``, ``open_unix_stream``,
``fetch_host_key``) becomes a :class:`~extjobs.testing.calls.Call` appended to
:attr:`ScriptedRunner.calls` *before* it is answered, so a refused request is recorded
too. The answer is, in order:

1. the node is :meth:`~ScriptedRunner.unreachable`: ``NodeUnreachableError``;
2. the newest :class:`Rule` whose match accepts the call (a fixed result, an error to
   raise, or a handler that may fall back to the default by returning ``None``);
3. the default, from a small model of the nodes and the shared storage
   (:class:`FakeStorage`, plus the guests the fake hypervisor runs on each node).

The defaults let a whole LU run: diagnose says the configured providers are valid
(found in the first search path directory, with ``open`` and ``close``), provider
scripts exit 0, ``attach`` prints ``/dev/xj/<VOL_NAME>``, ``test -b`` succeeds for such
a device, the size check reports the size the volume was created or grown to, the fake
hypervisor's start/status/stop keep track of a guest per node (the watcher's guest
listing reports them), ``uname -n`` prints the node name, a hypervisor's node info
reports :attr:`ScriptedRunner.memory` of the node (default :data:`NODE_MEMORY` MiB), and
anything else exits 0 silently. An answer with exit status 0 — default
or from a rule — updates the model; any other does not.

No process is started and nothing sleeps: a call takes microseconds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from extjobs.errors import ExtJobsError, NodeError, NodeUnreachableError
from extjobs.extstorage.capacity import NO_SCRIPT as NO_CAPACITY_SCRIPT
from extjobs.extstorage.diagnose import FORMAT_HEADER
from extjobs.model.remote import CommandResult, Endpoint, RemoteCommand
from extjobs.nodes.runner import UnixStream
from extjobs.testing.calls import Call, Match, classify

MIB = 1024 * 1024
DEVICE_DIR = "/dev/xj"
#: The memory (MiB) a scripted node reports unless :attr:`ScriptedRunner.memory` says.
NODE_MEMORY = 4096

#: What a handler returns: a result, or ``None`` for the default answer.
Handler = Callable[[Call], CommandResult | None]


@attrs.frozen
class FakeProvider:
    """A provider the scripted nodes report as valid.

    ``exclusive``: like providers with exclusive locks, ``attach`` fails while another
    node has the volume open exclusively, and an exclusive ``open`` fails while another
    node has it attached.
    """

    name: str
    parameters: Mapping[str, str] = attrs.field(factory=lambda: {"dir": "volume directory"})
    optional: tuple[str, ...] = ("open", "close")
    exclusive: bool = False
    #: What its ``capacity`` script reports: ``(total, free)`` MiB, or ``None`` for a
    #: provider without one; ``shared``: the same figures on every node of a group.
    capacity: tuple[int, int] | None = None
    shared: bool = False


@attrs.define
class Rule:
    """An answer for the calls ``match`` accepts; ``times`` answers at most (None: all)."""

    match: Match
    result: CommandResult | None = None
    error: ExtJobsError | None = None
    handler: Handler | None = None
    times: int | None = None
    used: int = 0

    def answer(self, call: Call) -> CommandResult | None:
        self.used += 1
        if self.error is not None:
            raise self.error
        if self.handler is not None:
            return self.handler(call)
        return self.result

    @property
    def spent(self) -> bool:
        return self.times is not None and self.used >= self.times


@attrs.define
class VolumeState:
    """One volume on the fake shared storage."""

    size: int
    attached: set[str] = attrs.field(factory=set)
    #: node → whether the volume is open exclusively there
    opened: dict[str, bool] = attrs.field(factory=dict)


class FakeStorage:
    """The shared storage as the provider scripts' successful runs left it."""

    def __init__(self) -> None:
        self.volumes: dict[str, VolumeState] = {}

    def apply(self, call: Call) -> None:
        name, node, env = call.volume, call.node, call.env
        assert name is not None
        vol = self.volumes.get(name)
        if call.action == "create":
            self.volumes[name] = VolumeState(int(env.get("VOL_SIZE", "0")))
        elif vol is None:
            return
        elif call.action == "remove":
            del self.volumes[name]
        elif call.action == "grow":
            vol.size = int(env["VOL_NEW_SIZE"])
        elif call.action == "attach":
            vol.attached.add(node)
        elif call.action == "detach":
            vol.attached.discard(node)
            vol.opened.pop(node, None)
        elif call.action == "open":
            vol.opened[node] = call.exclusive is True
        elif call.action == "close":
            vol.opened.pop(node, None)

    def attached_anywhere(self) -> dict[str, set[str]]:
        """Volume → nodes where it is attached, for volumes attached somewhere."""
        return {n: set(v.attached) for n, v in self.volumes.items() if v.attached}


class ScriptedRunner:
    """See the module docstring. One instance serves every node of a test cluster."""

    def __init__(self, providers: Iterable[str | FakeProvider] = ("sharedfile",)) -> None:
        self.providers = {
            p.name: p for p in (FakeProvider(p) if isinstance(p, str) else p for p in providers)
        }
        self.calls: list[Call] = []
        self.rules: list[Rule] = []
        self.storage = FakeStorage()
        #: (node, instance key) → pid of the fake guest running there
        self.guests: dict[tuple[str, str], int] = {}
        self._down: set[str] = set()
        self._pid = 1000
        #: node → the memory (MiB) its hypervisor reports (default NODE_MEMORY)
        self.memory: dict[str, int] = {}

    # -- scripting ----------------------------------------------------------------------

    def on(
        self,
        *,
        result: CommandResult | None = None,
        error: ExtJobsError | None = None,
        handler: Handler | None = None,
        times: int | None = None,
        **match: Any,
    ) -> Rule:
        """Answer the calls matching ``match`` (fields of :class:`Match`) with ``result``,
        by raising ``error``, or with ``handler(call)``; newest rules win."""
        rule = Rule(Match(**match), result, error, handler, times)
        self.rules.append(rule)
        return rule

    def fail(
        self, action: str, *, stderr: str = "scripted failure", exit_status: int = 1, **match: Any
    ) -> Rule:
        """Make provider ``action`` (``node=``, ``disk=`` … to narrow it) exit non-zero."""
        result = CommandResult(exit_status=exit_status, stderr=stderr + "\n")
        return self.on(kind=match.pop("kind", "provider"), action=action, result=result, **match)

    def unreachable(self, node: str) -> None:
        """Every later request to ``node`` raises ``NodeUnreachableError``."""
        self._down.add(node)

    def reachable(self, node: str) -> None:
        self._down.discard(node)

    def power_off(self, node: str) -> None:
        """What a fence does to ``node``: its guests die and it holds no volume."""
        for where in [w for w in self.guests if w[0] == node]:
            del self.guests[where]
        for volume in self.storage.volumes.values():
            volume.attached.discard(node)
            volume.opened.pop(node, None)

    # -- looking at what happened ---------------------------------------------------------

    def select(self, **match: Any) -> list[Call]:
        """The recorded calls matching ``match`` (fields of :class:`Match`), in order."""
        wanted = Match(**match)
        return [c for c in self.calls if wanted(c)]

    def trace(self, *kinds: str, node: str | None = None, status: bool = False) -> list[str]:
        """``"<node> <label>"`` of every call of ``kinds`` (default: provider scripts and
        hypervisor commands), in order; hypervisor status queries only with ``status``."""
        kinds = kinds or ("provider", "hypervisor")
        return [
            str(c)
            for c in self.calls
            if c.kind in kinds
            and (node is None or c.node == node)
            and (status or c.label != "hv status")
        ]

    def labels(self, node: str, *kinds: str, status: bool = False) -> list[str]:
        """Like :meth:`trace` for one node, without its name."""
        return [t.split(" ", 1)[1] for t in self.trace(*kinds, node=node, status=status)]

    def mark(self) -> int:
        """The number of calls so far; ``calls[mark:]`` are those made after it."""
        return len(self.calls)

    def forget(self) -> None:
        """Drop the recorded calls (the model and the rules stay)."""
        self.calls.clear()

    # -- the NodeRunner protocol ----------------------------------------------------------

    def _record(self, call: Call) -> Call:
        self.calls.append(call)
        if call.node in self._down:
            raise NodeUnreachableError(
                f"node {call.node} is unreachable (scripted)", node=call.node
            )
        return call

    def _rule_for(self, call: Call) -> Rule | None:
        for rule in reversed(self.rules):
            if not rule.spent and rule.match(call):
                return rule
        return None

    async def run(
        self,
        endpoint: Endpoint,
        command: RemoteCommand,
        *,
        on_started: Callable[[int], None] | None = None,
    ) -> CommandResult:
        # A real runner always waits for the node: let others run, and let a cancel in.
        await anyio.lowlevel.checkpoint()
        call = self._record(classify(len(self.calls), endpoint, command))
        if on_started is not None:
            on_started(self._next_pid())
        rule = self._rule_for(call)
        result = rule.answer(call) if rule is not None else None
        if result is None:
            result = self._default(call)
        if result.ok:
            self._apply(call, result)
        return result

    async def kill_leftover(self, endpoint: Endpoint, pgid: int, program: str) -> bool:
        """Recorded as a ``kill-leftover`` call; True only when a rule answers ``killed``."""
        call = Call(len(self.calls), endpoint.name, "kill-leftover", "kill-leftover")
        call = self._record(attrs.evolve(call, detail={"pgid": str(pgid), "program": program}))
        rule = self._rule_for(call)
        result = rule.answer(call) if rule is not None else None
        return result is not None and result.stdout.strip() == "killed"

    async def fetch_host_key(self, host: str, port: int) -> str:
        call = Call(len(self.calls), f"{host}:{port}", "host-key", "fetch-host-key")
        self.calls.append(call)
        rule = self._rule_for(call)
        if rule is not None:
            rule.answer(call)
        return host_key_for(host, port)

    async def put_tree(
        self, endpoint: Endpoint, local_dir: Path, remote_dir: str, *, timeout: float = 300.0
    ) -> None:
        detail = {"local_dir": str(local_dir), "remote_dir": remote_dir}
        call = Call(len(self.calls), endpoint.name, "put-tree", "put-tree", endpoint=endpoint)
        call = self._record(attrs.evolve(call, detail=detail))
        rule = self._rule_for(call)
        if rule is not None:
            rule.answer(call)

    @contextlib.asynccontextmanager
    async def _stream(self, endpoint: Endpoint, path: str) -> AsyncIterator[UnixStream]:
        call = Call(len(self.calls), endpoint.name, "stream", "stream", endpoint=endpoint)
        call = self._record(attrs.evolve(call, detail={"path": path}))
        rule = self._rule_for(call)
        if rule is not None:
            rule.answer(call)
        raise NodeError(f"nothing listens on {path} on node {endpoint.name} (scripted)")
        yield  # type: ignore[unreachable]  # makes this a generator; never reached

    def open_unix_stream(
        self, endpoint: Endpoint, path: str
    ) -> contextlib.AbstractAsyncContextManager[UnixStream]:
        return self._stream(endpoint, path)

    def statistics(self) -> dict[str, Any]:
        return {"commands": len(self.calls), "rules": len(self.rules)}

    async def aclose(self) -> None:
        pass

    # -- default answers --------------------------------------------------------------------

    def _next_pid(self) -> int:
        self._pid += 1
        return self._pid

    def _default(self, call: Call) -> CommandResult:
        answer = {
            "provider": self._provider_default,
            "diagnose": self._diagnose,
            "hypervisor": self._hypervisor,
            "block-device-check": self._block_device,
            "size-check": self._size,
            "capacity": self._capacity,
            "node-info": self._node_info,
        }.get(call.kind)
        if answer is not None:
            return answer(call)
        if call.argv[:2] == ("uname", "-n"):
            return CommandResult(0, f"{call.node}\n")
        return CommandResult(0)

    def _provider_default(self, call: Call) -> CommandResult:
        provider = self.providers.get(call.provider or "")
        vol = self.storage.volumes.get(call.volume or "")
        if provider is not None and provider.exclusive and vol is not None:
            holders = set()
            if call.action in ("attach", "open"):
                holders |= {n for n, excl in vol.opened.items() if excl and n != call.node}
            if call.action == "open" and call.exclusive:
                holders |= {n for n in vol.attached if n != call.node}
            if holders:
                return CommandResult(
                    1, stderr=f"{call.volume} is held by {', '.join(sorted(holders))}\n"
                )
        if call.action == "attach":
            return CommandResult(0, f"{DEVICE_DIR}/{call.volume}\n")
        return CommandResult(0)

    def _diagnose(self, call: Call) -> CommandResult:
        mode, count, rest = call.args[0], int(call.args[1]), call.args[2:]
        names, search = list(rest[:count]), rest[count:]
        if mode == "all":
            names += [n for n in sorted(self.providers) if n not in names]
        lines = [FORMAT_HEADER]
        for name in names:
            lines.append(f"provider {name}")
            provider = self.providers.get(name)
            if provider is None:
                lines.append(f"reason not found in {':'.join(search)}")
            else:
                lines.append(f"path {search[0]}/{name}")
                lines.append("optional " + " ".join(provider.optional))
                lines += [f"param {k} {v}" for k, v in provider.parameters.items()]
            lines.append("end")
        lines.append("done")
        return CommandResult(0, "\n".join(lines) + "\n")

    def _capacity(self, call: Call) -> CommandResult:
        provider = self.providers.get(call.provider or "")
        if provider is None or provider.capacity is None:
            return CommandResult(0, NO_CAPACITY_SCRIPT + "\n")
        total, free = provider.capacity
        return CommandResult(0, f"{total} {free}\n" + ("shared\n" if provider.shared else ""))

    def _node_info(self, call: Call) -> CommandResult:
        mib = self.memory.get(call.node, NODE_MEMORY)
        return CommandResult(0, f"memory_total {mib}\nmemory_free {mib}\n")

    def _hypervisor(self, call: Call) -> CommandResult:
        if call.action == "guests":
            # The watcher's listing: every guest this node runs.
            where = call.args[0]
            if not where.startswith("/"):
                where = f"/home/{call.node}/{where}"
            lines = [f"guests {where}"] + [
                f"running {key} {pid}"
                for (node, key), pid in sorted(self.guests.items())
                if node == call.node
            ]
            return CommandResult(0, "\n".join(lines) + "\n")
        run_dir, key = call.args[0], call.args[1]
        where = run_dir if run_dir.startswith("/") else f"/home/{call.node}/{run_dir}"
        pid = self.guests.get((call.node, key))
        if call.action == "start":
            # Like the fake hypervisor: every disk must be there, i.e. attached here.
            for path in call.args[2:]:
                vol = self.storage.volumes.get(path.rsplit("/", 1)[-1])
                if path.startswith(DEVICE_DIR + "/") and (
                    vol is None or call.node not in vol.attached
                ):
                    return CommandResult(1, stderr=f"disk {path} does not exist on this node\n")
            pid = pid or self._next_pid()
            return CommandResult(0, f"running {pid} {where}\n")
        if call.action == "status" and pid is not None:
            return CommandResult(0, f"running {pid} {where}\n")
        return CommandResult(0, f"stopped {where}\n")

    def _block_device(self, call: Call) -> CommandResult:
        known = call.args[0].startswith(DEVICE_DIR + "/")
        return CommandResult(0 if known else 1)

    def _size(self, call: Call) -> CommandResult:
        name = call.args[0].rsplit("/", 1)[-1]
        vol = self.storage.volumes.get(name)
        if vol is None:
            return CommandResult(1, stderr=f"{call.args[0]}: no such file\n")
        return CommandResult(0, f"{vol.size * MIB}\n")

    def _apply(self, call: Call, result: CommandResult) -> None:
        if call.kind == "provider":
            self.storage.apply(call)
        elif call.kind == "hypervisor" and call.action in ("start", "stop"):
            where = (call.node, call.args[1])
            if call.action == "stop":
                self.guests.pop(where, None)
            elif result.stdout.startswith("running "):
                self.guests[where] = int(result.stdout.split()[1])

    # -- views ------------------------------------------------------------------------------

    def running(self) -> dict[str, list[str]]:
        """Node → instance keys of the fake guests running there."""
        out: dict[str, list[str]] = {}
        for node, key in sorted(self.guests):
            out.setdefault(node, []).append(key)
        return out

    @contextlib.contextmanager
    def scripted(self, **rule: Any) -> Iterator[Rule]:
        """A rule (see :meth:`on`) for the duration of a ``with`` block."""
        added = self.on(**rule)
        try:
            yield added
        finally:
            self.rules.remove(added)


def host_key_for(host: str, port: int) -> str:
    """A stable, well-formed fake ed25519 host key for ``host:port``."""
    blob = (
        b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
        + hashlib.sha256(f"{host}:{port}".encode()).digest()
    )
    return "ssh-ed25519 " + base64.b64encode(blob).decode()
