"""The state database's schema, as the migrations that build it.

The schema is versioned with ``PRAGMA user_version``: ``MIGRATIONS[n]`` takes a
database from version ``n`` to ``n + 1``; they run in order on open, in one
transaction. To change the schema, append a migration; never edit one that has
shipped. A step is an SQL statement, or a function of the connection for data
that SQL alone would parse badly (the JSON values of schema 3's ``meta`` table).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .connection import Connection

APPLICATION_ID = 0x53494752  # "SIGR": marks the file as a reconciler state database

Step = str | Callable[[Connection], None]


def _meta_to_tables(conn: Connection) -> None:
    """Schema 3 kept structured values as JSON text under string keys of ``meta``; move
    each into its table (schema 4). Keys this code does not know are dropped."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    conn.execute(
        "INSERT INTO source (id, good_revision, applied_revision, checkout_revision)"
        " VALUES (1, ?, ?, ?)",
        (
            meta.get("last_good_revision"),
            meta.get("last_applied_revision"),
            meta.get("checkout_revision"),
        ),
    )
    problems = json.loads(meta.get("source_problems") or "[]")
    conn.executemany(
        "INSERT INTO source_problems (position, message) VALUES (?, ?)",
        enumerate(str(p) for p in problems),
    )
    if "drift_checked_at" in meta:
        conn.execute(
            "INSERT INTO drift_check (id, checked_at) VALUES (1, ?)", (meta["drift_checked_at"],)
        )
    for key, value in meta.items():
        kind, _, rest = key.partition("/")
        parts = rest.split("/")
        if kind == "drift" and len(parts) == 3:
            for position, text in enumerate(json.loads(value)):
                what, _, path = str(text).partition(": ")
                conn.execute(
                    "INSERT INTO drift (stage, sig, release, position, what, path)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (*parts, position, what, path),
                )
        elif kind == "publishing" and len(parts) == 3:
            compose_id = None if value == "rebuilt" else value
            conn.execute(
                "INSERT INTO publishing (stage, sig, release, compose_id) VALUES (?, ?, ?, ?)",
                (*parts, compose_id),
            )
        elif key.startswith("listing_digest:"):
            conn.execute(
                "INSERT INTO listings (stage, digest) VALUES (?, ?)",
                (key.partition(":")[2], value),
            )


MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    # 0 -> 1: the first schema.
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            action TEXT NOT NULL,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT,
            compose_id TEXT,
            reason TEXT NOT NULL,
            revision TEXT,
            author TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            result TEXT NOT NULL,
            error TEXT,
            bytes INTEGER NOT NULL DEFAULT 0,
            files INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX history_by_sig ON history (sig, id)",
        "CREATE INDEX history_running ON history (id) WHERE result = 'running'",
        """CREATE TABLE targets (
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT NOT NULL,
            compose_id TEXT NOT NULL,
            published_at TEXT NOT NULL,
            revision TEXT,
            PRIMARY KEY (sig, release, stage)
        ) WITHOUT ROWID""",
        """CREATE TABLE stage_events (
            id INTEGER PRIMARY KEY,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT NOT NULL,
            compose_id TEXT NOT NULL,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX stage_events_by_target ON stage_events (sig, release, stage, id)",
        """CREATE TABLE inventory (
            stage TEXT NOT NULL,
            relpath TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('f', 'l', 'd')),
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            checksum TEXT,
            PRIMARY KEY (stage, relpath)
        ) WITHOUT ROWID""",
        """CREATE TABLE pending_deletions (
            id INTEGER PRIMARY KEY,
            stage TEXT NOT NULL,
            relpath TEXT NOT NULL,
            due_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            UNIQUE (stage, relpath)
        )""",
        "CREATE INDEX pending_by_due ON pending_deletions (due_at)",
        """CREATE TABLE statuses (
            position INTEGER PRIMARY KEY,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            stage TEXT NOT NULL,
            state TEXT NOT NULL,
            desired TEXT,
            actual TEXT,
            reason TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (sig, release, stage)
        )""",
        """CREATE TABLE upstream_cache (
            url TEXT PRIMARY KEY,
            etag TEXT,
            last_modified TEXT,
            sha256 TEXT NOT NULL,
            fetched_at TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    # 1 -> 2: the inode change time of inventory entries (file lists use max(mtime, ctime)).
    ("ALTER TABLE inventory ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0",),
    # 2 -> 3: the inventory paths of production (LISTED_STAGES) changed since the file
    # lists were last written from it (relpath '' stands for "anything": render them whole).
    (
        """CREATE TABLE listing_changes (
            stage TEXT NOT NULL,
            relpath TEXT NOT NULL,
            PRIMARY KEY (stage, relpath)
        ) WITHOUT ROWID""",
        "INSERT INTO listing_changes (stage, relpath)"
        " SELECT DISTINCT stage, '' FROM inventory WHERE stage = 'production'",
    ),  # 3 -> 4: every structured value of ``meta`` gets a table of its own, and ``meta`` goes.
    (
        """CREATE TABLE source (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            good_revision TEXT,
            applied_revision TEXT,
            checkout_revision TEXT
        )""",
        """CREATE TABLE source_problems (
            position INTEGER PRIMARY KEY,
            message TEXT NOT NULL
        )""",
        """CREATE TABLE source_ignored (
            position INTEGER PRIMARY KEY,
            path TEXT NOT NULL
        )""",
        """CREATE TABLE drift (
            stage TEXT NOT NULL,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            position INTEGER NOT NULL,
            what TEXT NOT NULL CHECK (what IN ('missing', 'changed', 'unexpected')),
            path TEXT NOT NULL,
            PRIMARY KEY (stage, sig, release, position)
        ) WITHOUT ROWID""",
        """CREATE TABLE drift_check (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            checked_at TEXT NOT NULL
        )""",
        """CREATE TABLE publishing (
            stage TEXT NOT NULL,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            compose_id TEXT,
            PRIMARY KEY (stage, sig, release)
        ) WITHOUT ROWID""",
        """CREATE TABLE listings (
            stage TEXT PRIMARY KEY,
            digest TEXT NOT NULL
        ) WITHOUT ROWID""",
        _meta_to_tables,
        "DROP TABLE meta",
        # what started each action (a commit, the upstream, drift, policy, a person), and who
        "ALTER TABLE history ADD COLUMN trigger TEXT",
        "ALTER TABLE history ADD COLUMN actor TEXT",
    ),
    # 4 -> 5: the deep drift check (content against the composes' checksums): a drift
    # finding may be 'corrupt' (SQLite cannot change a CHECK: the table is made anew),
    # and the deep check keeps its own time.
    (
        """CREATE TABLE drift_5 (
            stage TEXT NOT NULL,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            position INTEGER NOT NULL,
            what TEXT NOT NULL CHECK (what IN ('missing', 'changed', 'unexpected', 'corrupt')),
            path TEXT NOT NULL,
            PRIMARY KEY (stage, sig, release, position)
        ) WITHOUT ROWID""",
        "INSERT INTO drift_5 (stage, sig, release, position, what, path)"
        " SELECT stage, sig, release, position, what, path FROM drift",
        "DROP TABLE drift",
        "ALTER TABLE drift_5 RENAME TO drift",
        """CREATE TABLE drift_deep_check (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            checked_at TEXT NOT NULL
        )""",
    ),
    # 5 -> 6: unmanaged paths (under a published SIG directory, not published by the
    # reconciler: an adopted tree's images, keys, a human's files), as the last walk of
    # each directory found them; listed for mirrors, reported, never changed.
    (
        """CREATE TABLE unmanaged (
            stage TEXT NOT NULL,
            relpath TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('f', 'd', 'l')),
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            ignored INTEGER NOT NULL CHECK (ignored IN (0, 1)),
            PRIMARY KEY (stage, relpath)
        ) WITHOUT ROWID""",
        """CREATE TABLE unmanaged_walks (
            stage TEXT NOT NULL,
            prefix TEXT NOT NULL,
            walked_at TEXT NOT NULL,
            PRIMARY KEY (stage, prefix)
        ) WITHOUT ROWID""",
    ),
    # 6 -> 7: mirror propagation. Every repomd.xml production served (per SIG release and
    # path in the SIG's directory) and when it was published there; what each mirror
    # served at its last check, with the validators of the next conditional GET. The
    # repomd.xml production serves now (the inventory keeps their SHA1) seed the first.
    (
        """CREATE TABLE mirror_served (
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            path TEXT NOT NULL,
            sha1 TEXT NOT NULL,
            published_at TEXT NOT NULL,
            current INTEGER NOT NULL CHECK (current IN (0, 1)),
            PRIMARY KEY (sig, release, path, sha1)
        ) WITHOUT ROWID""",
        # path: what follows "<release>/<sig>/" in the inventory path (after the category)
        """INSERT OR IGNORE INTO mirror_served
            (sig, release, path, sha1, published_at, current)
            SELECT t.sig, t.release,
                   substr('/' || i.relpath, instr('/' || i.relpath,
                          '/' || t.release || '/' || t.sig || '/')
                          + length(t.release) + length(t.sig) + 3),
                   i.checksum, t.published_at, 1
            FROM targets t JOIN inventory i
              ON i.stage = t.stage AND i.checksum IS NOT NULL
             AND instr('/' || i.relpath, '/' || t.release || '/' || t.sig || '/') > 0
            WHERE t.stage = 'production'""",
        """CREATE TABLE mirror_checks (
            mirror TEXT NOT NULL,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            path TEXT NOT NULL,
            sha1 TEXT,
            etag TEXT,
            last_modified TEXT,
            error TEXT,
            missing INTEGER NOT NULL CHECK (missing IN (0, 1)),
            checked_at TEXT NOT NULL,
            PRIMARY KEY (mirror, sig, release, path)
        ) WITHOUT ROWID""",
    ),
    # 7 -> 8: the loop's last pass (when, how long, whether it converged), so that the
    # exported status page shows it, not only the page the loop serves.
    (
        """CREATE TABLE last_pass (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            finished_at TEXT NOT NULL,
            seconds REAL NOT NULL,
            ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
            error TEXT
        )""",
    ),
    # 8 -> 9: more than one host (issue 18). Composes become jobs that any process takes
    # (at most one queued or running per SIG release; times are epoch seconds of the
    # database's clock, which every host shares); every attempt at a job and the compose
    # directory it made (an abandoned one is DOOMED); one leader lease (id 1) and every
    # term of it; and which node did each action of the history.
    (
        """CREATE TABLE compose_jobs (
            id INTEGER PRIMARY KEY,
            sig TEXT NOT NULL,
            release TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
            reason TEXT NOT NULL,
            trigger TEXT,
            revision TEXT,
            queued_at REAL NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            worker TEXT,
            started_at REAL,
            heartbeat_at REAL,
            compose_id TEXT,
            finished_at REAL,
            error TEXT,
            bytes INTEGER NOT NULL DEFAULT 0,
            packages INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX compose_jobs_active ON compose_jobs (sig, release)"
        " WHERE state IN ('queued', 'running')",
        "CREATE INDEX compose_jobs_by_state ON compose_jobs (state, id)",
        """CREATE TABLE compose_attempts (
            job INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            worker TEXT NOT NULL,
            compose_id TEXT,
            started_at REAL NOT NULL,
            ended_at REAL,
            outcome TEXT,
            PRIMARY KEY (job, attempt)
        )""",
        """CREATE TABLE leader (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            term INTEGER NOT NULL,
            holder TEXT NOT NULL,
            since REAL NOT NULL,
            renewed_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE leader_terms (
            term INTEGER PRIMARY KEY,
            holder TEXT NOT NULL,
            since REAL NOT NULL,
            until REAL
        )""",
        "ALTER TABLE history ADD COLUMN node TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
