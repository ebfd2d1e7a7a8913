"""Mirror-safe publication, with real trees and real clients."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler import testing as su
from reconciler.cli import main
from reconciler.filelists import TIMELIST, TIMELIST_SIG, UNLISTED, parse_timelist
from reconciler.retiring import delete_due
from reconciler.state import StateDB
from reconciler.verifying import verify_tree
from reconciler.vocabulary import Stage

from .clients import dnf_install
from .mounts import needs_root, remount, tmpfs
from .publish_support import CATEGORY, SIG_REL, World, build_world, history

REPO = "x86_64/core-common"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from build_world(tmp_path)


def repomd(root: Path, repo: str = REPO) -> bytes:
    return (root / SIG_REL / repo / "repodata/repomd.xml").read_bytes()


def test_promotion_adds_updates_and_drops(world: World) -> None:
    a_only = {p.name for p in (world.production / SIG_REL).rglob("sig-tools-*.rpm")}
    assert a_only
    world.pin(world.b)
    assert world.run("apply") == 0
    assert (
        repomd(world.production)
        == (world.compose_sig_dir(world.b) / REPO / "repodata/repomd.xml").read_bytes()
    )
    assert verify_tree(world.production).ok
    # superseded files stay until the grace has passed, then go, with empty directories
    assert {p.name for p in (world.production / SIG_REL).rglob("sig-tools-*.rpm")} == a_only
    with StateDB.open(world.root / "state") as state:
        pending = state.pending.all(Stage.PRODUCTION)
        assert pending and all(p.due_at > datetime.now(UTC) + timedelta(hours=23) for p in pending)
        assert delete_due(
            state, Stage.PRODUCTION, world.production, datetime.now(UTC) + timedelta(days=2)
        )
    assert not list((world.production / SIG_REL).rglob("sig-tools-*"))
    assert verify_tree(world.production).ok
    assert not [
        d for d in (world.production / SIG_REL).rglob("*") if d.is_dir() and not any(d.iterdir())
    ]


def test_file_lists_follow_the_tree_and_change_only_when_it_does(world: World) -> None:
    top = world.production / CATEGORY
    entries, sums = parse_timelist((top / TIMELIST_SIG).read_text())
    files = {
        str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() and p.name not in UNLISTED
    }
    assert {e.path for e in entries if e.kind == "f"} == files
    assert {e.path for e in entries if e.kind == "d"} >= {"9", "9/core", f"9/core/{REPO}"}
    import hashlib

    for path, sha1 in sums.items():
        assert hashlib.sha1((top / path).read_bytes()).hexdigest() == sha1
    assert (top / TIMELIST).read_text() == (top / TIMELIST_SIG).read_text()
    before = (top / TIMELIST_SIG).stat()
    assert world.run("apply") == 0  # nothing changed
    after = (top / TIMELIST_SIG).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    world.pin(world.b)
    assert world.run("apply") == 0
    assert (top / TIMELIST_SIG).stat().st_ino != before.st_ino
    assert not list(top.glob("*.~tmp~"))


def test_nothing_changed_touches_nothing(world: World) -> None:
    assert world.run("apply") == 0
    before = {str(p): p.lstat().st_mtime_ns for p in world.production.rglob("*")}
    rows = history(world)
    assert world.run("apply") == 0
    assert {str(p): p.lstat().st_mtime_ns for p in world.production.rglob("*")} == before
    assert len(history(world)) == len(rows), "no action was recorded"


def test_dropped_repo_directory_is_removed_after_the_grace(world: World) -> None:
    world.ds.write(production=world.a, repos={"core-common": {"arches": ["x86_64", "aarch64"]}})
    assert world.run("apply") == 0  # compose without core-infra, staged
    staged = world.staged()
    world.pin(staged)
    assert world.run("apply") == 0
    infra = world.production / SIG_REL / "x86_64" / "core-infra"
    assert infra.is_dir(), "kept during the grace"
    with StateDB.open(world.root / "state") as state:
        delete_due(state, Stage.PRODUCTION, world.production, datetime.now(UTC) + timedelta(days=2))
    assert (
        not infra.exists() and not (world.production / SIG_REL / "source" / "core-infra").exists()
    )
    assert verify_tree(world.production).ok


def test_drift_is_found_reported_and_repaired(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    sig = world.production / SIG_REL
    gone = next((sig / REPO / "Packages").rglob("*.rpm"))
    gone.unlink()
    changed = sig / "aarch64/core-common/repodata/repomd.xml"
    original = changed.read_bytes()
    changed.write_bytes(original.replace(b"<revision>", b"<revision>9"))
    (sig / REPO / "Packages" / "stray.rpm").write_bytes(b"x")
    capsys.readouterr()
    assert world.run("verify", "--drift") == 1
    out = capsys.readouterr().out
    assert f"missing: {gone.relative_to(world.production)}" in out
    assert f"changed: {changed.relative_to(world.production)}" in out
    assert "unexpected" not in out, "a file nobody published is not drift"
    assert f"    {SIG_REL}/{REPO}/Packages/stray.rpm\n" in out
    assert "unmanaged (kept, not drift): 1 file(s), 1 bytes" in out
    assert world.run("plan", "--format", "json") == 2
    plan = json.loads(capsys.readouterr().out)
    assert [a["repair"] for a in plan["actions"]] == [True]
    assert world.run("apply") == 0
    assert gone.is_file() and changed.read_bytes() == original
    assert world.run("verify", "--drift") == 0
    assert verify_tree(world.production).ok
    assert (sig / REPO / "Packages" / "stray.rpm").read_bytes() == b"x", "never deleted"
    with StateDB.open(world.root / "state") as state:
        pending = {p.relpath for p in state.pending.all()}
    assert f"{SIG_REL}/{REPO}/Packages/stray.rpm" not in pending, "nor pending deletion"


def test_drift_report_mode_does_not_repair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for w in build_world(tmp_path, drift="report"):
        gone = next((w.production / SIG_REL / REPO / "Packages").rglob("*.rpm"))
        gone.unlink()
        assert w.run("verify", "--drift") == 1
        assert w.run("apply") == 0
        assert not gone.exists()
        capsys.readouterr()
        assert main(["status", "--format", "json", "--config", str(w.config)]) == 0
        rows = json.loads(capsys.readouterr().out)
        prod = next(r for r in rows if r["stage"] == "production")
        assert prod["state"] == "OutOfSync" and "missing" in prod["reason"]


def test_compose_deleted_by_hand_while_pinned(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(world.root / "compose" / "9" / world.a)
    assert world.run("apply") == 0
    assert verify_tree(world.production).ok
    world.pin(world.b)
    assert world.run("apply") == 0
    world.pin(world.a)  # a rollback to the deleted compose is refused
    capsys.readouterr()
    assert world.run("apply") == 1
    assert f"compose {world.a} does not exist" in capsys.readouterr().out
    assert verify_tree(world.production).ok


def test_symlink_out_of_the_root_is_never_written_through(world: World, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = world.production / SIG_REL / "x86_64"
    shutil.rmtree(victim)
    victim.symlink_to(outside)
    world.pin(world.b)
    assert world.run("apply") == 1
    assert list(outside.iterdir()) == []


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(30)
"""


