"""The bench's own parts that its verdicts rest on: the nginx upstream (what "bytes
downloaded" is counted from), the targets by file system, and the automatic scale."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import rows  # noqa: E402
import servers  # noqa: E402
from run import BYTES_PER_ENTRY, COPIES, auto_scale, parse_n  # noqa: E402


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.skipif(not os.access(servers.NGINX, os.X_OK), reason="nginx not installed")
def test_nginx_upstream_serves_counts_and_stops(tmp_path: Path) -> None:
    """The bench's nginx answers from its root, counts the body bytes of each GET from
    its access log (a 404 is a GET with no package bytes), forgets them on reset, and is
    gone after stop."""
    root = tmp_path / "root" / "repo" / "Packages"
    root.mkdir(parents=True)
    (root / "a.rpm").write_bytes(b"x" * 5000)
    up = servers.NginxUpstream(tmp_path / "root", tmp_path / "server").start()
    try:
        assert up.description.startswith("nginx (pid ")
        up.reset_counts()
        assert _get(f"{up.base_url}/repo/Packages/a.rpm") == 200
        assert _get(f"{up.base_url}/repo/Packages/a.rpm") == 200
        assert _get(f"{up.base_url}/repo/Packages/missing.rpm") == 404
        assert up.served() == (10000, 3)
        up.reset_counts()
        assert up.served() == (0, 0)
    finally:
        up.stop()
    assert up.proc is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{up.base_url}/repo/Packages/a.rpm", timeout=2)


def _result(fs: str, compose: float, verified: float) -> dict[str, Any]:
    run = {"r.cold_compose": {"s": compose}, "b.cp_a_sha256": {"s": verified},
           "b.cp_a": {"s": verified / 2}, "b.reposync_cold": {"s": compose * 4}}  # fmt: skip
    return {"n": 2000, "fs": fs, "mode": "cold", "runs": [run, run, run], "strace": {}}


def test_the_verified_copy_target_counts_on_tmpfs_only() -> None:
    tools: dict[str, str | None] = dict.fromkeys(("reposync", "rsync", "cp", "openssl"))
    row = "cold compose vs verified copy (cp -a + sha256)"

    def verdict(fs: str, compose: float) -> str:
        found = [r for r in rows.rows_for(_result(fs, compose, 1.0), tools) if r.scenario == row]
        return found[0].verdict

    assert verdict("tmpfs", 1.2) == "MET"
    assert verdict("tmpfs", 1.4) == "MISSED"
    assert verdict("xfs", 1.4) == "missed (info)"
    by_fs = {
        fs: next(r for r in rows.rows_for(_result(fs, 1.0, 1.0), tools)
                 if r.scenario == "cold compose vs reposync")
        for fs in ("xfs", "tmpfs")
    }  # fmt: skip
    assert by_fs["xfs"].target == "<= 0.35"  # ratio 0.25 each run
    assert by_fs["tmpfs"].target == "<= 0.6"
    assert by_fs["xfs"].per_run == [0.25, 0.25, 0.25]


def test_auto_scale_fits_the_disk_budget() -> None:
    assert auto_scale(2000) == 1.0
    assert auto_scale(100000) == 25.0
    budget = 10 * 10**9
    scale = auto_scale(100000, budget)
    n = 100000
    assert n * BYTES_PER_ENTRY * COPIES / scale + n * 4096 * COPIES <= budget * 1.01
    assert parse_n(["2000", "100000:1"], 3) == [(2000, 3), (100000, 1)]


def test_a_daemon_pass_is_timed_from_its_metrics(tmp_path: Path) -> None:
    """``reconciler run`` on a bench world converges it in its first pass; ``POST /trigger``
    starts a pass whose time comes from the pass-duration histogram; a commit that stages
    and promotes a new compose is one pass of two actions."""
    import generate as gen
    from daemon import Daemon, daemon_env
    from world import REL, SIG, Env, World

    pristine = tmp_path / "pristine"
    gen.generate(pristine, 40, 1, 20.0)
    tools: dict[str, str | None] = dict.fromkeys(("reposync", "rsync", "cp", "openssl"))
    repos = {r: list(a) for r, a in gen.DEFAULT_REPOS.items()}
    env = Env(40, 20.0, tmp_path, pristine, repos, 0, tools, None, "", 0.05, 1,
              upstream="python")  # fmt: skip
    w = World(env, "w")
    try:
        w.reconciler("compose", SIG, REL)
        first = w.latest()
        w.pin(staging="latest", production=first)
        d = Daemon(w.config, w.ds, w.dir / "daemon", daemon_env(w.dir / "cache"))
        try:
            assert d.start(timeout=120).ok  # its first pass stages and promotes
            idle = d.trigger(timeout=120)
            assert idle.ok
            assert 0 < idle.seconds <= idle.wall
            gen.update(w.data, 0.05, 2)
            w.reconciler("compose", SIG, REL)
            second = w.latest()
            assert second != first
            w.pin(staging="latest", production=second)
            busy = d.trigger(timeout=120)
            assert busy.ok
            promoted = w.production / "mirror/pub/sig" / REL / SIG
            assert any(promoted.rglob("repomd.xml"))
        finally:
            d.stop()
        assert d.proc is None
        log = d.log.read_text()  # complete now: a pass logs its end after counting it
        assert log.count("pass done: 0 action(s), ok") == 1
        assert log.count("pass done: 2 action(s), ok") == 2
    finally:
        w.close()
