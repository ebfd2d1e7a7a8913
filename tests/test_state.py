"""The state database: real SQLite files, crashes and damage included; the repositories
also on PostgreSQL (the `db` fixture runs each of their tests on both backends)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import StateError
from reconciler.state import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    ActionStart,
    DriftFinding,
    HistoryEntry,
    InventoryEntry,
    PendingDeletion,
    SourceRecord,
    StageEvent,
    StateDB,
    TargetKey,
    TargetRecord,
    TargetStatus,
    UpstreamCacheEntry,
)
from reconciler.state.database import SqliteDatabase as Database
from reconciler.state.migrations import MIGRATIONS
from reconciler.vocabulary import Dialect, DriftKind, InventoryKind, Result, Stage, TargetState

from .state_support import BACKENDS, open_backend

T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: A schema-3 database written by the old code (``tests/make_state_schema3.py``).
SCHEMA3_FIXTURE = Path(__file__).resolve().parent / "data" / "state-schema3.db"
REBUILD_HINT = "run `reconciler state rebuild` to rebuild what can be rebuilt from the trees"


@pytest.fixture(params=BACKENDS)
def db(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StateDB]:
    """A new state on each backend: the repositories behave the same on both."""
    with open_backend(request.param, tmp_path, request) as opened:
        yield opened


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[StateDB]:
    with StateDB.open(tmp_path / "state") as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def start(db: StateDB, sig: str = "core", at: datetime = T0, **kw: object) -> int:
    args: dict[str, Any] = {
        "action": "compose",
        "sig": sig,
        "release": "9",
        "stage": None,
        "compose_id": None,
        "reason": "spec changed",
        "revision": "abc123",
        "author": "Ann <ann@example.org>",
        "started_at": at,
    }
    args.update(kw)
    return db.history.start(ActionStart(**args))


def entry(relpath: str, size: int = 1, kind: str = InventoryKind.FILE) -> InventoryEntry:
    return InventoryEntry(
        relpath,
        kind,  # type: ignore[arg-type]  # a plain string, to try an unknown kind
        size,
        1_700_000_000_000_000_000 + size,
        1000 + size,
        None,
    )


# --- opening -------------------------------------------------------------------


def test_fresh_database_has_latest_schema_wal_and_private_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "a" / "state"
    with StateDB.open(state_dir) as db:
        assert db.path == state_dir / "state.db"
        assert db.schema_version == SCHEMA_VERSION
        assert db.schema_version >= 1
    assert state_dir.stat().st_mode & 0o777 == 0o750 & ~current_umask()
    conn = raw(state_dir / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_connection_settings(sqlite_db: StateDB) -> None:
    conn = sqlite_db._db._conn  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as db:
        db.sources.set_source(SourceRecord(good_revision="abc"))
    with StateDB.open(tmp_path, create=False) as db:
        assert db.sources.source() == SourceRecord(good_revision="abc")
        assert db.schema_version == SCHEMA_VERSION


def test_missing_database_without_create(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        StateDB.open(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    StateDB.open(tmp_path).close()
    conn = raw(tmp_path / "state.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateError) as info:
        StateDB.open(tmp_path)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"knows up to {SCHEMA_VERSION}" in message
    assert "upgrade the reconciler" in message
    assert str(tmp_path / "state.db") in message


def test_garbage_file_is_refused_with_rebuild_hint(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(os.urandom(16384))
    with pytest.raises(StateError) as info:
        StateDB.open(tmp_path)
    assert str(tmp_path / "state.db") in str(info.value)
    assert REBUILD_HINT in str(info.value)
    assert "history is lost" in str(info.value)


def test_short_text_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_text("hello\n")
    with pytest.raises(StateError, match="not a SQLite database"):
        StateDB.open(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 4096, 200, 50])
def test_truncated_file_is_refused(tmp_path: Path, keep: float) -> None:
    with StateDB.open(tmp_path) as db:
        db.inventory.apply_changes(Stage.PRODUCTION, [entry(f"p/{i:06}") for i in range(20000)], [])
    path = tmp_path / "state.db"
    assert not Path(f"{path}-wal").exists()  # checkpointed on close
    size = path.stat().st_size
    os.truncate(path, int(size * keep) if keep < 1 else int(keep))
    with pytest.raises(StateError) as info:
        StateDB.open(tmp_path)
    assert REBUILD_HINT in str(info.value)
    assert str(path) in str(info.value)


def test_damage_inside_the_file_is_found_by_check(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as db:
        db.inventory.apply_changes(Stage.PRODUCTION, [entry(f"p/{i:06}") for i in range(20000)], [])
    path = tmp_path / "state.db"
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2 // 4096 * 4096)
        f.write(os.urandom(4096 * 4))
    with pytest.raises(StateError) as info:
        StateDB.open(tmp_path, check=True)
    assert REBUILD_HINT in str(info.value)
    # A plain open stays cheap (it does not read every page); check() finds the damage.
    with StateDB.open(tmp_path) as db, pytest.raises(StateError, match="rebuild"):
        db.check()


def test_truncated_file_with_live_wal_is_refused(tmp_path: Path) -> None:
    """A crash left committed frames in the WAL, and the main file lost its tail."""
    with StateDB.open(tmp_path / "live") as db:
        db.inventory.apply_changes(Stage.PRODUCTION, [entry(f"p/{i:06}") for i in range(20000)], [])
        db._db._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        db.inventory.apply_changes(Stage.PRODUCTION, [entry("q/1")], [])
        (tmp_path / "copy").mkdir()
        for name in ("state.db", "state.db-wal"):  # the files as a kill -9 leaves them
            shutil.copyfile(tmp_path / "live" / name, tmp_path / "copy" / name)
    path = tmp_path / "copy" / "state.db"
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(StateError, match="rebuild"):
        StateDB.open(tmp_path / "copy")


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    conn = raw(tmp_path / "state.db")
    conn.execute("CREATE TABLE something (x)")
    conn.close()
    with pytest.raises(StateError, match="not a reconciler state database"):
        StateDB.open(tmp_path)


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(StateError, match="cannot create state directory"):
        StateDB.open(tmp_path / "state")


def test_naive_datetimes_are_refused(db: StateDB) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        start(db, at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        db.sources.set_drift_checked(datetime(2026, 1, 1))
    assert db.history.entries() == []
    assert db.sources.drift_checked_at() is None


# --- sources -------------------------------------------------------------------


def test_source_record_round_trip_keeps_problems_in_order(db: StateDB) -> None:
    assert db.sources.source() == SourceRecord()  # nothing known yet
    first = SourceRecord(
        good_revision="r2",
        applied_revision="r1",
        checkout_revision="r2",
        problems=("SourceUnavailable: timed out", "InvalidSpec at r3: bad key", "A: first?"),
    )
    db.sources.set_source(first)
    assert db.sources.source() == first
    assert db.sources.source().problems == first.problems  # in the order given, not sorted
    fewer = SourceRecord(good_revision="r3", applied_revision="r3", problems=("only one",))
    db.sources.set_source(fewer)
    assert db.sources.source() == fewer  # replaced whole: checkout forgotten, problems cut
    db.sources.set_source(SourceRecord(good_revision="r3"))
    assert db.sources.source() == SourceRecord(good_revision="r3")
    assert db.sources.source().problems == ()


def test_drift_is_kept_per_target_in_order_and_replaced(db: StateDB) -> None:
    prod = TargetKey(Stage.PRODUCTION, "core", "9")
    staging = TargetKey(Stage.STAGING, "core", "9")
    other = TargetKey(Stage.PRODUCTION, "core", "10")
    assert db.sources.drift(prod) == ()  # never checked
    found = [
        DriftFinding("9/core/z", DriftKind.UNEXPECTED),
        DriftFinding("9/core/a", DriftKind.MISSING),
        DriftFinding("9/core/m", DriftKind.CHANGED),
    ]
    db.sources.set_drift(prod, found)
    db.sources.set_drift(staging, [DriftFinding("9/core/s", DriftKind.MISSING)])
    assert db.sources.drift(prod) == tuple(found)  # the order given
    assert all(type(d.what) is DriftKind for d in db.sources.drift(prod))
    assert db.sources.drift(staging) == (DriftFinding("9/core/s", DriftKind.MISSING),)
    assert db.sources.drift(other) == ()

    db.sources.set_drift(prod, [DriftFinding("9/core/n", DriftKind.CHANGED)])  # replaced
    assert db.sources.drift(prod) == (DriftFinding("9/core/n", DriftKind.CHANGED),)
    db.sources.set_drift(prod, [])  # the target matches again
    assert db.sources.drift(prod) == ()
    assert db.sources.drift(staging) == (DriftFinding("9/core/s", DriftKind.MISSING),)


def test_drift_checked_at(db: StateDB) -> None:
    assert db.sources.drift_checked_at() is None
    db.sources.set_drift_checked(T0.astimezone(timezone(timedelta(hours=-5))))
    checked = db.sources.drift_checked_at()
    assert checked == T0
    assert checked is not None and checked.tzinfo == UTC
    db.sources.set_drift_checked(T0 + timedelta(hours=1))
    assert db.sources.drift_checked_at() == T0 + timedelta(hours=1)


def test_a_corrupt_finding_and_the_deep_check_time_are_kept_apart(db: StateDB) -> None:
    prod = TargetKey(Stage.PRODUCTION, "core", "9")
    found = [DriftFinding("9/core/p.rpm", DriftKind.CORRUPT)]
    db.sources.set_drift(prod, found)
    assert db.sources.drift(prod) == tuple(found)
    assert db.sources.drift_deep_checked_at() is None
    db.sources.set_drift_deep_checked(T0)
    assert db.sources.drift_deep_checked_at() == T0
    assert db.sources.drift_checked_at() is None, "the stat check keeps its own time"
    db.sources.set_drift_deep_checked(T0 + timedelta(days=1))
    assert db.sources.drift_deep_checked_at() == T0 + timedelta(days=1)


def test_schema_4_drift_rows_survive_the_table_made_anew(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "state.db")
    for steps in MIGRATIONS[:4]:
        for step in steps:
            if isinstance(step, str):
                conn.execute(step)
            else:
                step(conn)
    conn.execute("PRAGMA user_version = 4")
    conn.execute(
        "INSERT INTO drift (stage, sig, release, position, what, path)"
        " VALUES ('production', 'core', '9', 0, 'changed', '9/core/a'),"
        " ('production', 'core', '9', 1, 'missing', '9/core/b')"
    )
    conn.commit()
    conn.close()
    prod = TargetKey(Stage.PRODUCTION, "core", "9")
    with StateDB.open(tmp_path) as db:
        assert db.schema_version == SCHEMA_VERSION
        assert db.sources.drift(prod) == (
            DriftFinding("9/core/a", DriftKind.CHANGED),
            DriftFinding("9/core/b", DriftKind.MISSING),
        )
        db.sources.set_drift(prod, [DriftFinding("9/core/a", DriftKind.CORRUPT)])
        assert db.sources.drift(prod) == (DriftFinding("9/core/a", DriftKind.CORRUPT),)


# --- history -----------------------------------------------------------------


def test_start_and_finish_action_round_trip(db: StateDB) -> None:
    other_zone = timezone(timedelta(hours=2))
    action_id = start(
        db,
        action="publish",
        stage=Stage.STAGING,
        compose_id="SIG-core-9-20261125.0",
        at=T0.astimezone(other_zone),
    )
    (running,) = db.history.entries()
    assert running == HistoryEntry(
        id=action_id,
        action="publish",
        sig="core",
        release="9",
        stage=Stage.STAGING,
        compose_id="SIG-core-9-20261125.0",
        reason="spec changed",
        revision="abc123",
        author="Ann <ann@example.org>",
        started_at=T0,
        finished_at=None,
        result=Result.RUNNING,
        error=None,
        bytes=0,
        files=0,
    )
    assert type(running.stage) is Stage
    assert type(running.result) is Result
    assert running.started_at.utcoffset() == timedelta(0)
    db.history.finish(
        action_id, result=Result.OK, bytes=12345, files=7, finished_at=T0 + timedelta(minutes=3)
    )
    (done,) = db.history.entries()
    assert done.result is Result.OK
    assert (done.bytes, done.files, done.error) == (12345, 7, None)
    assert done.finished_at == T0 + timedelta(minutes=3)
    assert done.finished_at.tzinfo == UTC


def test_finish_fills_in_the_compose_id(db: StateDB) -> None:
    action_id = start(db)
    db.history.finish(action_id, result=Result.OK, finished_at=T0, compose_id="SIG-core-9-1.0")
    assert db.history.entries()[0].compose_id == "SIG-core-9-1.0"
    named = start(db, compose_id="SIG-core-9-2.0")
    db.history.finish(named, result=Result.BLOCKED, finished_at=T0)  # None keeps it
    assert (db.history.entries()[0].compose_id, db.history.entries()[0].result) == (
        "SIG-core-9-2.0",
        Result.BLOCKED,
    )


def test_finish_action_rejects_unknown_result_and_id(db: StateDB) -> None:
    action_id = start(db)
    with pytest.raises(ValueError, match="running"):
        db.history.finish(action_id, result=Result.RUNNING, finished_at=T0)
    with pytest.raises(ValueError, match="skipped"):
        db.history.finish(action_id, result=Result.SKIPPED, finished_at=T0)
    with pytest.raises(StateError, match="no action 999"):
        db.history.finish(999, result=Result.OK, finished_at=T0)
    assert db.history.entries()[0].result is Result.RUNNING


def test_history_newest_first_with_limit_and_sig_filter(db: StateDB) -> None:
    ids = [start(db, sig=sig, at=T0) for sig in ["core", "cloud", "core", "virt", "core"]]
    db.history.finish(ids[1], result=Result.FAILED, error="boom", finished_at=T0)
    assert [h.id for h in db.history.entries()] == ids[::-1]
    assert [h.id for h in db.history.entries(2)] == ids[::-1][:2]
    assert [h.id for h in db.history.entries(sig="core")] == [ids[4], ids[2], ids[0]]
    assert [h.id for h in db.history.entries(1, sig="core")] == [ids[4]]
    assert db.history.entries(sig="nobody") == []
    failed = db.history.entries(sig="cloud")[0]
    assert (failed.result, failed.error) == (Result.FAILED, "boom")


def test_interrupted_actions_after_crash(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as db:
        done = start(db)
        db.history.finish(done, result=Result.OK, finished_at=T0)
        crashed = start(db, action="publish", stage=Stage.PRODUCTION)
    # the process "crashed": the action was never finished
    with StateDB.open(tmp_path) as db:
        assert [h.id for h in db.history.running()] == [crashed]
        assert db.history.mark_interrupted(T0 + timedelta(hours=1)) == 1
        assert db.history.running() == []
        entry_ = db.history.entries(1)[0]
        assert (entry_.id, entry_.result, entry_.error) == (crashed, Result.FAILED, "interrupted")
        assert entry_.finished_at == T0 + timedelta(hours=1)
        assert db.history.entries()[1].result is Result.OK
        assert db.history.mark_interrupted(T0) == 0


def test_history_ids_are_never_reused(db: StateDB) -> None:
    first = start(db)
    db._db._conn.execute("DELETE FROM history")
    assert start(db) > first


# --- targets -----------------------------------------------------------------


def test_targets_round_trip_and_stage_events(db: StateDB) -> None:
    assert db.targets.get("core", "9", Stage.STAGING) is None
    first = TargetRecord("core", "9", Stage.STAGING, "SIG-core-9-20261125.0", T0, "rev1")
    second = TargetRecord(
        "core", "9", Stage.STAGING, "SIG-core-9-20261126.0", T0 + timedelta(days=1), None
    )
    prod = TargetRecord("core", "9", Stage.PRODUCTION, "SIG-core-9-20261125.0", T0, "rev1")
    db.targets.set(first)
    db.targets.set(prod)
    assert db.targets.get("core", "9", Stage.STAGING) == first
    db.targets.set(second)
    db.targets.set(second)  # re-running a finished publish adds nothing
    assert db.targets.get("core", "9", Stage.STAGING) == second
    assert db.targets.all() == [prod, second]
    assert all(type(t.stage) is Stage for t in db.targets.all())
    assert db.targets.events("core", "9", Stage.STAGING) == [
        StageEvent("core", "9", Stage.STAGING, "SIG-core-9-20261125.0", T0),
        StageEvent("core", "9", Stage.STAGING, "SIG-core-9-20261126.0", T0 + timedelta(days=1)),
    ]
    db.targets.set(first)  # a rollback is a publish too
    assert len(db.targets.events("core", "9", Stage.STAGING)) == 3
    db.targets.clear("core", "9", Stage.STAGING)
    assert db.targets.get("core", "9", Stage.STAGING) is None
    assert db.targets.all() == [prod]
    assert len(db.targets.events("core", "9", Stage.STAGING)) == 3  # kept forever
    assert db.targets.events("core", "10", Stage.STAGING) == []


def test_publish_markers(db: StateDB) -> None:
    key = TargetKey(Stage.STAGING, "core", "9")
    others = [
        TargetKey(Stage.PRODUCTION, "core", "9"),
        TargetKey(Stage.STAGING, "core", "10"),
        TargetKey(Stage.STAGING, "cloud", "9"),
    ]
    assert not db.targets.is_publishing(key)
    db.targets.mark_publishing(key, "SIG-core-9-20261125.0")
    assert db.targets.is_publishing(key)
    assert not any(db.targets.is_publishing(k) for k in others)
    db.targets.mark_publishing(key, "SIG-core-9-20261126.0")  # a second attempt
    db.targets.mark_publishing(others[0], None)  # its inventory was rebuilt from the tree
    assert db.targets.is_publishing(key)
    assert db.targets.is_publishing(others[0])
    db.targets.published(key)
    assert not db.targets.is_publishing(key)
    assert db.targets.is_publishing(others[0])  # only that target's marker goes
    db.targets.published(key)  # finishing twice is fine
    db.targets.published(others[0])
    assert not any(db.targets.is_publishing(k) for k in [key, *others])


# --- inventory ---------------------------------------------------------------


def test_inventory_round_trip_upsert_delete(db: StateDB) -> None:
    full = InventoryEntry(
        "9/core/x86_64/repodata/repomd.xml", InventoryKind.FILE, 3000, 17, 42, "sha256:ab"
    )
    link = InventoryEntry("9/core/latest", InventoryKind.LINK, 9, 18, 43, None)
    folder = InventoryEntry("9/core", InventoryKind.DIR, 4096, 19, 44, None)
    db.inventory.apply_changes(Stage.PRODUCTION, [full, link, folder], [])
    got = db.inventory.entries(Stage.PRODUCTION)
    assert got == {e.relpath: e for e in (full, link, folder)}
    assert all(type(e.kind) is InventoryKind for e in got.values())
    changed = InventoryEntry(full.relpath, InventoryKind.FILE, 3100, 20, 45, "sha256:cd")
    db.inventory.apply_changes(Stage.PRODUCTION, [changed], [link.relpath, "never/there"])
    assert db.inventory.entries(Stage.PRODUCTION) == {
        changed.relpath: changed,
        folder.relpath: folder,
    }
    # a path both deleted and upserted ends up present
    db.inventory.apply_changes(Stage.PRODUCTION, [link], [link.relpath])
    assert link.relpath in db.inventory.entries(Stage.PRODUCTION)
    assert db.inventory.entries(Stage.STAGING) == {}


def test_inventory_rejects_unknown_kind_atomically(db: StateDB) -> None:
    db.inventory.apply_changes(Stage.STAGING, [entry("a")], [])
    with pytest.raises(ValueError, match="InventoryKind"):
        db.inventory.apply_changes(Stage.STAGING, [entry("b"), entry("c", kind="x")], ["a"])
    assert set(db.inventory.entries(Stage.STAGING)) == {"a"}
    with pytest.raises(ValueError, match="InventoryKind"):
        db.inventory.replace(Stage.STAGING, "", [entry("b"), entry("c", kind="x")])
    assert set(db.inventory.entries(Stage.STAGING)) == {"a"}


def test_inventory_prefix_isolation(db: StateDB) -> None:
    paths = [
        "9/core/a",
        "9/core/b/c",
        "9/core",
        "9/corex/a",
        "9/cor",
        "10/core/a",
        "9/core/\U0010ffff",
        "9/core/\u00e9t\u00e9",
        "9/core0",
    ]
    inventory = db.inventory
    inventory.apply_changes(Stage.PRODUCTION, [entry(p) for p in paths], [])
    inventory.apply_changes(Stage.STAGING, [entry("9/core/a")], [])
    assert set(inventory.entries(Stage.PRODUCTION, "9/core/")) == {
        "9/core/a",
        "9/core/b/c",
        "9/core/\U0010ffff",
        "9/core/\u00e9t\u00e9",
    }
    assert set(inventory.entries(Stage.PRODUCTION, "9/core")) == {
        p for p in paths if p.startswith("9/core")
    }
    assert set(inventory.entries(Stage.PRODUCTION, "\U0010ffff")) == set()
    assert set(inventory.entries(Stage.PRODUCTION, "")) == set(paths)

    inventory.replace(Stage.PRODUCTION, "9/core/", [entry("9/core/new", 5)])
    after = inventory.entries(Stage.PRODUCTION)
    assert set(after) == {"9/core/new", "9/core", "9/corex/a", "9/cor", "10/core/a", "9/core0"}
    assert after["9/core/new"].size == 5
    assert set(inventory.entries(Stage.STAGING)) == {"9/core/a"}

    with pytest.raises(ValueError, match="not under"):
        inventory.replace(Stage.PRODUCTION, "9/core/", [entry("9/core/x"), entry("9/other")])
    assert inventory.entries(Stage.PRODUCTION) == after  # rolled back

    inventory.replace(Stage.PRODUCTION, "", [entry("only")])
    assert set(inventory.entries(Stage.PRODUCTION)) == {"only"}
    assert set(inventory.entries(Stage.STAGING)) == {"9/core/a"}


def test_inventory_100k_rows_round_trip(db: StateDB) -> None:
    """A large inventory round-trips (how fast it does is bench/'s business; PostgreSQL
    takes a fifth of it, to keep the suite fast)."""
    n = 100_000 if db.dialect is Dialect.SQLITE else 20_000
    entries = [
        InventoryEntry(
            f"9/core/x86_64/core-common/Packages/{i % 26:02}/pkg-{i}-1.0-1.el9.x86_64.rpm",
            InventoryKind.FILE,
            i,
            1_700_000_000_000_000_000 + i,
            i,
            f"{i:064x}",
        )
        for i in range(n)
    ]
    db.inventory.apply_changes(Stage.PRODUCTION, entries, [])
    got = db.inventory.entries(Stage.PRODUCTION, "9/core/")
    assert len(got) == n
    assert got[entries[12345].relpath] == entries[12345]
    db.inventory.apply_changes(
        Stage.PRODUCTION, entries[: n // 2], [e.relpath for e in entries[n // 2 :]]
    )
    assert len(db.inventory.entries(Stage.PRODUCTION)) == n // 2
    db.inventory.replace(Stage.PRODUCTION, "9/core/", entries)
    assert db.inventory.entries(Stage.PRODUCTION) == {e.relpath: e for e in entries}


def test_listing_changes_and_digest(db: StateDB) -> None:
    files = [entry("9/core/a", 10), entry("9/core/b", 20), entry("9/other/c", 30)]
    db.inventory.apply_changes(Stage.PRODUCTION, files, [])
    db.inventory.apply_changes(Stage.STAGING, [entry("9/core/s")], [])
    assert db.inventory.listing_changes(Stage.PRODUCTION) == frozenset(
        {"9/core/a", "9/core/b", "9/other/c"}
    )
    assert db.inventory.listing_changes(Stage.STAGING) == frozenset()  # not a listed stage
    assert db.inventory.listing(Stage.PRODUCTION, "9/core/") == [
        ("a", "f", 10, 1_700_000_000, None),
        ("b", "f", 20, 1_700_000_000, None),
    ]
    assert db.inventory.listing_of(Stage.PRODUCTION, "9/core/", ["9/core/b", "9/core/gone"]) == [
        ("b", "f", 20, 1_700_000_000, None)
    ]
    with pytest.raises(ValueError, match="not under"):
        db.inventory.listing_of(Stage.PRODUCTION, "9/core/", ["9/other/c"])

    assert db.inventory.listing_digest(Stage.PRODUCTION) is None
    db.inventory.listing_written(Stage.PRODUCTION, "d1")
    assert db.inventory.listing_changes(Stage.PRODUCTION) == frozenset()
    assert db.inventory.listing_digest(Stage.PRODUCTION) == "d1"
    db.inventory.apply_changes(Stage.PRODUCTION, [], ["9/core/a"])
    assert db.inventory.listing_changes(Stage.PRODUCTION) == frozenset({"9/core/a"})
    db.inventory.listing_written(Stage.PRODUCTION, "d2")
    assert db.inventory.listing_digest(Stage.PRODUCTION) == "d2"
    db.inventory.replace(Stage.PRODUCTION, "9/core/", [entry("9/core/z")])
    assert db.inventory.listing_changes(Stage.PRODUCTION) is None  # unknown: whole lists
    assert db.inventory.listing_digest(Stage.STAGING) is None


# --- pending deletions -------------------------------------------------------


def test_pending_add_due_remove_cancel(db: StateDB) -> None:
    pending = db.pending
    later, soon = T0 + timedelta(days=2), T0 + timedelta(days=1)
    pending.add(Stage.PRODUCTION, ["a", "b", "a"], later, "superseded")
    pending.add(Stage.PRODUCTION, ["b", "c"], soon, "repo dropped")  # b moves earlier
    pending.add(Stage.PRODUCTION, ["a"], T0 + timedelta(days=9), "again")  # a stays
    pending.add(Stage.STAGING, ["a"], later, "superseded")
    production = pending.all(Stage.PRODUCTION)
    assert [(p.relpath, p.due_at, p.reason) for p in production] == [
        ("b", soon, "repo dropped"),
        ("c", soon, "repo dropped"),
        ("a", later, "superseded"),
    ]
    assert all(isinstance(p, PendingDeletion) and p.stage is Stage.PRODUCTION for p in production)
    assert len(pending.all()) == 4
    assert pending.due(T0) == []
    assert [p.relpath for p in pending.due(soon)] == ["b", "c"]
    assert [(p.stage, p.relpath) for p in pending.due(later)] == [
        (Stage.PRODUCTION, "b"),
        (Stage.PRODUCTION, "c"),
        (Stage.PRODUCTION, "a"),
        (Stage.STAGING, "a"),
    ]
    pending.remove([p.id for p in pending.due(soon)])
    pending.cancel(Stage.PRODUCTION, ["a", "not-pending"])
    assert pending.all(Stage.PRODUCTION) == []
    assert [p.relpath for p in pending.all(Stage.STAGING)] == ["a"]
    pending.remove([])


# --- statuses and upstream cache -----------------------------------------------


def test_statuses_are_replaced_and_keep_order(db: StateDB) -> None:
    def status(stage: Stage, state: TargetState) -> TargetStatus:
        return TargetStatus("core", "9", stage, state, "SIG-core-9-20261125.0", None, "why", T0)

    first = [
        status(Stage.COMPOSE, TargetState.SYNCED),
        status(Stage.STAGING, TargetState.PROGRESSING),
    ]
    db.targets.set_statuses(first)
    assert db.targets.statuses() == first
    second = [
        status(Stage.PRODUCTION, TargetState.BLOCKED),
        status(Stage.COMPOSE, TargetState.SYNCED),
        TargetStatus("cloud", "10", Stage.STAGING, TargetState.FAILED, None, "x", "boom", T0),
    ]
    db.targets.set_statuses(second)
    assert db.targets.statuses() == second
    assert all(
        type(s.stage) is Stage and type(s.state) is TargetState for s in db.targets.statuses()
    )
    with pytest.raises(ValueError, match="same target"):
        db.targets.set_statuses(
            [
                status(Stage.COMPOSE, TargetState.SYNCED),
                status(Stage.COMPOSE, TargetState.OUT_OF_SYNC),
            ]
        )
    assert db.targets.statuses() == second
    db.targets.set_statuses([])
    assert db.targets.statuses() == []


def test_upstream_cache_round_trip(db: StateDB) -> None:
    url = "https://cbs.example.org/repos/core9/x86_64/repodata/repomd.xml"
    other = "https://cbs.example.org/repos/core9/aarch64/repodata/repomd.xml"
    assert db.sources.upstream_cache(url) is None
    first = UpstreamCacheEntry(url, '"etag-1"', "Wed, 25 Nov 2026 10:00:00 GMT", "ab" * 32, T0)
    db.sources.set_upstream_cache([first])
    assert db.sources.upstream_cache(url) == first
    second = UpstreamCacheEntry(url, None, None, "cd" * 32, T0 + timedelta(hours=1))
    beside = UpstreamCacheEntry(other, '"e"', None, "ef" * 32, T0)
    db.sources.set_upstream_cache([second, beside])  # several in one write
    assert db.sources.upstream_cache(url) == second
    assert db.sources.upstream_cache(other) == beside
    db.sources.set_upstream_cache([])


# --- concurrency and crashes -----------------------------------------------------


def test_second_connection_sees_committed_writes(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as writer, StateDB.open(tmp_path) as reader:
        writer.sources.set_source(SourceRecord(good_revision="v", problems=("p",)))
        assert reader.sources.source() == SourceRecord(good_revision="v", problems=("p",))


def test_failed_write_rolls_back(db: StateDB) -> None:
    def boom() -> list[InventoryEntry]:
        raise RuntimeError("generator failed")

    def upserts() -> Iterator[InventoryEntry]:
        yield entry("x")
        boom()

    with pytest.raises(RuntimeError):
        db.inventory.apply_changes(Stage.STAGING, upserts(), [])
    assert db.inventory.entries(Stage.STAGING) == {}
    db.sources.set_drift_checked(T0)  # the connection still works
    assert db.sources.drift_checked_at() == T0


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from reconciler.state import DriftFinding, InventoryEntry, StateDB, TargetKey
    from reconciler.vocabulary import Dialect, DriftKind, InventoryKind, Stage

    db = StateDB.open(Path(sys.argv[1]))
    i = 0
    while True:
        db.inventory.apply_changes(
            Stage.PRODUCTION,
            (InventoryEntry(f"{i}/{j:04}", InventoryKind.FILE, j, j, j, None) for j in range(500)),
            [],
        )
        db.sources.set_drift(
            TargetKey(Stage.PRODUCTION, "core", str(i)),
            [DriftFinding(f"{i}/a", DriftKind.CHANGED), DriftFinding(f"{i}/b", DriftKind.MISSING)],
        )
        print(i, flush=True)
        i += 1
    """
)


