"""Mirror propagation (issue 15): did the public mirrors pick a promotion up?

End to end: three mirrors on 127.0.0.1, each an HTTP server over its own copy of
production (one refreshed with ``rsync -rlptDSH`` after each promotion, one never
refreshed, one stopped), seen through the real CLI (``apply``, ``run --once``,
``status``, ``mirrors``). Then the pure judge (``freshness``) on tables of facts, and
the state's record of what production served.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.facts import TargetKey
from reconciler.freshness import MirrorCheck, Served, judge, judge_repo, summarize
from reconciler.state import StateDB
from reconciler.vocabulary import MirrorState, Stage

from .publish_support import CATEGORY, World, build_world

PRODUCTION = TargetKey(Stage.PRODUCTION, "core", "9")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; records each request's path, validators and answer."""

    server: _MirrorServer

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        h = self.headers
        self.server.seen.append(
            (self.path, h.get("If-None-Match"), h.get("If-Modified-Since"), int(code))
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _MirrorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str | None, str | None, int]]


@dataclass
class Mirror:
    name: str
    root: Path
    server: _MirrorServer
    thread: threading.Thread | None = None
    requests: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)

    @property
    def config(self) -> dict[str, str]:
        host, port = self.server.server_address[:2]
        return {"name": self.name, "base_url": f"http://{host!s}:{port}", "path": CATEGORY}

    def refresh(self, production: Path) -> None:
        """What a mirror's rsync does: copy production over its copy."""
        cmd = ["rsync", "-rlptDSH", "--delete", f"{production}/", f"{self.root}/"]
        subprocess.run(cmd, check=True)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def repomd_answers(self) -> list[tuple[str | None, str | None, int]]:
        return [(inm, ims, code) for p, inm, ims, code in self.server.seen
                if p.endswith("/repodata/repomd.xml")]  # fmt: skip


