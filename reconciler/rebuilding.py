"""Rebuild what can be rebuilt of the state database from the trees.

Used when the database is lost or corrupt. The damaged file is kept (renamed
aside, never deleted). What each staging and production target holds is found
by comparing its ``repomd.xml`` files with those of the composes on disk; the
inventory of each target is what it holds of that compose, byte for byte
(:mod:`reconciler.adopting`): anything else in the tree is unmanaged, never the
reconciler's to delete. A vault tree (:mod:`reconciler.vaulting`) is rebuilt the same way
when it holds one of its release's composes. History and stage times cannot be
recovered: the stage events get the time of the rebuild.

On PostgreSQL the state is exported first (``state export``'s format, in the state
directory), then emptied and rebuilt in place; the leader lease and its terms are kept
(another host may lead meanwhile).

``state export`` and ``state import`` move a whole state between backends
(:mod:`reconciler.state.transfer`).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from .adopting import compose_files, newest_finished, record_baseline, take_baseline
from .composemeta import list_composes
from .errors import StateError
from .hostconfig import HostConfig
from .layout import ComposeTree, PublishedTree
from .pathglob import PathPatterns
from .spec import ReleaseSpec, Spec, variants_of
from .specfile import load_spec
from .state import StateDB
from .state.tables import schema_tables
from .state.transfer import export_state, import_state
from .vocabulary import PUBLISHED_STAGES, ComposeStatus, Dialect, Stage

#: What a rebuild of a PostgreSQL state keeps: the lease of whichever host leads.
_KEPT_BY_REBUILD = frozenset({"leader", "leader_terms"})


def check_state(host: HostConfig) -> str:
    """Check the whole state (never migrates nor creates it); say what was checked."""
    with StateDB.connect(host, create=False) as state:
        checked = state.check()
        return (
            f"{state.name}: ok (schema version {state.schema_version}, "
            f"{len(state.targets.all())} targets, {len(state.history.entries())} history entries;"
            f" checked: {checked})"
        )


def export_to(host: HostConfig, file: Path) -> str:
    """Write the whole state to ``file`` (replaced only once complete)."""
    partial = file.with_name(f".{file.name}.partial")
    with StateDB.connect(host, create=False) as state:
        try:
            with partial.open("w", encoding="utf-8") as out:
                rows = export_state(state.database, out)
            partial.replace(file)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise StateError(f"cannot write {file}: {exc.strerror or exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        version = state.schema_version
        return f"exported {rows} rows of {state.name} (schema version {version}) to {file}"


def import_from(host: HostConfig, file: Path, *, replace: bool) -> str:
    """Make ``file`` (an export) the whole state, in one transaction."""
    try:
        source = file.open(encoding="utf-8")
    except OSError as exc:
        raise StateError(f"cannot read {file}: {exc.strerror or exc}") from exc
    with source, StateDB.connect(host) as state:
        try:
            rows = import_state(state.database, source, os.fspath(file), replace=replace)
        except UnicodeDecodeError as exc:
            raise StateError(f"{file}: not UTF-8 text: {exc}") from exc
        return f"imported {rows} rows from {file} into {state.name}"


def _set_aside_postgres(host: HostConfig) -> list[str]:
    """Export the PostgreSQL state into the state directory, then empty it (but the lease)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    copy = host.layout.set_aside(stamp)
    try:
        host.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create state directory {host.state_dir}: {exc}") from exc
    line = export_to(host, copy)
    with StateDB.connect(host) as state, state.database.write() as conn:
        for table in schema_tables():
            if table.name not in _KEPT_BY_REBUILD:
                conn.execute(f"DELETE FROM {table.name}")  # noqa: S608 - our names
    return [f"kept the old state: {line}"]


def _move_aside(database: Path) -> list[str]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved = []
    for suffix in ("", "-wal", "-shm"):
        path = database.with_name(f"{database.name}{suffix}")
        if path.exists():
            aside = path.with_name(f"{path.name}.damaged-{stamp}")
            path.rename(aside)
            moved.append(f"kept the old {path.name} as {aside}")
    return moved


