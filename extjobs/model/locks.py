"""Lock requests as data: what an LU declares before it runs."""

from __future__ import annotations

import enum

import attrs


class Level(enum.IntEnum):
    """Lock levels in acquisition order (the one global order that rules out deadlock)."""

    CLUSTER = 0
    GROUP = 1
    INSTANCE = 2
    NODE = 3


class Mode(enum.StrEnum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@attrs.frozen(order=True)
class LockKey:
    level: Level
    name: str

    def __str__(self) -> str:
        return f"{self.level.name.lower()}/{self.name}" if self.name else self.level.name.lower()


@attrs.frozen
class LockRequest:
    key: LockKey
    mode: Mode = Mode.EXCLUSIVE

    @classmethod
    def cluster(cls, mode: Mode = Mode.SHARED) -> LockRequest:
        return cls(LockKey(Level.CLUSTER, ""), mode)

    @classmethod
    def group(cls, name: str, mode: Mode = Mode.EXCLUSIVE) -> LockRequest:
        return cls(LockKey(Level.GROUP, name), mode)

    @classmethod
    def instance(cls, name: str, mode: Mode = Mode.EXCLUSIVE) -> LockRequest:
        return cls(LockKey(Level.INSTANCE, name), mode)

    @classmethod
    def node(cls, name: str, mode: Mode = Mode.EXCLUSIVE) -> LockRequest:
        return cls(LockKey(Level.NODE, name), mode)


def normalise(requests: list[LockRequest]) -> list[LockRequest]:
    """Deduplicate (exclusive wins) and sort into the global acquisition order."""
    merged: dict[LockKey, Mode] = {}
    for req in requests:
        if merged.get(req.key) is not Mode.EXCLUSIVE:
            merged[req.key] = req.mode
    return [LockRequest(key, merged[key]) for key in sorted(merged)]
