"""Drift: a published target compared with its inventory, by stat only (no hashing).

A missing, changed (size, mtime or inode) or unexpected file under a published
SIG directory is drift. The check walks the target, so it runs on a
host-configured interval (``drift_interval``, default hourly) and on demand
(``reconciler verify --drift``), never on the hot path. Results are kept in
the state, read by observing, and repaired by the next apply when the host
says ``drift: repair``.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .fsutil import TMP_SUFFIX
from .state import StateDB

META_CHECKED = "drift_checked_at"


@dataclass(frozen=True, order=True)
class Drift:
    path: str  # relative to the stage root
    what: str  # missing | changed | unexpected

    def __str__(self) -> str:
        return f"{self.what}: {self.path}"


def meta_key(stage: str, sig: str, release: str) -> str:
    return f"drift/{stage}/{sig}/{release}"


def check_target(state: StateDB, stage: str, stage_root: Path, prefix: str) -> list[Drift]:
    """Compare every file under ``stage_root/prefix`` with the inventory."""
    inventory = state.inventory(stage, f"{prefix}/")
    found: list[Drift] = []
    for rel, entry in inventory.items():
        try:
            st = (stage_root / rel).lstat()
        except FileNotFoundError:
            found.append(Drift(rel, "missing"))
            continue
        if entry.kind == "f" and (
            not stat.S_ISREG(st.st_mode)
            or (st.st_size, st.st_mtime_ns, st.st_ino) != (entry.size, entry.mtime_ns, entry.ino)
        ):
            found.append(Drift(rel, "changed"))
    top = stage_root / prefix
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            rel = str((Path(dirpath) / name).relative_to(stage_root))
            if rel not in inventory and not name.endswith(TMP_SUFFIX):
                found.append(Drift(rel, "unexpected"))
    return sorted(found)


def store(state: StateDB, stage: str, sig: str, release: str, drift: list[Drift]) -> None:
    state.set_meta(
        meta_key(stage, sig, release), json.dumps([str(d) for d in drift]) if drift else None
    )


def load(state: StateDB, stage: str, sig: str, release: str) -> tuple[str, ...]:
    raw = state.get_meta(meta_key(stage, sig, release))
    return tuple(json.loads(raw)) if raw else ()


def due(state: StateDB, interval: float, now: datetime | None = None) -> bool:
    last = state.get_meta(META_CHECKED)
    now = now or datetime.now(UTC)
    return last is None or (now - datetime.fromisoformat(last)).total_seconds() >= interval


def mark_checked(state: StateDB, now: datetime | None = None) -> None:
    state.set_meta(META_CHECKED, (now or datetime.now(UTC)).isoformat())
