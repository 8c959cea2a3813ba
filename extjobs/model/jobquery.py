"""Searching jobs: the filters of ``extjobs job list`` and ``GET /v1/jobs``, and the tags
a job is found by. Pure.

A job is *tagged*, when it is first stored, with what it touches: the opcodes it runs,
the instances and nodes its opcodes name (and the primary node of each instance named,
as the configuration said at submission), and its submitter. The tags never change
afterwards, so a store indexes them once (``(kind, name, job_id)``) and answers a
search by walking that index from the newest job down, without reading other jobs.

Results come newest first. A page of ``limit`` jobs carries a cursor (the id of its
last job) when more may follow; the next page is the jobs with smaller ids.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from extjobs.errors import InputError
from extjobs.model.states import JobStatus

#: The most jobs one page holds, and what a page holds when no limit is given.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class TagKind(enum.StrEnum):
    OPCODE = "opcode"
    INSTANCE = "instance"
    NODE = "node"
    USER = "user"


#: Opcode fields (as submitted) that name instances, and those that name nodes. An
#: opcode added later is searchable by instance or node when its fields use these names.
INSTANCE_FIELDS = frozenset({"instance_name", "new_name", "lock_instances", "instances"})
NODE_FIELDS = frozenset(
    {"node_name", "pnode", "snode", "target_node", "nodes", "on_nodes", "detach_nodes"}
)

Tag = tuple[TagKind, str]


def _named(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        yield from (v for v in value if isinstance(v, str))


def op_tags(op_input: Mapping[str, Any]) -> set[Tag]:
    """The tags of one opcode as submitted (its ``OP_ID`` and the names it gives)."""
    tags: set[Tag] = set()
    op_id = op_input.get("OP_ID")
    if isinstance(op_id, str) and op_id:
        tags.add((TagKind.OPCODE, op_id))
    for key, value in op_input.items():
        if key in INSTANCE_FIELDS:
            tags.update((TagKind.INSTANCE, name) for name in _named(value))
        elif key in NODE_FIELDS:
            tags.update((TagKind.NODE, name) for name in _named(value))
    return tags


def job_tags(
    ops: Sequence[Mapping[str, Any]],
    submitter: str | None = None,
    touches: Sequence[str] = (),
) -> set[Tag]:
    """Every tag of a job: its opcodes' tags, the nodes in ``touches`` (recorded at
    submission) and its submitter, both as ``SOURCE:NAME`` and as ``NAME``."""
    tags: set[Tag] = set()
    for op in ops:
        tags |= op_tags(op)
    tags.update((TagKind.NODE, node) for node in touches)
    if submitter:
        tags.add((TagKind.USER, submitter))
        _source, sep, name = submitter.partition(":")
        if sep and name:
            tags.add((TagKind.USER, name))
    return tags


_SINCE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float:
    """``2h``, ``30m``, ``90s``, ``1d``, ``1w`` (a duration back from ``now``), or a
    Unix time in seconds (more than ten digits before the point); the epoch second the
    search starts at. Raises InputError naming ``since``."""
    found = _SINCE.fullmatch(text.strip())
    if found is None:
        raise InputError(
            f"since must be a duration like 90s, 30m, 2h, 1d, 1w or a Unix time, not {text!r}",
            field="since",
        )
    number, unit = float(found[1]), found[2]
    if not unit and len(found[1].partition(".")[0]) >= 10:
        return number
    seconds = number * _UNIT[unit]
    if seconds > 100 * 365 * 86400:
        raise InputError(f"since {text!r} is more than a century ago", field="since")
    return now - seconds


@attrs.frozen
class JobQuery:
    """One page of a job search. Every filter given must match (``statuses``: any of)."""

    statuses: tuple[JobStatus, ...] = ()
    opcode: str | None = None
    instance: str | None = None
    node: str | None = None
    user: str | None = None
    #: Only jobs received at or after this epoch second.
    since: float | None = None
    #: The cursor: only jobs with a smaller id (the last id of the previous page).
    before: int | None = None
    limit: int = DEFAULT_LIMIT
    archived: bool = False

    def __attrs_post_init__(self) -> None:
        # MAX_LIMIT bounds what a client may ask for (the API checks it); a caller
        # asks one more to learn whether another page follows.
        if self.limit < 1:
            raise InputError(f"limit must be at least 1, not {self.limit}", field="limit")

    @property
    def tags(self) -> list[Tag]:
        """The tag filters, which a store answers from its index."""
        wanted = [
            (TagKind.OPCODE, self.opcode),
            (TagKind.INSTANCE, self.instance),
            (TagKind.NODE, self.node),
            (TagKind.USER, self.user),
        ]
        return [(kind, name) for kind, name in wanted if name is not None]

    def next_page(self, last_id: int) -> JobQuery:
        return attrs.evolve(self, before=last_id)
