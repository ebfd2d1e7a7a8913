"""The state database: real SQLite files, crashes and damage included."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.errors import StateError
from reconciler.state import (
    SCHEMA_VERSION,
    HistoryEntry,
    InventoryEntry,
    PendingDeletion,
    StageEvent,
    StateDB,
    TargetRecord,
    TargetStatus,
    UpstreamCacheEntry,
)

T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
REBUILD_HINT = "run `reconciler state rebuild` to rebuild what can be rebuilt from the trees"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    with StateDB.open(tmp_path / "state") as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def start(db: StateDB, sig: str = "core", at: datetime = T0, **kw: object) -> int:
    args: dict[str, object] = {
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
    return db.start_action(**args)  # type: ignore[arg-type]


def entry(relpath: str, size: int = 1, kind: str = "f") -> InventoryEntry:
    return InventoryEntry(relpath, kind, size, 1_700_000_000_000_000_000 + size, 1000 + size, None)


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


def test_connection_settings(db: StateDB) -> None:
    conn = db._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as db:
        db.set_meta("last_good_revision", "abc")
    with StateDB.open(tmp_path, create=False) as db:
        assert db.get_meta("last_good_revision") == "abc"
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
        db.apply_inventory_changes("production", [entry(f"p/{i:06}") for i in range(20000)], [])
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
        db.apply_inventory_changes("production", [entry(f"p/{i:06}") for i in range(20000)], [])
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
        db.apply_inventory_changes("production", [entry(f"p/{i:06}") for i in range(20000)], [])
        db._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        db.apply_inventory_changes("production", [entry("q/1")], [])
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


# --- meta --------------------------------------------------------------------


def test_meta_set_get_delete(db: StateDB) -> None:
    assert db.get_meta("last_applied_revision") is None
    db.set_meta("last_applied_revision", "r1")
    db.set_meta("last_applied_revision", "r2")
    db.set_meta("source_error", "fetch failed")
    assert db.get_meta("last_applied_revision") == "r2"
    db.set_meta("source_error", None)
    assert db.get_meta("source_error") is None
    db.set_meta("source_error", None)  # deleting nothing is fine


# --- history -----------------------------------------------------------------


def test_start_and_finish_action_round_trip(db: StateDB) -> None:
    other_zone = timezone(timedelta(hours=2))
    action_id = start(
        db,
        action="publish",
        stage="staging",
        compose_id="SIG-core-9-20261125.0",
        at=T0.astimezone(other_zone),
    )
    (running,) = db.history()
    assert running == HistoryEntry(
        id=action_id,
        action="publish",
        sig="core",
        release="9",
        stage="staging",
        compose_id="SIG-core-9-20261125.0",
        reason="spec changed",
        revision="abc123",
        author="Ann <ann@example.org>",
        started_at=T0,
        finished_at=None,
        result="running",
        error=None,
        bytes=0,
        files=0,
    )
    assert running.started_at.utcoffset() == timedelta(0)
    db.finish_action(
        action_id, result="ok", bytes=12345, files=7, finished_at=T0 + timedelta(minutes=3)
    )
    (done,) = db.history()
    assert done.result == "ok"
    assert (done.bytes, done.files, done.error) == (12345, 7, None)
    assert done.finished_at == T0 + timedelta(minutes=3)
    assert done.finished_at.tzinfo == UTC


def test_finish_action_rejects_unknown_result_and_id(db: StateDB) -> None:
    action_id = start(db)
    with pytest.raises(ValueError, match="running"):
        db.finish_action(action_id, result="running", finished_at=T0)
    with pytest.raises(StateError, match="no action 999"):
        db.finish_action(999, result="ok", finished_at=T0)


def test_history_newest_first_with_limit_and_sig_filter(db: StateDB) -> None:
    ids = [start(db, sig=sig, at=T0) for sig in ["core", "cloud", "core", "virt", "core"]]
    db.finish_action(ids[1], result="failed", error="boom", finished_at=T0)
    assert [h.id for h in db.history()] == ids[::-1]
    assert [h.id for h in db.history(2)] == ids[::-1][:2]
    assert [h.id for h in db.history(sig="core")] == [ids[4], ids[2], ids[0]]
    assert [h.id for h in db.history(1, sig="core")] == [ids[4]]
    assert db.history(sig="nobody") == []
    failed = db.history(sig="cloud")[0]
    assert (failed.result, failed.error) == ("failed", "boom")


def test_interrupted_actions_after_crash(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as db:
        done = start(db)
        db.finish_action(done, result="ok", finished_at=T0)
        crashed = start(db, action="publish", stage="production")
    # the process "crashed": the action was never finished
    with StateDB.open(tmp_path) as db:
        assert [h.id for h in db.interrupted_actions()] == [crashed]
        assert db.mark_interrupted(T0 + timedelta(hours=1)) == 1
        assert db.interrupted_actions() == []
        entry_ = db.history(1)[0]
        assert (entry_.id, entry_.result, entry_.error) == (crashed, "failed", "interrupted")
        assert entry_.finished_at == T0 + timedelta(hours=1)
        assert db.history()[1].result == "ok"
        assert db.mark_interrupted(T0) == 0


def test_history_ids_are_never_reused(db: StateDB) -> None:
    first = start(db)
    db._conn.execute("DELETE FROM history")
    assert start(db) > first


# --- targets -----------------------------------------------------------------


def test_targets_round_trip_and_stage_events(db: StateDB) -> None:
    assert db.target("core", "9", "staging") is None
    first = TargetRecord("core", "9", "staging", "SIG-core-9-20261125.0", T0, "rev1")
    second = TargetRecord(
        "core", "9", "staging", "SIG-core-9-20261126.0", T0 + timedelta(days=1), None
    )
    prod = TargetRecord("core", "9", "production", "SIG-core-9-20261125.0", T0, "rev1")
    db.set_target(first)
    db.set_target(prod)
    assert db.target("core", "9", "staging") == first
    db.set_target(second)
    db.set_target(second)  # re-running a finished publish adds nothing
    assert db.target("core", "9", "staging") == second
    assert db.targets() == [prod, second]
    assert db.stage_events("core", "9", "staging") == [
        StageEvent("core", "9", "staging", "SIG-core-9-20261125.0", T0),
        StageEvent("core", "9", "staging", "SIG-core-9-20261126.0", T0 + timedelta(days=1)),
    ]
    db.set_target(first)  # a rollback is a publish too
    assert len(db.stage_events("core", "9", "staging")) == 3
    db.clear_target("core", "9", "staging")
    assert db.target("core", "9", "staging") is None
    assert db.targets() == [prod]
    assert len(db.stage_events("core", "9", "staging")) == 3  # kept forever
    assert db.stage_events("core", "10", "staging") == []


# --- inventory ---------------------------------------------------------------


def test_inventory_round_trip_upsert_delete(db: StateDB) -> None:
    full = InventoryEntry("9/core/x86_64/repodata/repomd.xml", "f", 3000, 17, 42, "sha256:ab")
    link = InventoryEntry("9/core/latest", "l", 9, 18, 43, None)
    folder = InventoryEntry("9/core", "d", 4096, 19, 44, None)
    db.apply_inventory_changes("production", [full, link, folder], [])
    assert db.inventory("production") == {e.relpath: e for e in (full, link, folder)}
    changed = InventoryEntry(full.relpath, "f", 3100, 20, 45, "sha256:cd")
    db.apply_inventory_changes("production", [changed], [link.relpath, "never/there"])
    assert db.inventory("production") == {changed.relpath: changed, folder.relpath: folder}
    # a path both deleted and upserted ends up present
    db.apply_inventory_changes("production", [link], [link.relpath])
    assert link.relpath in db.inventory("production")
    assert db.inventory("staging") == {}


def test_inventory_rejects_unknown_kind_atomically(db: StateDB) -> None:
    db.apply_inventory_changes("staging", [entry("a")], [])
    with pytest.raises(ValueError, match="kind"):
        db.apply_inventory_changes("staging", [entry("b"), entry("c", kind="x")], ["a"])
    assert set(db.inventory("staging")) == {"a"}


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
    db.apply_inventory_changes("production", [entry(p) for p in paths], [])
    db.apply_inventory_changes("staging", [entry("9/core/a")], [])
    assert set(db.inventory("production", "9/core/")) == {
        "9/core/a",
        "9/core/b/c",
        "9/core/\U0010ffff",
        "9/core/\u00e9t\u00e9",
    }
    assert set(db.inventory("production", "9/core")) == {p for p in paths if p.startswith("9/core")}
    assert set(db.inventory("production", "\U0010ffff")) == set()
    assert set(db.inventory("production", "")) == set(paths)

    db.replace_inventory("production", "9/core/", [entry("9/core/new", 5)])
    after = db.inventory("production")
    assert set(after) == {"9/core/new", "9/core", "9/corex/a", "9/cor", "10/core/a", "9/core0"}
    assert after["9/core/new"].size == 5
    assert set(db.inventory("staging")) == {"9/core/a"}

    with pytest.raises(ValueError, match="not under"):
        db.replace_inventory("production", "9/core/", [entry("9/core/x"), entry("9/other")])
    assert db.inventory("production") == after  # rolled back

    db.replace_inventory("production", "", [entry("only")])
    assert set(db.inventory("production")) == {"only"}
    assert set(db.inventory("staging")) == {"9/core/a"}


def test_inventory_100k_rows_is_fast(db: StateDB) -> None:
    n = 100_000
    entries = [
        InventoryEntry(
            f"9/core/x86_64/core-common/Packages/{i % 26:02}/pkg-{i}-1.0-1.el9.x86_64.rpm",
            "f",
            i,
            1_700_000_000_000_000_000 + i,
            i,
            f"{i:064x}",
        )
        for i in range(n)
    ]
    began = time.perf_counter()
    db.apply_inventory_changes("production", entries, [])
    inserted = time.perf_counter()
    got = db.inventory("production", "9/core/")
    read = time.perf_counter()
    assert len(got) == n
    assert got[entries[12345].relpath] == entries[12345]
    db.apply_inventory_changes(
        "production", entries[: n // 2], [e.relpath for e in entries[n // 2 :]]
    )
    db.replace_inventory("production", "9/core/", entries)
    done = time.perf_counter()
    assert len(db.inventory("production")) == n
    timings = (inserted - began, read - inserted, done - read)
    assert sum(timings) < 3.0, timings


# --- pending deletions -------------------------------------------------------


def test_pending_add_due_remove_cancel(db: StateDB) -> None:
    later, soon = T0 + timedelta(days=2), T0 + timedelta(days=1)
    db.add_pending("production", ["a", "b", "a"], later, "superseded")
    db.add_pending("production", ["b", "c"], soon, "repo dropped")  # b moves earlier
    db.add_pending("production", ["a"], T0 + timedelta(days=9), "again")  # a stays
    db.add_pending("staging", ["a"], later, "superseded")
    production = db.pending("production")
    assert [(p.relpath, p.due_at, p.reason) for p in production] == [
        ("b", soon, "repo dropped"),
        ("c", soon, "repo dropped"),
        ("a", later, "superseded"),
    ]
    assert all(isinstance(p, PendingDeletion) and p.stage == "production" for p in production)
    assert len(db.pending()) == 4
    assert db.due(T0) == []
    assert [p.relpath for p in db.due(soon)] == ["b", "c"]
    assert [(p.stage, p.relpath) for p in db.due(later)] == [
        ("production", "b"),
        ("production", "c"),
        ("production", "a"),
        ("staging", "a"),
    ]
    db.remove_pending([p.id for p in db.due(soon)])
    db.cancel_pending("production", ["a", "not-pending"])
    assert db.pending("production") == []
    assert [p.relpath for p in db.pending("staging")] == ["a"]
    db.remove_pending([])


# --- statuses and upstream cache -----------------------------------------------


def test_statuses_are_replaced_and_keep_order(db: StateDB) -> None:
    def status(stage: str, state: str) -> TargetStatus:
        return TargetStatus("core", "9", stage, state, "SIG-core-9-20261125.0", None, "why", T0)

    first = [status("compose", "Synced"), status("staging", "Progressing")]
    db.set_statuses(first)
    assert db.statuses() == first
    second = [
        status("production", "Blocked"),
        status("compose", "Synced"),
        TargetStatus("cloud", "10", "staging", "Failed", None, "x", "boom", T0),
    ]
    db.set_statuses(second)
    assert db.statuses() == second
    with pytest.raises(ValueError, match="same target"):
        db.set_statuses([status("compose", "Synced"), status("compose", "OutOfSync")])
    assert db.statuses() == second
    db.set_statuses([])
    assert db.statuses() == []


def test_upstream_cache_round_trip(db: StateDB) -> None:
    url = "https://cbs.example.org/repos/core9/x86_64/repodata/repomd.xml"
    assert db.upstream_cache(url) is None
    first = UpstreamCacheEntry(url, '"etag-1"', "Wed, 25 Nov 2026 10:00:00 GMT", "ab" * 32, T0)
    db.set_upstream_cache(first)
    assert db.upstream_cache(url) == first
    second = UpstreamCacheEntry(url, None, None, "cd" * 32, T0 + timedelta(hours=1))
    db.set_upstream_cache(second)
    assert db.upstream_cache(url) == second


# --- concurrency and crashes -----------------------------------------------------


def test_second_connection_sees_committed_writes(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as writer, StateDB.open(tmp_path) as reader:
        writer.set_meta("k", "v")
        assert reader.get_meta("k") == "v"


def test_failed_write_rolls_back(db: StateDB) -> None:
    def boom() -> list[InventoryEntry]:
        raise RuntimeError("generator failed")

    def upserts() -> Iterator[InventoryEntry]:
        yield entry("x")
        boom()

    with pytest.raises(RuntimeError):
        db.apply_inventory_changes("staging", upserts(), [])
    assert db.inventory("staging") == {}
    db.set_meta("still", "works")
    assert db.get_meta("still") == "works"


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from reconciler.state import InventoryEntry, StateDB

    db = StateDB.open(Path(sys.argv[1]))
    i = 0
    while True:
        db.apply_inventory_changes(
            "production",
            (InventoryEntry(f"{i}/{j:04}", "f", j, j, j, None) for j in range(500)),
            [],
        )
        db.set_meta(f"k{i}", str(i))
        print(i, flush=True)
        i += 1
    """
)


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
            assert db.get_meta(f"k{i}") == str(i)
            assert len(db.inventory("production", f"{i}/")) == 500
        # later iterations (the child ran ahead of its pipe) are each whole or absent
        i = committed + 1
        while (count := len(db.inventory("production", f"{i}/"))) == 500:
            i += 1
        assert count == 0
        assert db.get_meta(f"k{i}") is None
        assert db._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    import sqlite3

    from reconciler.state import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "state.db")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO inventory (stage, relpath, kind, size, mtime_ns, ino, checksum)"
        " VALUES ('production', 'a/b', 'f', 3, 5, 7, NULL)"
    )
    conn.commit()
    conn.close()
    with StateDB.open(tmp_path) as db:
        assert db.schema_version == len(MIGRATIONS) == 3
        entry = db.inventory("production")["a/b"]
        assert (entry.size, entry.mtime_ns, entry.ino, entry.ctime_ns) == (3, 5, 7, 0)
        # 2 -> 3: what changed since the file lists were written is unknown: whole lists
        assert db.listing_changes("production") is None
        assert db.listing_changes("staging") == frozenset()