def child_drift(i: int) -> tuple[DriftFinding, ...]:
    return (DriftFinding(f"{i}/a", DriftKind.CHANGED), DriftFinding(f"{i}/b", DriftKind.MISSING))


def test_survives_sigkill_during_writes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    committed = -1
    try:
        while committed < 30:
            line = child.stdout.readline()
            assert line, "child died before writing"
            committed = int(line)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert Path(tmp_path / "state.db-wal").exists()  # killed, never closed
    with StateDB.open(tmp_path, check=True) as db:
        for i in range(committed + 1):
            assert db.sources.drift(TargetKey(Stage.PRODUCTION, "core", str(i))) == child_drift(i)
            assert len(db.inventory.entries(Stage.PRODUCTION, f"{i}/")) == 500
        # later iterations (the child ran ahead of its pipe) are each whole or absent
        i = committed + 1
        while (count := len(db.inventory.entries(Stage.PRODUCTION, f"{i}/"))) == 500:
            i += 1
        assert count == 0
        assert db.sources.drift(TargetKey(Stage.PRODUCTION, "core", str(i))) == ()
        assert db._db._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


# --- upgrades ------------------------------------------------------------------


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "state.db")
    for statement in MIGRATIONS[0]:
        assert isinstance(statement, str)
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO inventory (stage, relpath, kind, size, mtime_ns, ino, checksum)"
        " VALUES ('production', 'a/b', 'f', 3, 5, 7, NULL)"
    )
    conn.commit()
    conn.close()
    with StateDB.open(tmp_path) as db:
        assert db.schema_version == len(MIGRATIONS) == SCHEMA_VERSION == 9
        entry = db.inventory.entries(Stage.PRODUCTION)["a/b"]
        assert (entry.size, entry.mtime_ns, entry.ino, entry.ctime_ns) == (3, 5, 7, 0)
        assert entry.kind is InventoryKind.FILE
        # 2 -> 3: what changed since the file lists were written is unknown: whole lists
        assert db.inventory.listing_changes(Stage.PRODUCTION) is None
        assert db.inventory.listing_changes(Stage.STAGING) == frozenset()
        # 3 -> 4: an empty meta table leaves nothing known, and goes
        assert "meta" not in table_names(db._db._conn)
        assert db.sources.source() == SourceRecord()
        assert db.sources.drift_checked_at() is None
        assert db.inventory.listing_digest(Stage.PRODUCTION) is None