def test_two_publishes_to_the_same_tree(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(world.production)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        world.pin(world.b)
        capsys.readouterr()
        assert world.run("apply") == 1
        assert f"another publish to {world.production} is running" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.communicate()
    assert world.run("apply") == 0


@needs_root
def test_read_only_and_full_production_filesystem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prod = tmp_path / "world" / "production"
    with tmpfs(prod, "size=4m"):
        for w in build_world(tmp_path):
            # production is another filesystem: the publish said it copies, and why
            said = capsys.readouterr().err
            assert "copies instead of hardlinking (Invalid cross-device link)" in said
            before = repomd(prod)
            w.pin(w.b)
            remount(prod, "ro")
            assert w.run("apply") == 1
            remount(prod, "rw")
            assert repomd(prod) == before and verify_tree(prod).ok
            used = int(
                subprocess.run(
                    ["du", "-sk", str(prod)], capture_output=True, text=True, check=True
                ).stdout.split()[0]
            )
            remount(prod, f"size={used + 24}k")  # room for a few new files, not all
            assert w.run("apply") == 1
            assert repomd(prod) == before and verify_tree(prod).ok
            remount(prod, "size=8m")
            assert w.run("apply") == 0
            assert verify_tree(prod).ok and repomd(prod) != before
            assert not list(prod.rglob("*.~tmp~"))


def test_consistency_under_a_concurrent_reader(world: World, tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace slows the publish down so that the reader overlaps it")
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.mirror_reader",
            str(world.production / SIG_REL),
            str(tmp_path / "snaps"),
            str(stop),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        time.sleep(0.5)
        world.pin(world.b)
        slow = [
            "strace",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=none",
            "-e",
            "inject=link,linkat,rename,renameat,renameat2:delay_exit=40000",
        ]
        proc = subprocess.run(
            [
                *slow,
                sys.executable,
                "-m",
                "reconciler.cli",
                "apply",
                "--config",
                str(world.config),
                "--desired-state",
                str(world.ds.path),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        with StateDB.open(world.root / "state") as state:
            delete_due(
                state, Stage.PRODUCTION, world.production, datetime.now(UTC) + timedelta(days=2)
            )
        time.sleep(0.3)
    finally:
        stop.touch()
        out, _err = reader.communicate(timeout=120)
    result = json.loads(out)
    print(f"mirror reader: {result}")
    assert result["inconsistent"] == 0, result["problems"]
    # Saw the old and the new state, and so read while the (slowed) publish ran. A
    # snapshot count would measure the machine's load (it flaked at 10 with 8 busy
    # processes on 2 CPUs), not the publisher.
    assert result["snapshots"] >= 3 and result["states"] >= 2, result


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")
def test_dnf_installs_from_production_over_http_after_promotion_and_rollback(
    world: World, tmp_path: Path
) -> None:
    def installed_version(name: str) -> str:
        proc = dnf_install(
            tmp_path / name,
            f"{server.base_url}/{SIG_REL}/{REPO}",
            world.production / SIG_REL / REPO / su.SAMPLE_KEY.name,
            "sig-hello",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return next((tmp_path / name / "root/usr/share/sig-hello").iterdir()).read_text()

    with su.UpstreamServer(world.production) as server:
        world.pin(world.b)
        assert world.run("apply") == 0
        promoted = installed_version("after-promotion")
        world.pin(world.a)
        assert world.run("apply") == 0
        rolled_back = installed_version("after-rollback")
    assert "1.1" in promoted and "1.0" in rolled_back


def test_a_repomd_changed_by_hand_is_seen_on_the_very_next_pass(world: World) -> None:
    """Every pass stats each published repomd.xml (cheap); no drift interval needed."""
    path = world.production / SIG_REL / REPO / "repodata/repomd.xml"
    original = path.read_bytes()
    path.write_bytes(b"broken by hand")
    assert world.run("plan") == 2
    assert world.run("apply") == 0
    assert path.read_bytes() == original
    assert verify_tree(world.production).ok


def test_a_damaged_compose_manifest_fails_that_publish_clearly(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest line that does not parse (a tab in a name, a cut-off file) made every
    apply die with "ValueError: too many values to unpack"; it is an error naming the
    file and the line now, and production keeps what it holds."""
    metadata = world.root / "compose" / "9" / world.b / "compose" / "metadata"
    manifest = metadata / "reconciler-files.tsv"
    lines = manifest.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("\t", "\tx\t", 1)
    manifest.write_text("".join(lines))
    (metadata / "reconciler-changes.tsv").unlink()  # so the publish reads the manifest
    world.pin(world.b)
    capsys.readouterr()
    assert world.run("apply") == 1
    out, err = capsys.readouterr()
    assert f"{manifest}:4: damaged compose manifest" in out
    assert "Traceback" not in out + err
    with StateDB.open(world.root / "state") as state:
        held = state.targets.get("core", "9", Stage.PRODUCTION)
    assert held is not None and held.compose_id == world.a
    assert verify_tree(world.production).ok


def test_a_directory_replaced_by_a_symlink_is_repaired_into_a_directory(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A published directory swapped for a symlink to a copy with the same contents: the
    repair reported success and left the symlink. Drift names the directory now, and the
    repair makes it a real directory again; the copy it pointed to is not touched."""
    packages = world.production / SIG_REL / REPO / "Packages"
    (letter,) = [d for d in packages.iterdir() if d.name == "s"]
    copy = world.production / "elsewhere" / "s"
    shutil.copytree(letter, copy)
    shutil.rmtree(letter)
    letter.symlink_to(copy)
    names = sorted(p.name for p in copy.iterdir())
    capsys.readouterr()
    assert world.run("verify", "--drift") == 1
    assert f"changed: {letter.relative_to(world.production)}\n" in capsys.readouterr().out
    assert world.run("apply") == 0
    assert letter.is_dir() and not letter.is_symlink()
    assert sorted(p.name for p in letter.iterdir()) == names
    assert sorted(p.name for p in copy.iterdir()) == names, "what it pointed to is not ours"
    assert world.run("verify", "--drift") == 0
    assert verify_tree(world.production).ok
