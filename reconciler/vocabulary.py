"""The shared vocabulary: every stage, status, state, kind and result, as enums.

The bottom layer: it imports nothing from the package, and every other module
spells these values through it, never as string literals. The values are the
strings that appear on disk, in the state database, in the JSON and markdown
output and in the logs, so they never change (a renamed member keeps its value).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class Stage(StrEnum):
    """Where a SIG release's content lives: a compose, then two published trees."""

    COMPOSE = "compose"
    STAGING = "staging"
    PRODUCTION = "production"
    #: a vaulted point release: published once under the production root's vault
    #: category, never pruned (:mod:`reconciler.vaulting`); its targets are keyed by the
    #: point release (``core 9.5 vault``), not by the release
    VAULT = "vault"


#: The stages that are published trees (under the staging and production roots).
PUBLISHED_STAGES: Final = (Stage.STAGING, Stage.PRODUCTION)
#: The stages of a SIG release itself (a vault target belongs to a point release).
RELEASE_STAGES: Final = (Stage.COMPOSE, *PUBLISHED_STAGES)
#: The stages whose trees carry the mirrors' file lists (the vault: its own, at
#: ``mirror/vault/``).
LISTED_STAGES: Final = frozenset({Stage.PRODUCTION, Stage.VAULT})


class ComposeStatus(StrEnum):
    """A compose's ``STATUS`` file (productmd's values)."""

    STARTED = "STARTED"
    FINISHED = "FINISHED"
    FINISHED_INCOMPLETE = "FINISHED_INCOMPLETE"
    DOOMED = "DOOMED"


class TargetState(StrEnum):
    """What ``status`` says of a target (a SIG release at one stage)."""

    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    PROGRESSING = "Progressing"
    BLOCKED = "Blocked"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


#: The states that mean a target needs a person (reported after a pass).
TROUBLE_STATES: Final = frozenset({TargetState.BLOCKED, TargetState.FAILED})


class PlanOutcome(StrEnum):
    """What a plan says of the whole world (``plan`` exits 0, 2 or 1 for these)."""

    IN_SYNC = "in-sync"  # nothing to do, nothing wrong
    CHANGES = "changes"  # actions pending, every target can get there
    TROUBLE = "trouble"  # a target failed or is blocked, or the newest desired state is unusable


class ActionKind(StrEnum):
    """What an action of a plan does."""

    COMPOSE = "compose"
    PUBLISH = "publish"
    PRUNE = "prune"
    RETIRE = "retire"  # pend a removed release's published files for deletion (endoflife)


class Trigger(StrEnum):
    """What started an action (the history keeps it, with who the actor was)."""

    COMMIT = "commit"  # a change of the desired state in git
    UPSTREAM = "upstream"  # the build system published new packages
    DRIFT = "drift"  # a published tree differed from what was published (repair)
    POLICY = "policy"  # housekeeping the desired state asks for (keep_composes)
    MANUAL = "manual"  # a person ran a command (``reconciler compose``)