def schema3_copy(tmp_path: Path) -> Path:
    """A copy of the schema-3 fixture in a state directory of its own."""
    assert not Path(f"{SCHEMA3_FIXTURE}-wal").exists()  # the fixture is the file alone
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    shutil.copyfile(SCHEMA3_FIXTURE, state_dir / "state.db")
    return state_dir


def test_schema3_fixture_is_a_schema_3_database(tmp_path: Path) -> None:
    state_dir = schema3_copy(tmp_path)
    conn = raw(state_dir / "state.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert "meta" in table_names(conn)
        assert not {"source", "drift", "publishing", "listings"} & table_names(conn)
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()
    assert sorted(meta) == [
        "checkout_revision",
        "drift/production/core/9",
        "drift/staging/cloud/10",
        "drift_checked_at",
        "last_applied_revision",
        "last_good_revision",
        "listing_digest:production",
        "publishing/production/cloud/10",
        "publishing/staging/core/9",
        "source_problems",
    ]
    assert meta["drift/production/core/9"] == (
        '["changed: mirror/pub/sig/9/core/x", "unexpected: mirror/pub/sig/9/core/y"]'
    )
    assert meta["drift_checked_at"] == "2026-11-25T14:00:00.123456+00:00"
    assert meta["publishing/production/cloud/10"] == "rebuilt"


def upgraded_contents(db: StateDB) -> dict[str, object]:
    """Everything the repositories read back from the upgraded fixture."""
    keys = [
        TargetKey(stage, sig, release)
        for stage in (Stage.STAGING, Stage.PRODUCTION)
        for sig, release in (("core", "9"), ("cloud", "10"))
    ]
    return {
        "source": db.sources.source(),
        "drift": {k: db.sources.drift(k) for k in keys},
        "drift_checked_at": db.sources.drift_checked_at(),
        "publishing": {k: db.targets.is_publishing(k) for k in keys},
        "history": db.history.entries(),
        "running": db.history.running(),
        "targets": db.targets.all(),
        "events": {k: db.targets.events(k.sig, k.release, k.stage) for k in keys},
        "statuses": db.targets.statuses(),
        "inventory": {s: db.inventory.entries(s) for s in (Stage.STAGING, Stage.PRODUCTION)},
        "listing_changes": {
            s: db.inventory.listing_changes(s) for s in (Stage.STAGING, Stage.PRODUCTION)
        },
        "listing_digest": {
            s: db.inventory.listing_digest(s) for s in (Stage.STAGING, Stage.PRODUCTION)
        },
        "pending": db.pending.all(),
        "upstream": [
            db.sources.upstream_cache(
                f"https://cbs.example.org/repos/{r}/x86_64/repodata/repomd.xml"
            )
            for r in ("core9", "cloud10", "virt9")
        ],
    }


def test_upgrade_from_a_real_schema_3_database(tmp_path: Path) -> None:
    state_dir = schema3_copy(tmp_path)
    hours = timedelta(hours=1)
    with StateDB.open(state_dir) as db:
        assert db.schema_version == SCHEMA_VERSION == 9
        assert "meta" not in table_names(db._db._conn)
        got = upgraded_contents(db)
        assert db._db._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"

    # the source, the drift and the publish markers, out of meta and into their tables
    assert got["source"] == SourceRecord(
        good_revision="good0123",
        applied_revision="applied0123",
        checkout_revision="checkout0123",
        problems=(
            "SourceUnavailable: git fetch failed: timed out",
            "InvalidSpec at 0123456789ab: sigs.core: unknown key 'relases'",
        ),
    )
    drift = got["drift"]
    assert isinstance(drift, dict)
    assert drift == {
        TargetKey(Stage.STAGING, "core", "9"): (),
        TargetKey(Stage.STAGING, "cloud", "10"): (DriftFinding("10/cloud/z", DriftKind.MISSING),),
        TargetKey(Stage.PRODUCTION, "core", "9"): (
            DriftFinding("mirror/pub/sig/9/core/x", DriftKind.CHANGED),
            DriftFinding("mirror/pub/sig/9/core/y", DriftKind.UNEXPECTED),
        ),
        TargetKey(Stage.PRODUCTION, "cloud", "10"): (),
    }
    assert all(type(d.what) is DriftKind for found in drift.values() for d in found)
    checked = got["drift_checked_at"]
    assert checked == T0 + 4 * hours
    assert isinstance(checked, datetime) and checked.tzinfo == UTC
    assert got["publishing"] == {
        TargetKey(Stage.STAGING, "core", "9"): True,  # a compose id
        TargetKey(Stage.STAGING, "cloud", "10"): False,
        TargetKey(Stage.PRODUCTION, "core", "9"): False,
        TargetKey(Stage.PRODUCTION, "cloud", "10"): True,  # "rebuilt"
    }
    assert got["listing_digest"] == {
        Stage.STAGING: None,
        Stage.PRODUCTION: "0123456789abcdef" * 4,
    }
    assert got["listing_changes"] == {
        Stage.STAGING: frozenset(),
        Stage.PRODUCTION: frozenset({"9/core/x86_64/Packages/a-1.rpm"}),
    }

    # the tables schema 4 kept as they were, read with enums
    history = got["history"]
    assert isinstance(history, list)
    assert history == [
        HistoryEntry(3, "publish", "cloud", "10", Stage.STAGING, "SIG-cloud-10-20261126.0",
                     "new compose", "rev2", "Bob <bob@example.org>", T0 + 24 * hours, None,
                     Result.RUNNING, None, 0, 0),
        HistoryEntry(2, "publish", "core", "9", Stage.PRODUCTION, "SIG-core-9-20261125.0",
                     "promoted", "rev1", None, T0 + hours, T0 + 2 * hours, Result.FAILED,
                     "disk full", 0, 0),
        HistoryEntry(1, "compose", "core", "9", None, "SIG-core-9-20261125.0", "spec changed",
                     "rev1", "Ann <ann@example.org>", T0, T0 + timedelta(minutes=5), Result.OK,
                     None, 123456, 42),
    ]  # fmt: skip
    assert [type(h.result) for h in history] == [Result] * 3
    assert [type(h.stage) for h in history] == [Stage, Stage, type(None)]
    assert got["running"] == history[:1]

    targets = got["targets"]
    assert isinstance(targets, list)
    assert targets == [
        TargetRecord("cloud", "10", Stage.PRODUCTION, "SIG-cloud-10-20261120.0",
                     T0 - timedelta(days=5), "r"),
        TargetRecord("core", "9", Stage.PRODUCTION, "SIG-core-9-20261124.0", T0 + 3 * hours,
                     None),
        TargetRecord("core", "9", Stage.STAGING, "SIG-core-9-20261125.0", T0 + hours, "rev1"),
    ]  # fmt: skip
    assert all(type(t.stage) is Stage for t in targets)
    assert got["events"] == {
        TargetKey(Stage.STAGING, "core", "9"): [
            StageEvent("core", "9", Stage.STAGING, "SIG-core-9-20261124.0", T0),
            StageEvent("core", "9", Stage.STAGING, "SIG-core-9-20261125.0", T0 + hours),
        ],
        TargetKey(Stage.STAGING, "cloud", "10"): [],
        TargetKey(Stage.PRODUCTION, "core", "9"): [
            StageEvent("core", "9", Stage.PRODUCTION, "SIG-core-9-20261124.0", T0 + 3 * hours),
        ],
        TargetKey(Stage.PRODUCTION, "cloud", "10"): [
            StageEvent("cloud", "10", Stage.PRODUCTION, "SIG-cloud-10-20261120.0",
                       T0 - timedelta(days=5)),
        ],
    }  # fmt: skip

    statuses = got["statuses"]
    assert isinstance(statuses, list)
    assert statuses == [
        TargetStatus("core", "9", Stage.COMPOSE, TargetState.SYNCED, "SIG-core-9-20261125.0",
                     "SIG-core-9-20261125.0", "up to date", T0),
        TargetStatus("core", "9", Stage.PRODUCTION, TargetState.FAILED, "SIG-core-9-20261125.0",
                     "SIG-core-9-20261124.0", "disk full", T0 + 2 * hours),
        TargetStatus("cloud", "10", Stage.STAGING, TargetState.PROGRESSING,
                     "SIG-cloud-10-20261126.0", None, "publishing", T0 + 24 * hours),
    ]  # fmt: skip
    assert all(type(s.stage) is Stage and type(s.state) is TargetState for s in statuses)

    inventory = got["inventory"]
    assert isinstance(inventory, dict)
    f, link, d = InventoryKind.FILE, InventoryKind.LINK, InventoryKind.DIR
    assert inventory == {
        Stage.STAGING: {
            "9/core/x86_64/Packages/b-1.rpm": InventoryEntry(
                "9/core/x86_64/Packages/b-1.rpm", f, 5, 6, 7, None, 0
            ),
        },
        Stage.PRODUCTION: {
            e.relpath: e
            for e in [
                InventoryEntry("9/core", d, 4096, 1_000, 11, None, 1_500),
                InventoryEntry("9/core/latest", link, 9, 2_000, 12, None, 2_500),
                InventoryEntry(
                    "9/core/x86_64/repodata/repomd.xml", f, 3000, 3_000, 13, "ab" * 20, 3_500
                ),
                InventoryEntry("9/core/x86_64/Packages/a-1.rpm", f, 777, 4_000, 14, None, 4_500),
            ]
        },
    }
    assert {type(e.kind) for entries in inventory.values() for e in entries.values()} == {
        InventoryKind
    }

    pending = got["pending"]
    assert isinstance(pending, list)
    assert [(p.stage, p.relpath, p.due_at, p.reason) for p in pending] == [
        (Stage.STAGING, "9/core/x86_64/Packages/old-3.rpm", T0, "repo dropped"),
        (Stage.PRODUCTION, "9/core/x86_64/Packages/old-1.rpm", T0 + 48 * hours, "superseded"),
        (Stage.PRODUCTION, "9/core/x86_64/Packages/old-2.rpm", T0 + 48 * hours, "superseded"),
    ]
    assert all(type(p.stage) is Stage for p in pending)

    assert got["upstream"] == [
        UpstreamCacheEntry(
            "https://cbs.example.org/repos/core9/x86_64/repodata/repomd.xml",
            '"etag-1"',
            "Wed, 25 Nov 2026 10:00:00 GMT",
            "ab" * 32,
            T0,
        ),
        UpstreamCacheEntry(
            "https://cbs.example.org/repos/cloud10/x86_64/repodata/repomd.xml",
            None,
            None,
            "cd" * 32,
            T0 + timedelta(minutes=1),
        ),
        None,
    ]


def test_a_second_open_of_the_upgraded_schema_3_database_is_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = schema3_copy(tmp_path)
    with StateDB.open(state_dir) as db:
        first = upgraded_contents(db)
        dump = list(db._db._conn.iterdump())

    def migrate_again(self: Database) -> None:
        raise AssertionError(f"{self.path} migrated twice")

    monkeypatch.setattr(Database, "_migrate", migrate_again)
    with StateDB.open(state_dir, check=True) as db:
        assert db.schema_version == SCHEMA_VERSION
        assert upgraded_contents(db) == first
        assert list(db._db._conn.iterdump()) == dump


def test_the_upgraded_schema_3_database_keeps_working(tmp_path: Path) -> None:
    state_dir = schema3_copy(tmp_path)
    with StateDB.open(state_dir) as db:
        assert db.history.mark_interrupted(T0 + 30 * timedelta(hours=1)) == 1
        assert start(db) == 4  # ids go on
        staging = TargetKey(Stage.STAGING, "core", "9")
        db.targets.published(staging)
        assert not db.targets.is_publishing(staging)
        db.sources.set_source(SourceRecord(good_revision="new", applied_revision="new"))
        db.sources.set_drift(TargetKey(Stage.PRODUCTION, "core", "9"), [])
        db.sources.set_drift_checked(T0 + timedelta(days=2))
        db.inventory.listing_written(Stage.PRODUCTION, "fresh")
    with StateDB.open(state_dir) as db:
        assert db.history.running()[0].id == 4
        assert db.history.entries(sig="cloud")[0].error == "interrupted"
        assert db.sources.source() == SourceRecord(good_revision="new", applied_revision="new")
        assert db.sources.drift(TargetKey(Stage.PRODUCTION, "core", "9")) == ()
        assert db.sources.drift(TargetKey(Stage.STAGING, "cloud", "10")) != ()
        assert db.sources.drift_checked_at() == T0 + timedelta(days=2)
        assert db.targets.is_publishing(TargetKey(Stage.PRODUCTION, "cloud", "10"))
        assert db.inventory.listing_digest(Stage.PRODUCTION) == "fresh"
        assert db.inventory.listing_changes(Stage.PRODUCTION) == frozenset()


def test_unmanaged_rows_are_replaced_per_walk_listed_and_summarised(tmp_path: Path) -> None:
    from reconciler.state import UnmanagedEntry

    prefix = "mirror/pub/sig/9/altarch/"
    img = UnmanagedEntry(
        prefix + "images/rpi.raw.xz", InventoryKind.FILE, 100, 2 * 10**9, 3 * 10**9, ignored=True
    )
    stray = UnmanagedEntry(prefix + "notes.txt", InventoryKind.FILE, 7, 10**9, 10**9)
    key = UnmanagedEntry(prefix + "aarch64/altarch-common/RPM-GPG-KEY-Rocky-SIG-AltArch",
                         InventoryKind.FILE, 5, 10**9, 10**9)  # fmt: skip
    other = UnmanagedEntry("mirror/pub/sig/9/core/x", InventoryKind.FILE, 1, 0, 0)
    with StateDB.open(tmp_path) as db:
        db.inventory.listing_written(Stage.PRODUCTION, "d")
        db.unmanaged.replace(Stage.PRODUCTION, "mirror/pub/sig/9/core/", [other], T0)
        db.unmanaged.replace(Stage.PRODUCTION, prefix, [img, stray, key], T0)
        summary = db.unmanaged.summary(Stage.PRODUCTION, prefix)
        # the image matches publish.unmanaged: listed for mirrors, never reported
        assert (summary.files, summary.bytes, summary.walked_at) == (2, 12, T0)
        assert summary.examples == (key.relpath, stray.relpath)
        rows = db.unmanaged.listing(Stage.PRODUCTION, "mirror/pub/sig/")
        assert [r[0] for r in rows] == [
            "9/altarch/aarch64/altarch-common/RPM-GPG-KEY-Rocky-SIG-AltArch",
            "9/altarch/images/rpi.raw.xz", "9/altarch/notes.txt", "9/core/x",
        ]  # fmt: skip
        assert rows[1][3] == 3  # max(mtime, ctime) in seconds, as the inventory's rows
        assert db.inventory.listing_changes(Stage.PRODUCTION) == {
            img.relpath,
            stray.relpath,
            key.relpath,
            other.relpath,
        }
        db.inventory.listing_written(Stage.PRODUCTION, "d2")
        # a walk that finds the same is no change; one that lost a file notes it
        db.unmanaged.replace(Stage.PRODUCTION, prefix, [img, stray, key], T0)
        assert db.inventory.listing_changes(Stage.PRODUCTION) == frozenset()
        db.unmanaged.replace(Stage.PRODUCTION, prefix, [img, key], T0 + timedelta(hours=1))
        assert db.inventory.listing_changes(Stage.PRODUCTION) == {stray.relpath}
        db.unmanaged.forget(Stage.PRODUCTION, [key.relpath, "not/there"])
        assert set(db.unmanaged.entries(Stage.PRODUCTION, prefix)) == {img.relpath}
        assert db.unmanaged.summary(Stage.PRODUCTION, prefix).files == 0
        with pytest.raises(ValueError, match="not under"):
            db.unmanaged.replace(Stage.PRODUCTION, prefix, [other], T0)


WRITER = """
import sys
from reconciler.state import InventoryEntry, StateDB
from reconciler.vocabulary import InventoryKind, Stage
with StateDB.open(__import__("pathlib").Path(sys.argv[1])) as db:
    print("writing", flush=True)
    for i in range(1_000_000):
        entry = InventoryEntry(f"a/{i}/" + "x" * 200, InventoryKind.FILE, 1, 1, 1, None)
        db.inventory.apply_changes(Stage.PRODUCTION, [entry], [])
"""


def test_opening_while_another_process_writes_is_never_called_truncated(tmp_path: Path) -> None:
    """``status`` opens the database while ``run`` writes: the length check must not take
    a commit between its checkpoint and its page count for a truncated file (a third
    of such opens said "damaged ... run state rebuild" before)."""
    StateDB.open(tmp_path).close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = [sys.executable, "-c", WRITER, str(tmp_path)]
    writers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    try:
        for w in writers:
            assert w.stdout is not None and w.stdout.readline().strip() == "writing"
        for _ in range(400):
            StateDB.open(tmp_path).close()
    finally:
        for w in writers:
            w.kill()
            w.communicate()


def test_processes_opening_a_new_state_together_all_open_it(tmp_path: Path) -> None:
    """Several openers of a state that does not exist yet (``run`` and ``worker``
    starting on one host): the switch to WAL mode meets "locked" without SQLite's busy
    handler while another opener holds the new file; it waits as any other lock does.
    (Before: about one round in 30 failed at once with "locked ... (waited 30 s)".)"""
    import threading

    for round_ in range(60):
        where = tmp_path / f"state-{round_}"
        errors: list[BaseException] = []

        def opener(where: Path = where, errors: list[BaseException] = errors) -> None:
            try:
                StateDB.open(where).close()
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, (round_, errors)