def _matching_compose(tree: ComposeTree, target: Path, variants: list[str]) -> str | None:
    """The newest finished compose whose every published repomd.xml equals the target's."""
    published = {v: (target / v / "repodata" / "repomd.xml") for v in variants}
    present = {v: p.read_bytes() for v, p in published.items() if p.is_file()}
    if not present:
        return None
    for c in reversed(list_composes(tree)):
        if c.status is not ComposeStatus.FINISHED:
            continue
        sig_dir = tree.sig_dir(c.compose_id)
        if all(
            (sig_dir / v / "repodata" / "repomd.xml").is_file()
            and (sig_dir / v / "repodata" / "repomd.xml").read_bytes() == data
            for v, data in present.items()
        ):
            return c.compose_id
    return None


def _rebuild_target(
    state: StateDB,
    tree: ComposeTree,
    published: PublishedTree,
    variants: list[str],
    patterns: PathPatterns,
    now: datetime,
) -> str:
    """The target's inventory is what it holds of the compose whose repomd.xml files it
    has (else of the newest finished compose): only the files it would have published
    itself, byte for byte. Everything else (files whose deletion was pending when the
    database was lost, files of an earlier publish, anything put there by hand) is
    unmanaged: kept and reported, never deleted (``publish.prune`` may retire old
    packages and metadata)."""
    name = f"{published.sig} {published.release} {published.stage}"
    found = _matching_compose(tree, published.path, variants)
    cid = found or newest_finished(tree)
    files = compose_files(tree, cid) if cid is not None else []
    baseline = take_baseline(published, files, cid, patterns)
    record_baseline(state, baseline, now)
    if found is None:
        return (
            f"{name}: {published.path} matches no finished compose; the next apply "
            f"republishes it ({baseline.describe()})"
        )
    return f"{name}: holds {found} ({baseline.describe()})"


def _rebuild_vaults(
    host: HostConfig,
    state: StateDB,
    spec: Spec,
    release: tuple[ComposeTree, ReleaseSpec],
    patterns: PathPatterns,
    now: datetime,
) -> list[str]:
    """The release's vault targets: each vault tree that holds one of the release's
    composes (by its ``repomd.xml`` files) is recorded as holding it. One that matches
    none is left unrecorded: the next apply publishes its entry there again, over what
    is there (a vault deletes nothing)."""
    tree, rel = release
    variants = [str(v.rel_dir) for v in variants_of(rel)]
    lines = []
    for point in sorted(rel.vault):
        published = host.published(
            spec.defaults.publish.vault_category, Stage.VAULT, tree.sig, point
        )
        if not published.path.is_dir():
            continue
        if _matching_compose(tree, published.path, variants) is None:
            lines.append(f"{tree.sig} {point} vault: {published.path} matches no finished "
                         "compose; the next apply publishes its entry there again")  # fmt: skip
            continue
        lines.append(_rebuild_target(state, tree, published, variants, patterns, now))
    return lines


def rebuild_state(host: HostConfig, spec_dir: Path | None) -> list[str]:
    """Move the old database aside and rebuild targets and inventories from the trees."""
    spec = load_spec(spec_dir or host.layout.checkout)
    if host.state.dialect is Dialect.SQLITE:
        lines = _move_aside(host.layout.database)
    else:
        lines = _set_aside_postgres(host)
    now = datetime.now(UTC)
    category = spec.defaults.publish.category
    with StateDB.connect(host) as state:
        for sig_name, sig in sorted(spec.sigs.items()):
            patterns = PathPatterns.of(spec.unmanaged(sig_name))
            for rel_name, rel in sorted(sig.releases.items()):
                tree = host.compose_tree(sig_name, rel_name)
                variants = [str(v.rel_dir) for v in variants_of(rel)]
                for stage in PUBLISHED_STAGES:
                    published = host.published(category, stage, sig_name, rel_name)
                    if not published.path.is_dir():
                        continue
                    lines.append(_rebuild_target(state, tree, published, variants, patterns, now))
                lines.extend(_rebuild_vaults(host, state, spec, (tree, rel), patterns, now))
        lines.append(f"rebuilt {state.name} (history could not be recovered)")
    return lines