class Result(StrEnum):
    """How an action ended (``RUNNING`` while it runs; the state's history keeps it)."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    BLOCKED = "blocked"
    SKIPPED = "skipped"  # an earlier action of the same SIG release did not succeed


#: The results a finished action can have in the history.
FINISHED_RESULTS: Final = frozenset({Result.OK, Result.FAILED, Result.BLOCKED})
#: The error recorded for an action that was running when the process died.
INTERRUPTED: Final = "interrupted"


class VariantKind(StrEnum):
    """One repository of a compose: a binary repo, its ``-debug`` twin, or its sources."""

    BINARY = "binary"
    DEBUG = "debug"
    SOURCE = "source"


class InventoryKind(StrEnum):
    """What an inventory row is: a file, a symlink or a directory."""

    FILE = "f"
    LINK = "l"
    DIR = "d"


class DriftKind(StrEnum):
    """How a published path differs from what was published there."""

    MISSING = "missing"
    CHANGED = "changed"  # size, mtime or inode differ from the inventory
    #: Never produced any more: a path the inventory lacks is unmanaged, not drift (issue
    #: 14). Kept so that the findings an older version recorded still read; they are
    #: dropped when read (``drift.actionable``), never reported or repaired.
    UNEXPECTED = "unexpected"
    CORRUPT = "corrupt"  # the bytes do not hash to the compose's checksum (the deep check)


class PlacementKind(StrEnum):
    """What a compose does with one upstream package (a step of a placement plan)."""

    LINK = "link"  # hardlink the previous compose's copy (same checksum and size)
    DOWNLOAD = "download"  # fetch it from the build system and verify it
    DROP = "drop"  # not taken: older than the newest ``keep_versions`` of its name.arch
    REFUSE = "refuse"  # its location is unsafe, or another package claims its file name


class ChangeKind(StrEnum):
    """What a publish does with one path of a target (a step of a change set)."""

    PLACE = "place"  # link (or copy) the compose's file to its name
    REPLACE = "replace"  # the target holds other bytes under that name: swap them by rename
    ADOPT = "adopt"  # a file found in the tree that no publish made: inventoried, then pended
    PEND = "pend"  # superseded: deleted once the grace has passed
    CANCEL = "cancel"  # wanted again: its pending deletion is cancelled


class LinkKind(StrEnum):
    """How a file of one tree gets a name in another (compose reuse, publishing): the
    first that the pair of filesystems can do, in this order (``fsutil.Sharer``)."""

    CLONE = "clone"  # FICLONE (reflink): an inode of its own sharing the source's blocks
    HARDLINK = "hardlink"  # link(2): the same inode (an edit of one is an edit of all)
    COPY = "copy"  # the bytes copied: another filesystem (or no links there)


class PackageChangeKind(StrEnum):
    """How a package of a repo changes between what a target holds and what it will hold."""

    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"
    ADDED = "added"
    REMOVED = "removed"


class PublishPhase(IntEnum):
    """The mirror-safe order of a publish (DESIGN.md section 6): each phase before the next."""

    PACKAGES = 1  # packages and every other file the metadata may name
    METADATA = 2  # the files under repodata/ (their names carry their checksums)
    REPOMD = 3  # repodata/repomd.xml, which names the metadata: last


class PublishBasis(StrEnum):
    """What a publish compares the compose with to find what changed."""

    CHANGES = "changes"  # the composes' changes files (the target holds an earlier compose)
    INVENTORY = "inventory"  # the state's whole inventory of the target
    TREE = "tree"  # the files in the target's tree (a repair)


class MirrorState(StrEnum):
    """How a public mirror stands against production, for one repo or one target."""

    CURRENT = "current"  # serves production's newest repomd.xml
    BEHIND = "behind"  # serves an older one production published (or lacks the repo)
    FOREIGN = "foreign"  # serves a repomd.xml production never published
    UNREACHABLE = "unreachable"  # a connection or HTTP error
    UNCHECKED = "unchecked"  # not checked since production published it


class PassOutcome(StrEnum):
    """How a pass of the loop ended (metrics label values)."""

    OK = "ok"
    FAILED = "failed"


class Dialect(StrEnum):
    """The state database's engine (the host config's ``state`` section chooses)."""

    SQLITE = "sqlite"  # one file in the state directory: the embedded default
    POSTGRESQL = "postgresql"  # shared by every host of a distribution (issue 18)


class JobState(StrEnum):
    """Where a compose job is (the ``compose_jobs`` table)."""

    QUEUED = "queued"  # wanted by a plan, not taken (or taken again: its worker died)
    RUNNING = "running"  # a worker holds it and heartbeats
    DONE = "done"  # its compose finished (the row names it)
    FAILED = "failed"  # its compose was DOOMED or could not start (the row says why)


class AttemptOutcome(StrEnum):
    """How one attempt at a compose job ended (the ``compose_attempts`` table)."""

    DONE = "done"  # the job is done with this attempt's compose
    FAILED = "failed"  # the job failed with this attempt
    ABANDONED = "abandoned"  # its worker stopped heartbeating; the job was taken again


__all__ = [
    "FINISHED_RESULTS",
    "INTERRUPTED",
    "LISTED_STAGES",
    "PUBLISHED_STAGES",
    "RELEASE_STAGES",
    "TROUBLE_STATES",
    "ActionKind",
    "AttemptOutcome",
    "ChangeKind",
    "ComposeStatus",
    "Dialect",
    "DriftKind",
    "InventoryKind",
    "JobState",
    "LinkKind",
    "MirrorState",
    "PackageChangeKind",
    "PassOutcome",
    "PlacementKind",
    "PlanOutcome",
    "PublishBasis",
    "PublishPhase",
    "Result",
    "Stage",
    "TargetState",
    "Trigger",
    "VariantKind",
]
