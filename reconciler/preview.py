"""What a planned publish would do to its target, file by file, counted: the preview
``reconciler plan`` shows before anything happens (docs/architecture.md, "Ownership
of published paths"). A record only; :mod:`reconciler.previewing` gathers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .vocabulary import Stage

#: What an example of an unmanaged file that stays says first ("keep unmanaged <path>").
KEEP_UNMANAGED = "keep unmanaged"


@dataclass(frozen=True)
class PublishPreview:
    """One publish action's effect on its target.

    ``add``: new names; ``replace``: names the reconciler published, new bytes;
    ``take_over``: names that exist in the tree but were not published by the reconciler
    (an adopted tree's): kept as they are when the bytes match, else replaced;
    ``pend``: files the reconciler published (or, with ``publish.prune``, old packages
    and metadata) that become pending deletions, deleted after the grace;
    ``unmanaged``: files it did not publish that stay untouched (``ignored`` of them
    match ``publish.unmanaged`` and are not reported).
    """

    sig: str
    release: str
    stage: Stage
    compose_id: str | None
    add: int = 0
    replace: int = 0
    take_over: int = 0
    pend: int = 0
    unmanaged: int = 0
    ignored: int = 0
    examples: tuple[str, ...] = ()  # "<what> <path in the SIG directory>", a few of each
    note: str = ""  # why there are no counts ("the compose this plan makes")
    #: a RETIRE (a removed release, :mod:`reconciler.endoflife`): the bytes that go, and
    #: each published directory that goes, "<dir under the stage root>/: N file(s), B bytes"
    bytes: int = 0
    directories: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.note:
            return self.note
        if self.directories:  # a retired target: nothing comes, everything it published goes
            return f"{self.pend} to pend for deletion ({self.bytes} bytes); " + (
                f"{self.unmanaged} unmanaged kept"
            )
        return (
            f"{self.add} to add, {self.replace} to replace, {self.take_over} to take over, "
            f"{self.pend} to pend for deletion; {self.unmanaged} unmanaged kept"
            + (f" (+{self.ignored} covered by publish.unmanaged)" if self.ignored else "")
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PublishPreview:
        return cls(**{**raw, "stage": Stage(raw["stage"]), "examples": tuple(raw["examples"]),
                      "directories": tuple(raw.get("directories", ()))})  # fmt: skip
