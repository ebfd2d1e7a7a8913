"""The state on PostgreSQL: a real server (tests/pgcluster.py), the real CLI.

The repositories' own tests run on both backends in tests/test_state.py; these are what
only a shared server has: migration by two hosts at once, byte order, moving a state
between backends, a server restart, credentials and the CLI against it.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.errors import StateError
from reconciler.hostconfig import StateConfig
from reconciler.state import (
    SCHEMA_VERSION,
    ActionStart,
    InventoryEntry,
    SourceRecord,
    StateDB,
    TargetRecord,
    TargetStatus,
)
from reconciler.state.postgres import PostgresDatabase
from reconciler.state.transfer import export_state, import_state
from reconciler.vocabulary import InventoryKind, Result, Stage, TargetState

from .conftest import DesiredState, Host, write_host_config
from .pgcluster import PASSWORD, free_port
from .state_support import BACKENDS, open_backend, pg_config, pg_open

T0 = datetime(2026, 12, 4, 21, 0, 0, 250000, tzinfo=UTC)
#: Strings whose bytewise (code point) order differs from most locales' order.
AWKWARD = ["b", "B", "a", "_x", "a-b", "ab", "Z", "é", "e", "ß", "~", "A b", "a.b", "日本"]


def fill(db: StateDB) -> None:
    """Some of every kind of row, awkward strings and floats included."""
    for i, sig in enumerate(AWKWARD):
        action = db.history.start(
            ActionStart("compose", sig, "9", None, None, "spec changed", "abc", "Ann", T0)
        )
        db.history.finish(action, result=Result.OK, finished_at=T0, compose_id=f"c-{i}")
        db.targets.set(TargetRecord(sig, "9", Stage.STAGING, f"c-{i}", T0, "abc"))
    db.targets.set_statuses(
        TargetStatus(sig, "9", Stage.STAGING, TargetState.SYNCED, "c", "c", "ok", T0)
        for sig in AWKWARD
    )
    db.inventory.apply_changes(
        Stage.PRODUCTION,
        [InventoryEntry(f"9/{s}/f", InventoryKind.FILE, 3, 10, 11, "ab" * 32, 12) for s in AWKWARD],
        [],
    )
    db.sources.set_source(SourceRecord("abc", "abc", "abc", ("bad: x", "100%"), ("p?",)))
    from reconciler.state import PassRecord

    db.history.record_pass(PassRecord(T0, 0.1 + 0.2, True, None))


def export_text(db: StateDB, tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    with path.open("w", encoding="utf-8") as out:
        export_state(db.database, out)
    return path.read_text(encoding="utf-8")


# -- migration --


def test_an_empty_database_gets_the_schema_and_a_second_connect_does_not_migrate(
    pg_cluster: Any,
) -> None:
    config = pg_config(pg_cluster)
    with pg_open(config) as db:
        assert db.schema_version == SCHEMA_VERSION
        assert "identity sequences" in db.check()
    with pg_open(config) as db, db.database.read() as conn:
        rows = conn.execute("SELECT version FROM reconciler_schema").fetchall()
    assert rows == [(SCHEMA_VERSION,)]


def test_two_hosts_migrating_at_once_migrate_once(pg_cluster: Any) -> None:
    config = pg_config(pg_cluster)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def connect() -> None:
        try:
            start.wait()
            PostgresDatabase.connect(config, "tests:race").close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with pg_open(config) as db:
        assert db.schema_version == SCHEMA_VERSION
        db.check()


def test_a_newer_schema_and_a_foreign_database_are_refused(pg_cluster: Any) -> None:
    config = pg_config(pg_cluster)
    pg_open(config).close()
    with pg_cluster.connect(config.url.rsplit("/", 1)[1]) as raw:
        raw.execute("UPDATE reconciler_schema SET version = 99")
    with pytest.raises(StateError, match=r"schema version 99.*upgrade the reconciler"):
        pg_open(config)
    foreign = pg_config(pg_cluster)
    with pg_cluster.connect(foreign.url.rsplit("/", 1)[1]) as raw:
        raw.execute("CREATE TABLE payroll (id int)")
    with pytest.raises(StateError, match="not a reconciler state database"):
        pg_open(foreign)


def test_check_names_a_missing_column(pg_cluster: Any) -> None:
    config = pg_config(pg_cluster)
    pg_open(config).close()
    with pg_cluster.connect(config.url.rsplit("/", 1)[1]) as raw:
        raw.execute("ALTER TABLE history DROP COLUMN node")
    with pg_open(config) as db, pytest.raises(StateError, match=r"history lacks column.*node"):
        db.check()


# -- order --


@pytest.mark.parametrize("backend", BACKENDS)
def test_order_by_is_bytewise_on_both_backends(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with open_backend(backend, tmp_path, request) as db:
        fill(db)
        bytewise = sorted(AWKWARD)  # Python compares code points: UTF-8 byte order
        assert [t.sig for t in db.targets.all()] == bytewise
        listed = [row[0] for row in db.inventory.listing(Stage.PRODUCTION, "9/")]
        assert listed == sorted(f"{s}/f" for s in AWKWARD)  # "a-b/f" < "a.b/f" < "a/f"
        # the prefix range of one SIG holds exactly its rows ("a" is not "a-b" nor "ab")
        assert list(db.inventory.entries(Stage.PRODUCTION, "9/a/")) == ["9/a/f"]


# -- moving a state --


def test_export_sqlite_import_postgresql_export_again_is_identical_and_back(
    tmp_path: Path, pg_cluster: Any
) -> None:
    with StateDB.open(tmp_path / "sqlite") as lite:
        fill(lite)
        first = export_text(lite, tmp_path, "first.jsonl")
    with pg_open(pg_config(pg_cluster)) as pg:
        rows = import_state(pg.database, first.splitlines(True), "first.jsonl")
        assert rows == sum(1 for line in first.splitlines() if line.startswith("["))
        second = export_text(pg, tmp_path, "second.jsonl")
        pg.check()  # the identities were moved past the imported ids
        assert (
            pg.history.start(ActionStart("compose", "new", "9", None, None, "r", None, None, T0))
            == len(AWKWARD) + 1
        )
    assert second.replace('"from": "postgresql"', '"from": "sqlite"') == first
    with StateDB.open(tmp_path / "back") as back:
        import_state(back.database, second.splitlines(True), "second.jsonl")
        assert export_text(back, tmp_path, "third.jsonl") == first
        assert [t.sig for t in back.targets.all()] == sorted(AWKWARD)


@pytest.mark.parametrize("backend", BACKENDS)
def test_import_refuses_a_state_in_use_a_newer_schema_and_a_cut_file(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with StateDB.open(tmp_path / "src") as src:
        fill(src)
        text = export_text(src, tmp_path, "x.jsonl")
    lines = text.splitlines(True)
    with open_backend(backend, tmp_path, request) as db:
        import_state(db.database, lines, "x.jsonl")
        with pytest.raises(StateError, match=r"not empty .table history has rows.*--replace"):
            import_state(db.database, lines, "x.jsonl")
        newer = [lines[0].replace(f'"schema": {SCHEMA_VERSION}', '"schema": 99'), *lines[1:]]
        with pytest.raises(StateError, match=r"x.jsonl:1: .*schema version 99.*newer"):
            import_state(db.database, newer, "x.jsonl", replace=True)
        with pytest.raises(StateError, match=r"x.jsonl:.*ends early"):
            import_state(db.database, lines[:-3], "x.jsonl", replace=True)
        # nothing of the refused imports is kept; --replace of the same file is a no-op
        assert export_text(db, tmp_path, "y.jsonl").splitlines()[1:] == text.splitlines()[1:]
        import_state(db.database, lines, "x.jsonl", replace=True)
        assert export_text(db, tmp_path, "z.jsonl").splitlines()[1:] == text.splitlines()[1:]


# -- a server restart --


def test_a_restart_fails_the_next_transaction_clearly_and_the_one_after_works(
    pg_cluster: Any,
) -> None:
    config = pg_config(pg_cluster)
    with pg_open(config) as db:
        db.sources.set_source(SourceRecord("one", None, None))
        pg_cluster.restart()
        with pytest.raises(StateError, match=r"postgresql://reconciler@127\.0\.0\.1:\d+/\w+: conn"):
            db.sources.source()
        assert db.sources.source().good_revision == "one"


def test_a_transaction_cut_by_a_restart_leaves_nothing(pg_cluster: Any) -> None:
    config = pg_config(pg_cluster)
    with pg_open(config) as db:
        db.sources.set_source(SourceRecord("before", None, None))
        with pytest.raises(StateError, match="connection lost"), db.database.write() as conn:
            conn.execute("UPDATE source SET good_revision = ? WHERE id = 1", ("during",))
            conn.execute("INSERT INTO source_problems (position, message) VALUES (0, 'x')")
            pg_cluster.restart()
            conn.execute("SELECT 1")
        assert db.sources.source() == SourceRecord("before", None, None)


# -- credentials --


def test_a_missing_password_file_is_named(pg_cluster: Any, tmp_path: Path) -> None:
    config = pg_config(pg_cluster, password_file=tmp_path / "nope")
    with pytest.raises(StateError, match=f"cannot read the password file {tmp_path}/nope"):
        pg_open(config)


def test_a_wrong_password_and_a_server_down_are_clear_and_hold_no_password(
    pg_cluster: Any, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    config = pg_config(pg_cluster, password_file=wrong, connect_timeout=5)
    with pytest.raises(StateError) as refused:
        pg_open(config)
    assert f"state database {config.url}: cannot connect" in str(refused.value)
    assert "password authentication failed" in str(refused.value)
    down = StateConfig(
        url=f"postgresql://reconciler@127.0.0.1:{free_port()}/nothing",
        password_file=pg_cluster.password_file,
        connect_timeout=3,
    )
    with pytest.raises(StateError, match=r"nothing: cannot connect: .*refused") as refused:
        pg_open(down)
    for exc in (refused.value,):
        assert PASSWORD not in str(exc)


# -- the CLI against a PostgreSQL host config --


def pg_host(tmp_path: Path, upstream: Any, state: dict[str, object], name: str = "host") -> Host:
    root = tmp_path / name
    root.mkdir()
    return Host(write_host_config(root, upstream.server.base_url, state=state), root)


def test_the_cli_applies_reports_checks_and_rebuilds_on_postgresql(
    cli: Any, tmp_path: Path, upstream: Any, desired_state: DesiredState, pg_state: Any
) -> None:
    desired_state.write(production=None, staging="latest")
    host = pg_host(tmp_path, upstream, pg_state)
    conf = ["--config", host.config_path]
    applied = cli("apply", *conf, "--desired-state", desired_state.path)
    assert applied.code == 0, applied.err
    assert not (host.root / "state" / "state.db").exists()  # the state is in PostgreSQL
    rows = json.loads(cli("status", "--format", "json", *conf).out)
    assert {(r["stage"], r["state"]) for r in rows} >= {("staging", "Synced")}
    history = json.loads(cli("history", "--format", "json", *conf).out)
    assert [h["result"] for h in history] == ["ok"] * len(history) and history

    checked = cli("state", "check", *conf)
    assert checked.code == 0, checked.err
    assert pg_state["url"] in checked.out and "identity sequences" in checked.out

    exported = tmp_path / "before.jsonl"
    assert cli("state", "export", exported, *conf).code == 0
    rebuilt = cli("state", "rebuild", *conf, "--desired-state", desired_state.path)
    assert rebuilt.code == 0, rebuilt.err
    assert "kept the old state" in rebuilt.out and "core 9 staging: holds" in rebuilt.out
    assert list((host.root / "state").glob("state.before-rebuild-*.jsonl"))
    again = json.loads(cli("status", "--format", "json", *conf).out)
    assert again == [] or all(r["state"] != "Failed" for r in again)
    assert cli("history", "--format", "json", *conf).out.strip() == "[]"
    second = cli("apply", *conf, "--desired-state", desired_state.path)
    assert second.code == 0, second.err

    # the exported state moves to a SQLite host and back
    lite = tmp_path / "lite"
    lite.mkdir()
    lite_conf = write_host_config(lite, upstream.server.base_url)
    imported = cli("state", "import", exported, "--config", lite_conf)
    assert imported.code == 0, imported.err
    refused = cli("state", "import", exported, "--config", lite_conf)
    assert refused.code == 1 and "--replace" in refused.err
    assert cli("state", "import", exported, "--replace", "--config", lite_conf).code == 0
    assert json.loads(cli("history", "--format", "json", "--config", lite_conf).out) == history


def test_the_cli_says_which_database_failed_and_exits_1(
    cli: Any, tmp_path: Path, upstream: Any, pg_cluster: Any
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    state = dict(pg_cluster.state_config(pg_cluster.new_database()), password_file=str(wrong))
    host = pg_host(tmp_path, upstream, state)
    result = cli("status", "--config", host.config_path)
    assert result.code == 1
    assert f"error: state database {state['url']}: cannot connect" in result.err
    assert "nope" not in result.err and PASSWORD not in result.err
    missing = dict(state, password_file=str(tmp_path / "absent"))
    conf = yaml.safe_load(host.config_path.read_text())
    conf["state"] = missing
    host.config_path.write_text(yaml.safe_dump(conf))
    result = cli("state", "check", "--config", host.config_path)
    assert result.code == 1 and f"password file {tmp_path}/absent" in result.err
    down = dict(state, url=f"postgresql://reconciler@127.0.0.1:{free_port()}/gone")
    down["password_file"] = str(pg_cluster.password_file)
    conf["state"] = dict(down, connect_timeout=3)
    host.config_path.write_text(yaml.safe_dump(conf))
    result = cli("history", "--config", host.config_path)
    assert result.code == 1
    assert f"error: state database {down['url']}: cannot connect" in result.err
    assert PASSWORD not in result.err


def test_statement_timeout_is_set_on_the_session(pg_cluster: Any) -> None:
    with pg_open(pg_config(pg_cluster, statement_timeout=1.5)) as db:
        with db.database.read() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1500ms"
            assert conn.execute("SHOW application_name").fetchone()[0] == "tests:0"
        with pytest.raises(StateError, match="statement timeout"), db.database.read() as conn:
            conn.execute("SELECT pg_sleep(3)")
        assert db.sources.source().good_revision is None  # the connection is still good


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_write_inside_reads_is_a_transaction_of_its_own(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with open_backend(backend, tmp_path, request) as db, db.database.read() as outer:
        with pytest.raises(RuntimeError), db.database.write() as conn:
            conn.execute("INSERT INTO source_problems (position, message) VALUES (0, 'x')")
            raise RuntimeError("cut")
        assert outer.execute("SELECT count(*) FROM source_problems").fetchone()[0] == 0
        with db.database.write() as conn:
            conn.execute("INSERT INTO source_problems (position, message) VALUES (0, 'y')")
        assert db.sources.source().problems == ("y",)


def test_a_rotated_password_is_read_again_on_reconnecting(pg_cluster: Any, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    with pg_open(pg_config(pg_cluster, password_file=secret)) as db:
        pg_cluster.restart()
        secret.write_text("rotated-away\n")
        with pytest.raises(StateError, match="connection lost"):
            db.sources.source()
        with pytest.raises(StateError, match=r"cannot connect: .*password authentication"):
            db.sources.source()
        secret.write_text(PASSWORD + "\n")
        assert db.sources.source().good_revision is None
