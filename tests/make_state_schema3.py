# mypy: ignore-errors
# (written against the schema-3 code, which is not the tree mypy sees)
"""Make ``tests/data/state-schema3.db``: a schema-3 state database, written by the old code.

Run it with the tree of the last schema-3 release first on the path, so that
``reconciler.state`` is the old module (``StateDB.set_meta`` and friends)::

    git worktree add /work/wt-old b77b44f
    PYTHONPATH=/work/wt-old python3 tests/make_state_schema3.py tests/data/state-schema3.db

Every record goes through the old API, and the ``meta`` keys through the old modules
that wrote them (``reconciling``'s source keys, ``drift.store`` and ``drift.mark_checked``,
``applying.publish_marker``, ``StateDB.listing_written``), so the file is what a
schema-3 reconciler left behind. ``tests/test_state.py`` opens a copy with the new code
and checks that every value reads back through the new repositories.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)


def populate(state_dir: Path) -> None:
    from reconciler import drift, reconciling
    from reconciler.applying import publish_marker
    from reconciler.state import (
        InventoryEntry,
        StateDB,
        TargetRecord,
        TargetStatus,
        UpstreamCacheEntry,
    )

    with StateDB.open(state_dir) as db:
        # history: ok, failed, running (a crash left it)
        ok = db.start_action(
            action="compose",
            sig="core",
            release="9",
            stage=None,
            compose_id=None,
            reason="spec changed",
            revision="rev1",
            author="Ann <ann@example.org>",
            started_at=T0,
        )
        db.finish_action(
            ok,
            result="ok",
            bytes=123456,
            files=42,
            finished_at=T0 + timedelta(minutes=5),
            compose_id="SIG-core-9-20261125.0",
        )
        failed = db.start_action(
            action="publish",
            sig="core",
            release="9",
            stage="production",
            compose_id="SIG-core-9-20261125.0",
            reason="promoted",
            revision="rev1",
            author=None,
            started_at=T0 + timedelta(hours=1),
        )
        db.finish_action(
            failed, result="failed", error="disk full", finished_at=T0 + timedelta(hours=2)
        )
        db.start_action(
            action="publish",
            sig="cloud",
            release="10",
            stage="staging",
            compose_id="SIG-cloud-10-20261126.0",
            reason="new compose",
            revision="rev2",
            author="Bob <bob@example.org>",
            started_at=T0 + timedelta(days=1),
        )

        # targets and their stage events (staging of core 9 published twice)
        db.set_target(TargetRecord("core", "9", "staging", "SIG-core-9-20261124.0", T0, "rev0"))
        db.set_target(
            TargetRecord(
                "core", "9", "staging", "SIG-core-9-20261125.0", T0 + timedelta(hours=1), "rev1"
            )
        )
        db.set_target(
            TargetRecord(
                "core", "9", "production", "SIG-core-9-20261124.0", T0 + timedelta(hours=3), None
            )
        )
        db.set_target(
            TargetRecord(
                "cloud", "10", "production", "SIG-cloud-10-20261120.0", T0 - timedelta(days=5), "r"
            )
        )

        # inventories: f, l and d rows in production, a file in staging; the file lists
        # were written (digest), then one path changed since
        db.apply_inventory_changes(
            "production",
            [
                InventoryEntry("9/core", "d", 4096, 1_000, 11, None, 1_500),
                InventoryEntry("9/core/latest", "l", 9, 2_000, 12, None, 2_500),
                InventoryEntry(
                    "9/core/x86_64/repodata/repomd.xml", "f", 3000, 3_000, 13, "ab" * 20, 3_500
                ),
            ],
            [],
        )
        db.listing_written("production", "0123456789abcdef" * 4)
        db.apply_inventory_changes(
            "production",
            [InventoryEntry("9/core/x86_64/Packages/a-1.rpm", "f", 777, 4_000, 14, None, 4_500)],
            [],
        )
        db.apply_inventory_changes(
            "staging", [InventoryEntry("9/core/x86_64/Packages/b-1.rpm", "f", 5, 6, 7, None)], []
        )

        # pending deletions
        db.add_pending(
            "production",
            ["9/core/x86_64/Packages/old-1.rpm", "9/core/x86_64/Packages/old-2.rpm"],
            T0 + timedelta(days=2),
            "superseded",
        )
        db.add_pending("staging", ["9/core/x86_64/Packages/old-3.rpm"], T0, "repo dropped")

        # statuses, in this order
        db.set_statuses(
            [
                TargetStatus("core", "9", "compose", "Synced", "SIG-core-9-20261125.0",
                             "SIG-core-9-20261125.0", "up to date", T0),
                TargetStatus("core", "9", "production", "Failed", "SIG-core-9-20261125.0",
                             "SIG-core-9-20261124.0", "disk full", T0 + timedelta(hours=2)),
                TargetStatus("cloud", "10", "staging", "Progressing", "SIG-cloud-10-20261126.0",
                             None, "publishing", T0 + timedelta(days=1)),
            ]
        )  # fmt: skip

        # upstream validators
        db.set_upstream_cache(
            UpstreamCacheEntry(
                "https://cbs.example.org/repos/core9/x86_64/repodata/repomd.xml",
                '"etag-1"',
                "Wed, 25 Nov 2026 10:00:00 GMT",
                "ab" * 32,
                T0,
            )
        )
        db.set_upstream_cache(
            UpstreamCacheEntry(
                "https://cbs.example.org/repos/cloud10/x86_64/repodata/repomd.xml",
                None,
                None,
                "cd" * 32,
                T0 + timedelta(minutes=1),
            )
        )

        # meta: as reconciling, drift, applying and rebuilding wrote it
        db.set_meta(reconciling.META_GOOD, "good0123")
        db.set_meta(reconciling.META_APPLIED, "applied0123")
        db.set_meta("checkout_revision", "checkout0123")
        db.set_meta(
            reconciling.META_PROBLEMS,
            json.dumps(
                [
                    "SourceUnavailable: git fetch failed: timed out",
                    "InvalidSpec at 0123456789ab: sigs.core: unknown key 'relases'",
                ]
            ),
        )
        drift.store(
            db,
            "production",
            "core",
            "9",
            sorted(
                [
                    drift.Drift("mirror/pub/sig/9/core/y", "unexpected"),
                    drift.Drift("mirror/pub/sig/9/core/x", "changed"),
                ]
            ),
        )
        drift.store(db, "staging", "cloud", "10", [drift.Drift("10/cloud/z", "missing")])
        drift.mark_checked(db, T0 + timedelta(hours=4))
        db.set_meta(publish_marker("staging", "core", "9"), "SIG-core-9-20261125.0")
        db.set_meta(publish_marker("production", "cloud", "10"), "rebuilt")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: PYTHONPATH=<schema-3 tree> {argv[0]} OUT.db", file=sys.stderr)
        return 2
    import reconciler.state

    if getattr(reconciler.state, "SCHEMA_VERSION", None) != 3 or not hasattr(
        reconciler.state.StateDB, "set_meta"
    ):
        print(
            f"{reconciler.state.__file__} is not the schema-3 state module;"
            " put the old tree first on PYTHONPATH",
            file=sys.stderr,
        )
        return 1
    out = Path(argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        populate(state_dir)
        made = state_dir / "state.db"
        if Path(f"{made}-wal").exists():
            print("the database was not checkpointed on close", file=sys.stderr)
            return 1
        conn = sqlite3.connect(made)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        conn.close()
        if (version, check) != (3, "ok"):
            print(f"unexpected: user_version {version}, quick_check {check}", file=sys.stderr)
            return 1
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(made.read_bytes())
    print(f"wrote {out} ({out.stat().st_size} bytes, schema 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
