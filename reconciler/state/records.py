"""The state's records: frozen dataclasses with explicit ``to_row``/``from_row``.

Datetimes are timezone-aware and stored as fixed-width ISO-8601 UTC text, so
that text order is time order. Enum fields are stored as their values. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from ..vocabulary import InventoryKind, Result, Stage, TargetState, Trigger

Row = Sequence[Any]


def to_text(value: datetime) -> str:
    """Aware datetime -> ``2026-11-25T10:00:00.000000+00:00`` (fixed width, sorts as time)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: state datetimes must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def opt_from_text(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


def _opt_stage(value: str | None) -> Stage | None:
    return None if value is None else Stage(value)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One action the reconciler took (or is taking: ``result is Result.RUNNING``)."""

    id: int
    action: str  # an ActionKind's value, or another verb a command recorded
    sig: str
    release: str
    stage: Stage | None
    compose_id: str | None
    reason: str
    revision: str | None
    author: str | None
    started_at: datetime
    finished_at: datetime | None
    result: Result
    error: str | None
    bytes: int
    files: int
    trigger: Trigger | None = None  # None: recorded before schema 4
    actor: str | None = None  # who: the commit's author, the build system, a person
    node: str | None = None  # which process did it (<node>:<pid>); None before schema 9

    @classmethod
    def from_row(cls, row: Row) -> Self:
        (id_, action, sig, release, stage, compose_id, reason, revision, author) = row[:9]
        (started_at, finished_at, result, error, nbytes, files, trigger, actor, node) = row[9:]
        return cls(
            id=id_,
            action=action,
            sig=sig,
            release=release,
            stage=_opt_stage(stage),
            compose_id=compose_id,
            reason=reason,
            revision=revision,
            author=author,
            started_at=from_text(started_at),
            finished_at=opt_from_text(finished_at),
            result=Result(result),
            error=error,
            bytes=nbytes,
            files=files,
            trigger=None if trigger is None else Trigger(trigger),
            actor=actor,
            node=node,
        )


HISTORY_COLUMNS = (
    "id, action, sig, release, stage, compose_id, reason, revision, author,"
    " started_at, finished_at, result, error, bytes, files, trigger, actor, node"
)


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """What a staging or production target holds now."""

    sig: str
    release: str
    stage: Stage
    compose_id: str
    published_at: datetime
    revision: str | None

    def to_row(self) -> tuple[Any, ...]:
        return (
            self.sig,
            self.release,
            self.stage.value,
            self.compose_id,
            to_text(self.published_at),
            self.revision,
        )

    @classmethod
    def from_row(cls, row: Row) -> Self:
        sig, release, stage, compose_id, published_at, revision = row
        return cls(sig, release, Stage(stage), compose_id, from_text(published_at), revision)


@dataclass(frozen=True, slots=True)
class StageEvent:
    """A completed publish of a compose to a stage; kept forever (soak time, rollback)."""

    sig: str
    release: str
    stage: Stage
    compose_id: str
    at: datetime

    def to_row(self) -> tuple[Any, ...]:
        return (self.sig, self.release, self.stage.value, self.compose_id, to_text(self.at))

    @classmethod
    def from_row(cls, row: Row) -> Self:
        sig, release, stage, compose_id, at = row
        return cls(sig, release, Stage(stage), compose_id, from_text(at))


@dataclass(frozen=True, slots=True)
class InventoryEntry:
    """One file, symlink or directory of a published tree, relative to its stage's root."""

    relpath: str
    kind: InventoryKind
    size: int
    mtime_ns: int
    ino: int
    checksum: str | None  # sha1 of a repomd.xml (for the file lists); None otherwise
    ctime_ns: int = 0

    def to_row(self, stage: Stage) -> tuple[Any, ...]:
        kind = InventoryKind(self.kind)  # refuses an unknown kind before it reaches the table
        return (stage.value, self.relpath, kind.value, self.size, self.mtime_ns, self.ino,
                self.checksum, self.ctime_ns)  # fmt: skip

    @classmethod
    def from_row(cls, row: Row) -> Self:
        relpath, kind, size, mtime_ns, ino, checksum, ctime_ns = row
        return cls(relpath, InventoryKind(kind), size, mtime_ns, ino, checksum, ctime_ns)


@dataclass(frozen=True, slots=True)
class UnmanagedEntry:
    """A path under a published SIG directory that the reconciler did not publish (found
    by the last walk of that directory): kept, listed for mirrors, never changed.

    ``ignored``: it matches a ``publish.unmanaged`` pattern, so it is not reported either.
    """

    relpath: str
    kind: InventoryKind
    size: int
    mtime_ns: int
    ctime_ns: int
    ignored: bool = False

    def to_row(self, stage: Stage) -> tuple[Any, ...]:
        kind = InventoryKind(self.kind)
        return (stage.value, self.relpath, kind.value, self.size, self.mtime_ns,
                self.ctime_ns, int(self.ignored))  # fmt: skip

    @classmethod
    def from_row(cls, row: Row) -> Self:
        relpath, kind, size, mtime_ns, ctime_ns, ignored = row
        return cls(relpath, InventoryKind(kind), size, mtime_ns, ctime_ns, bool(ignored))


@dataclass(frozen=True, slots=True)
class UnmanagedSummary:
    """What a stage holds under a prefix that the reconciler did not publish and that no
    ``publish.unmanaged`` pattern covers: how many files, their bytes, a few examples."""

    files: int
    bytes: int
    examples: tuple[str, ...]
    walked_at: datetime | None  # the last walk that found them; None: never walked


@dataclass(frozen=True, slots=True)
class PassRecord:
    """The loop's last pass: when it finished, how long it took, whether it converged."""

    finished_at: datetime
    seconds: float
    ok: bool
    error: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> Self:
        finished_at, seconds, ok, error = row
        return cls(from_text(finished_at), float(seconds), bool(ok), error)


#: A row of a file list: path after the prefix, kind, size, max(mtime, ctime) in whole
#: seconds, checksum.
ListingRow = tuple[str, str, int, int, str | None]


@dataclass(frozen=True, slots=True)
class PendingDeletion:
    """A path of a stage to delete once ``due_at`` has passed."""

    id: int
    stage: Stage
    relpath: str
    due_at: datetime
    reason: str

    @classmethod
    def from_row(cls, row: Row) -> Self:
        id_, stage, relpath, due_at, reason = row
        return cls(id_, Stage(stage), relpath, from_text(due_at), reason)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """The last computed status of one target (what ``reconciler status`` shows)."""

    sig: str
    release: str
    stage: Stage
    state: TargetState
    desired: str | None
    actual: str | None
    reason: str
    updated_at: datetime

    def to_row(self) -> tuple[Any, ...]:
        return (
            self.sig,
            self.release,
            self.stage.value,
            self.state.value,
            self.desired,
            self.actual,
            self.reason,
            to_text(self.updated_at),
        )

    @classmethod
    def from_row(cls, row: Row) -> Self:
        sig, release, stage, state, desired, actual, reason, updated_at = row
        return cls(
            sig, release, Stage(stage), TargetState(state), desired, actual, reason,
            from_text(updated_at),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """What the reconciler knows of its desired-state source.

    ``good_revision``: the newest revision that validated (what passes apply);
    ``applied_revision``: the revision the last pass applied; ``checkout_revision``:
    the revision exported into the state directory's checkout; ``problems``: why the
    newest fetched revision was not taken (empty when it was).
    """

    good_revision: str | None = None
    applied_revision: str | None = None
    checkout_revision: str | None = None
    problems: tuple[str, ...] = ()
    #: files of the desired state that are not read (``sigs/x.yaml.disabled``, ...)
    ignored: tuple[str, ...] = ()