def _mirror(root: Path, name: str) -> Mirror:
    directory = root / name
    directory.mkdir(parents=True)
    handler = functools.partial(_Handler, directory=str(directory))
    server = _MirrorServer(("127.0.0.1", 0), handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Mirror(name, directory, server, thread)


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[dict[str, Mirror]]:
    made = {n: _mirror(tmp_path / "mirrors", n) for n in ("fresh", "stale", "down")}
    made["down"].stop()  # its port refuses connections from now on
    yield made
    for name in ("fresh", "stale"):
        made[name].stop()


def _cli(world: World, *args: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """A command that reads only the state (no ``--desired-state``), through the real CLI."""
    from reconciler.cli import main

    capsys.readouterr()
    assert main([*args, "--config", str(world.config)]) == 0
    return capsys.readouterr().out


def _status_mirrors(world: World, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    rows = json.loads(_cli(world, "status", "--format", "json", capsys=capsys))
    (row,) = [r for r in rows if r["stage"] == Stage.PRODUCTION]
    assert all(r["mirrors"] is None for r in rows if r["stage"] != Stage.PRODUCTION)
    return row["mirrors"]  # type: ignore[no-any-return]


def _by_mirror(world: World, capsys: pytest.CaptureFixture[str], *check: str) -> dict[str, Any]:
    rows = json.loads(_cli(world, "mirrors", "--format", "json", *check, capsys=capsys))
    return {r["mirror"]: r for r in rows if (r["sig"], r["release"]) == ("core", "9")}


def test_a_promotion_reaches_one_mirror_lags_on_another_and_a_third_is_down(
    tmp_path: Path, mirrors: dict[str, Mirror], capsys: pytest.CaptureFixture[str]
) -> None:
    configs = [m.config for m in mirrors.values()]
    for world in build_world(tmp_path, later_second=True, mirrors=configs,
                             mirror_check_interval=1):  # fmt: skip
        # both living mirrors copied production while it held A
        for name in ("fresh", "stale"):
            mirrors[name].refresh(world.production)
        assert _by_mirror(world, capsys, "--check")["stale"]["state"] == MirrorState.CURRENT

        world.pin(world.b)
        before = datetime.now(UTC)
        assert world.run("apply") == 0  # promotes B; the mirrors are checked right after
        after = datetime.now(UTC)
        seen = _by_mirror(world, capsys)
        assert seen["fresh"]["state"] == seen["stale"]["state"] == MirrorState.BEHIND
        mirrors["fresh"].refresh(world.production)  # its rsync ran after the promotion

        time.sleep(1.1)  # mirror_check_interval: the loop's next pass checks again
        assert world.run("run", "--once") == 0
        seen = _by_mirror(world, capsys)
        assert seen["fresh"]["state"] == MirrorState.CURRENT
        assert seen["stale"]["state"] == MirrorState.BEHIND
        assert seen["down"]["state"] == MirrorState.UNREACHABLE
        assert "Connection refused" in seen["down"]["error"]
        # behind since production published B (not A, before ``before``): that is its lag
        since = datetime.fromisoformat(seen["stale"]["behind_since"])
        assert before <= since <= after
        assert seen["stale"]["lag_seconds"] >= (datetime.now(UTC) - after).total_seconds()

        summary = _status_mirrors(world, capsys)
        assert (summary["mirrors"], summary["current"], summary["behind"],
                summary["unreachable"], summary["foreign"]) == (3, 1, 1, 1, 0)  # fmt: skip
        assert summary["oldest_lag_seconds"] == pytest.approx(seen["stale"]["lag_seconds"], abs=30)
        text = _cli(world, "status", capsys=capsys)
        assert "mirrors 1/3 current, 1 behind " in text and "1 unreachable" in text
        table = _cli(world, "mirrors", capsys=capsys)
        assert "mirror stale" in table and "behind" in table and "unreachable" in table
        # and on the status page (here its static export), in the production cell
        page = _cli(world, "status", "--format", "html", capsys=capsys)
        assert "mirrors: 1 current" in page and "1 behind" in page and "1 unreachable" in page

        # the stale mirror catches up
        mirrors["stale"].refresh(world.production)
        _cli(world, "mirrors", "--check", capsys=capsys)
        summary = _status_mirrors(world, capsys)
        assert (summary["current"], summary["behind"], summary["unreachable"]) == (2, 0, 1)

        # nothing changed since: every repomd.xml is asked for conditionally, and is a 304
        fresh = mirrors["fresh"]
        fresh.server.seen.clear()
        seen = _by_mirror(world, capsys, "--check")
        answers = fresh.repomd_answers()
        assert answers and all(ims is not None and code == 304 for _, ims, code in answers)
        assert seen["fresh"]["state"] == MirrorState.CURRENT  # kept through the 304s

        # a repomd.xml production never published is foreign, not current
        repomd = next((fresh.root / CATEGORY).rglob("repodata/repomd.xml"))
        repomd.write_bytes(repomd.read_bytes() + b"<!-- not production's -->\n")
        seen = _by_mirror(world, capsys, "--check")
        assert seen["fresh"]["state"] == MirrorState.FOREIGN
        summary = _status_mirrors(world, capsys)
        assert (summary["current"], summary["foreign"]) == (1, 1)


def test_the_metrics_say_which_mirror_is_current_and_how_far_behind(
    tmp_path: Path, mirrors: dict[str, Mirror]
) -> None:
    from reconciler.running import Loop
    from reconciler.specfile import load_host_config

    configs = [m.config for m in mirrors.values()]
    for world in build_world(tmp_path, mirrors=configs, mirror_check_interval=1):
        mirrors["fresh"].refresh(world.production)
        loop = Loop(load_host_config(world.config), world.ds.path)
        time.sleep(1.1)
        assert loop.one_pass()  # no publish, but the interval passed: checked again
        text = loop.metrics.render().decode()
        assert 'reconciler_mirror_current{mirror="fresh",release="9",sig="core"} 1.0' in text
        assert 'reconciler_mirror_current{mirror="stale",release="9",sig="core"} 0.0' in text
        assert 'reconciler_mirror_current{mirror="down",release="9",sig="core"} 0.0' in text
        lag = [line for line in text.splitlines()
               if line.startswith('reconciler_mirror_lag_seconds{mirror="stale"')]  # fmt: skip
        assert lag and float(lag[0].split()[-1]) > 0  # missing repos: behind since A


# -- the judge, on facts ------------------------------------------------------------------

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PATH = "x86_64/core-common/repodata/repomd.xml"


def _served(*rows: tuple[str, int, bool]) -> list[Served]:
    return [Served("core", "9", PATH, sha, T0 + timedelta(hours=h), cur) for sha, h, cur in rows]


def _check(sha1: str | None, hours: int = 10, error: str | None = None,
           missing: bool = False) -> MirrorCheck:  # fmt: skip
    return MirrorCheck("m", "core", "9", PATH, sha1, None, None, error, missing,
                       T0 + timedelta(hours=hours))  # fmt: skip


HISTORY = _served(("a", 0, False), ("b", 2, False), ("c", 5, True))


@pytest.mark.parametrize(
    ("check", "state", "since_hours"),
    [
        (_check("c"), MirrorState.CURRENT, None),
        (_check("b"), MirrorState.BEHIND, 5),  # should have had c since c was published
        (_check("a"), MirrorState.BEHIND, 2),  # should have had b since hour 2
        (_check("zz"), MirrorState.FOREIGN, None),  # never published: not current
        (_check(None, missing=True, error="HTTP 404"), MirrorState.BEHIND, 0),
        (_check("c", error="Connection refused"), MirrorState.UNREACHABLE, None),
        (_check("b", hours=4), MirrorState.UNCHECKED, None),  # checked before c came
        (None, MirrorState.UNCHECKED, None),
    ],
)
def test_a_repo_on_a_mirror_is_judged_from_what_production_served(
    check: MirrorCheck | None, state: MirrorState, since_hours: int | None
) -> None:
    verdict = judge_repo(check, HISTORY, PATH)
    assert verdict.state is state
    expected = None if since_hours is None else T0 + timedelta(hours=since_hours)
    assert verdict.since == expected


def test_a_rollback_makes_the_older_repomd_current_again() -> None:
    """Production went a -> b -> a (republished at hour 7): a mirror on b is behind since 7."""
    history = _served(("b", 2, False), ("a", 7, True))
    assert judge_repo(_check("a"), history, PATH).state is MirrorState.CURRENT
    verdict = judge_repo(_check("b"), history, PATH)
    assert (verdict.state, verdict.since) == (MirrorState.BEHIND, T0 + timedelta(hours=7))


def test_a_mirror_stands_as_its_worst_repo_and_targets_count_their_mirrors() -> None:
    other = "aarch64/core-common/repodata/repomd.xml"
    served = [*HISTORY, Served("core", "9", other, "o", T0, True)]
    now = T0 + timedelta(hours=12)

    def checks(mirror: str, main: str | None, second: str | None, **kw: Any) -> list[MirrorCheck]:
        return [
            MirrorCheck(mirror, "core", "9", PATH, main, None, None, None, False, now, **kw),
            MirrorCheck(mirror, "core", "9", other, second, None, None, None, False, now),
        ]

    facts = [*checks("one", "c", "o"), *checks("two", "a", "o"), *checks("three", "c", "zz")]
    targets = {t.mirror: t for t in judge(["one", "two", "three", "four"], served, facts, now)}
    assert targets["one"].state is MirrorState.CURRENT
    assert targets["two"].state is MirrorState.BEHIND
    assert targets["two"].lag == timedelta(hours=10)  # behind since b, at hour 2
    assert targets["three"].state is MirrorState.FOREIGN
    assert targets["four"].state is MirrorState.UNCHECKED
    summary = summarize(targets.values())[PRODUCTION]
    assert (summary.mirrors, summary.current, summary.behind, summary.foreign,
            summary.unchecked, summary.oldest_lag) == (4, 1, 1, 1, 1, timedelta(hours=10))  # fmt: skip
    assert summary.describe() == "1/4 current, 1 behind 10h, 1 foreign, 1 unchecked"


# -- the state ----------------------------------------------------------------------------


def _inventory_repomd(db: StateDB, prefix: str, sha1: str) -> None:
    from reconciler.state import InventoryEntry
    from reconciler.vocabulary import InventoryKind

    entry = InventoryEntry(prefix + PATH, InventoryKind.FILE, 10, 1, 1, sha1)
    db.inventory.apply_changes(Stage.PRODUCTION, [entry], [])


def test_the_state_keeps_when_each_repomd_was_first_published_and_a_rollback_anew(
    tmp_path: Path,
) -> None:
    prefix = f"{CATEGORY}/9/core/"
    with StateDB.open(tmp_path) as db:
        for sha1, hour in (("a", 0), ("a", 1), ("b", 2), ("a", 3)):
            _inventory_repomd(db, prefix, sha1)
            db.mirrors.record_served("core", "9", prefix, T0 + timedelta(hours=hour))
        got = {(s.sha1, s.published_at, s.current) for s in db.mirrors.served()}
    # a republished a at hour 1 is no news; a after b (a rollback) is published anew
    assert got == {("a", T0 + timedelta(hours=3), True), ("b", T0 + timedelta(hours=2), False)}


def test_an_upgraded_state_knows_what_production_serves_now(tmp_path: Path) -> None:
    """Schema 7 seeds production's repomd.xml from the inventory (a real schema-3 file)."""
    shutil.copy(Path(__file__).parent / "data" / "state-schema3.db", tmp_path / "state.db")
    with StateDB.open(tmp_path) as db:
        served = db.mirrors.served()
        held = db.targets.get("core", "9", Stage.PRODUCTION)
    assert held is not None
    assert [(s.sig, s.release, s.path, s.current, s.published_at) for s in served] == [
        ("core", "9", "x86_64/repodata/repomd.xml", True, held.published_at)
    ]


@pytest.mark.parametrize(
    ("mirror", "problem"),
    [
        ({"name": "m", "base_url": "ftp://mirror.example.org"}, "http:// or https://"),
        ({"name": "m", "base_url": "https://m.example.org", "path": "../etc"}, "no '..'"),
        ({"name": "a b", "base_url": "https://m.example.org"}, "invalid mirror name"),
    ],
)
def test_the_host_config_refuses_a_mirror_it_cannot_check(
    tmp_path: Path, mirror: dict[str, str], problem: str
) -> None:
    from reconciler.errors import ConfigError
    from reconciler.specfile import load_host_config

    from .conftest import write_host_config

    config = write_host_config(tmp_path, "http://127.0.0.1:1", mirrors=[mirror])
    with pytest.raises(ConfigError, match=problem):
        load_host_config(config)


def test_a_mirror_url_is_its_base_its_category_path_and_the_repo() -> None:
    from reconciler.hostconfig import MirrorConfig

    m = MirrorConfig("m", "https://m.example.org/", "/pub/sig/")
    assert m.url("9", "core", PATH) == f"https://m.example.org/pub/sig/9/core/{PATH}"
