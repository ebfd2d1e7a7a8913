"""The mirrors' whole contract, with a real rsync daemon and a real rsync client.

Production's ``<category>/`` is served as rsync module "sig" by ``rsync --daemon`` on
127.0.0.1. A client pulls the lists the way stock quick-fedora-mirror does: its
``EXTRAFILES=(fullfilelist imagelist-$module)`` first, then the time list
``fullfiletimelist-sig``, and then mirrors the tree from the time list alone: it
fetches what is new since its last run or missing, and deletes what the list does not
name. So a path the lists forget (an adopted tree's image, a key the old scripts put in a
repo) is deleted from every mirror, and a missing list fails the pull (rsync exit 23).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from reconciler import retiring
from reconciler import testing as su
from reconciler.filelists import (
    FILELIST,
    IMAGELIST_SIG,
    LIST_NAMES,
    TIMELIST,
    TIMELIST_SIG,
    TIMELIST_SIG_OLD,
    UNLISTED,
    Entry,
    parse_timelist,
    render_all,
    scan,
)
from reconciler.layout import PublishedTree
from reconciler.ownership import walk_unmanaged
from reconciler.pathglob import PathPatterns
from reconciler.retiring import write_production_filelists
from reconciler.state import InventoryEntry, StateDB, UnmanagedEntry
from reconciler.vocabulary import InventoryKind, Stage

from .conftest import PROJECT_ID
from .publish_support import CATEGORY, World, build_world, tree_listing

RSYNC = shutil.which("rsync")
pytestmark = pytest.mark.skipif(RSYNC is None, reason="needs rsync (client and daemon)")

MODULE = "sig"
#: quick-fedora-mirror's default EXTRAFILES for module "sig", fetched before the time list
EXTRAFILES = (FILELIST, f"imagelist-{MODULE}")
#: its RSYNCOPTS (rsync >= 3.1), as it passes them to every transfer
RSYNCOPTS = ("-aSH", "-f", "R .~tmp~", "--delay-updates")
#: what an adopted tree holds that the reconciler did not publish, relative to <category>
IMAGE = "9/core/images/Rocky-9-SIG-core-RaspberryPi.raw.xz"
KEY = "9/core/x86_64/core-common/RPM-GPG-KEY-Rocky-SIG-Core"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from build_world(tmp_path, later_second=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("RSYNC_")}


@contextmanager
def rsync_daemon(served: Path, work: Path) -> Iterator[str]:
    """``rsync --daemon`` serving ``served`` as module "sig", as an unprivileged user (a
    mirror's rsyncd does not read what only root can); yields the module's URL."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "rsyncd.conf"
    conf.write_text(
        f"use chroot = yes\nuid = 65534\ngid = 65534\nlog file = {work / 'rsyncd.log'}\n"
        f"[{MODULE}]\n    path = {served}\n    read only = yes\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [RSYNC or "rsync", "--daemon", "--no-detach", "--config", str(conf), "--port", str(port),
         "--address", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"rsync --daemon ended: {proc.communicate()[1]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "rsync --daemon did not listen"
                time.sleep(0.05)
        yield f"rsync://127.0.0.1:{port}/{MODULE}/"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def pull(url: str, dest: Path, names: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    """One transfer of quick-fedora-mirror: ``names`` (paths in the module) by
    ``--files-from``, with its options."""
    dest.mkdir(parents=True, exist_ok=True)
    transfer = dest.parent / f"{dest.name}-transferlist"
    transfer.write_text("".join(f"{n}\n" for n in names))
    return subprocess.run(
        [RSYNC or "rsync", *RSYNCOPTS, "--no-motd", f"--files-from={transfer}", *extra, url,
         str(dest)],
        capture_output=True, text=True, timeout=120, check=False, env=_env(),
    )  # fmt: skip


def fetch_lists(url: str, dest: Path) -> list[Entry]:
    """The client's first steps: the EXTRAFILES, then the time list; its entries."""
    got = pull(url, dest, list(EXTRAFILES), "--no-dirs", "--relative")
    assert got.returncode == 0, f"fetching {EXTRAFILES}: rsync exit {got.returncode}: {got.stderr}"
    got = pull(url, dest, [TIMELIST_SIG], "--no-dirs", "--relative")
    assert got.returncode == 0, (
        f"fetching {TIMELIST_SIG}: rsync exit {got.returncode}: {got.stderr}"
    )
    return parse_timelist((dest / TIMELIST_SIG).read_text())[0]


def mirror(url: str, dest: Path, since: int) -> None:
    """The client's mirror step from the time list in ``dest``: fetch what changed since
    ``since`` or is missing or has another size, then delete what the list does not name."""
    entries = parse_timelist((dest / TIMELIST_SIG).read_text())[0]
    listed = {e.path: e for e in entries}
    local = {e.path: e for e in scan(dest)}
    wanted = [
        e.path
        for e in entries
        if e.mtime >= since
        or e.path not in local
        or (e.kind != "d" and local[e.path].size != e.size)
    ]
    got = pull(url, dest, wanted)
    assert got.returncode == 0, f"mirroring: rsync exit {got.returncode}: {got.stderr}"
    for path in sorted(set(local) - set(listed), reverse=True):  # children first
        target = dest / path
        if target.is_dir() and not target.is_symlink():
            target.rmdir()
        else:
            target.unlink()


def content(top: Path) -> dict[str, tuple[int, str]]:
    """The files of a served tree or a mirror, without the lists at its top."""
    return {k: v for k, v in tree_listing(top).items() if k not in UNLISTED}


def adopt_files(world: World) -> None:
    """Put what an old scripts' tree has and the reconciler did not publish in production
    (an image, a key at a repo's top), and record it as the walk does."""
    top = world.production / CATEGORY
    (top / IMAGE).parent.mkdir()
    (top / IMAGE).write_bytes(b"\xfd7zXZ an image")
    (top / KEY).write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    tree = PublishedTree(Stage.PRODUCTION, world.production, CATEGORY, "core", "9")
    with StateDB.open(world.root / "state") as state:
        owned = state.inventory.entries(Stage.PRODUCTION, tree.inventory_prefix)
        found = walk_unmanaged(tree, owned, PathPatterns.of(["images"]))
        assert {e.relpath for e in found} == {
            f"{CATEGORY}/9/core/images",
            f"{CATEGORY}/{IMAGE}",
            f"{CATEGORY}/{KEY}",
        }
        state.unmanaged.replace(Stage.PRODUCTION, tree.inventory_prefix, found, datetime.now(UTC))


def _inodes(top: Path) -> dict[str, int]:
    return {name: (top / name).stat().st_ino for name in UNLISTED if (top / name).exists()}


def promote_a_later_compose(world: World, after: int) -> None:
    """sig-data leaves core-common x86_64 upstream; compose, stage and promote that.

    The compose is made in a later second than ``after`` (the newest metadata time the
    mirror has): the client's rsync skips a file whose size and mtime (whole seconds)
    are the same, and the test's composes come faster than real ones, so a
    ``repomd.xml`` of the same size written in the same second would not be fetched.
    """
    while time.time() < after + 1:
        time.sleep(0.05)
    repo = su.upstream_repo_dir(world.upstream_root, PROJECT_ID, "core-common", "x86_64")
    su.remove_packages(repo, [p.name for p in (repo / "Packages").glob("sig-data-*")])
    assert world.run("apply") == 0  # composed and staged
    world.pin(world.staged())
    assert world.run("apply") == 0


def test_a_stock_quick_fedora_mirror_client_mirrors_production_from_the_lists(
    world: World, tmp_path: Path
) -> None:
    top = world.production / CATEGORY
    adopt_files(world)
    before = (top / TIMELIST_SIG).read_text()
    assert world.run("filelist") == 0  # the lists follow the state: now with the adopted files
    assert (top / TIMELIST_SIG_OLD).read_text() == before

    dest = tmp_path / "mirror" / MODULE
    with rsync_daemon(top, tmp_path / "rsyncd") as url:
        # the first run: every list fetched (exit 0), the tree mirrored from them
        start = int(time.time()) - 5  # as the client backdates its last run
        entries = fetch_lists(url, dest)
        for name in (FILELIST, IMAGELIST_SIG, TIMELIST_SIG):
            assert (dest / name).read_bytes() == (top / name).read_bytes()
        # the lists name exactly what the tree holds, the adopted image and key included
        served = scan(top)
        assert [(e.path, e.kind) for e in entries] == [(e.path, e.kind) for e in served]
        assert {e.path: e.size for e in entries if e.kind != "d"} == {
            e.path: e.size for e in served if e.kind != "d"
        }
        assert (dest / FILELIST).read_text() == "".join(f"./{e.path}\n" for e in served)
        assert (dest / IMAGELIST_SIG).read_text() == f"./{IMAGE}\n"
        mirror(url, dest, 0)
        assert content(dest) == content(top)

        # promotions; the second run takes what changed and deletes what went, and
        # nothing the reconciler did not publish is lost on the mirror
        world.pin(world.b)
        assert world.run("apply") == 0
        promote_a_later_compose(world, max(e.mtime for e in entries if e.sha1))
        fetch_lists(url, dest)
        mirror(url, dest, start)
        assert content(dest) == content(top)
        assert (dest / IMAGE).read_bytes() == (top / IMAGE).read_bytes()
        assert (dest / KEY).read_bytes() == (top / KEY).read_bytes()

        # Without the image list the stock client's first fetch fails (as it did before
        # the lists had one): rsync exit 23, and the client retries forever. The next
        # list pass puts it back.
        (top / IMAGELIST_SIG).unlink()
        got = pull(url, tmp_path / "again", list(EXTRAFILES), "--no-dirs", "--relative")
        assert got.returncode == 23, got.stderr
        assert world.run("filelist") == 0
        fetch_lists(url, tmp_path / "again")


def test_a_promotion_keeps_the_old_list_and_rewrites_only_lists_that_changed(
    world: World,
) -> None:
    top = world.production / CATEGORY
    adopt_files(world)
    assert world.run("filelist") == 0
    lists = {name: (top / name).read_bytes() for name in LIST_NAMES}
    inodes = _inodes(top)

    world.pin(world.b)
    assert world.run("apply") == 0
    # the time list before the promotion is kept; the image list did not change, so it
    # is the same file (a mirror does not even see it touched)
    assert (top / TIMELIST_SIG_OLD).read_bytes() == lists[TIMELIST_SIG]
    assert (top / TIMELIST_SIG).read_bytes() != lists[TIMELIST_SIG]
    assert (top / IMAGELIST_SIG).stat().st_ino == inodes[IMAGELIST_SIG]
    for name in (FILELIST, TIMELIST, TIMELIST_SIG, TIMELIST_SIG_OLD):
        assert (top / name).stat().st_ino != inodes[name], f"{name} was not replaced"
    assert (top / TIMELIST).read_bytes() == (top / TIMELIST_SIG).read_bytes()

    # nothing changed since: no list is written again
    inodes = _inodes(top)
    assert world.run("filelist") == 0
    assert _inodes(top) == inodes
    assert not [p for p in top.iterdir() if p.name.endswith(".~tmp~")]


def test_every_list_gets_the_configured_owner(world: World) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving files to other ids needs root")
    top = world.production / CATEGORY
    defaults_file = world.ds.path / "defaults.yaml"
    defaults = yaml.safe_load(defaults_file.read_text())
    defaults["publish"].update(owner=10004, group=10005)  # the toolkit's chown
    defaults_file.write_text(yaml.safe_dump(defaults))
    adopt_files(world)

    assert world.run("filelist") == 0  # the lists change (the adopted files): -old kept
    world.pin(world.b)
    assert world.run("apply") == 0
    names = [*LIST_NAMES, TIMELIST_SIG_OLD]
    assert sorted(_inodes(top)) == sorted(names)
    for name in names:
        info = (top / name).stat()
        assert (name, info.st_uid, info.st_gid) == (name, 10004, 10005)

    # Another owner later: given to every list in place, without rewriting one.
    defaults["publish"].update(owner=10010, group=10011)
    defaults_file.write_text(yaml.safe_dump(defaults))
    inodes = _inodes(top)
    assert world.run("filelist") == 0
    assert _inodes(top) == inodes
    for name in names:
        info = (top / name).stat()
        assert (name, info.st_uid, info.st_gid) == (name, 10010, 10011)


# -- what the lists are made of: the inventory and the unmanaged paths ---------------------

T = 1_700_000_000


def _inv(relpath: str, size: int, kind: InventoryKind = InventoryKind.FILE) -> InventoryEntry:
    return InventoryEntry(relpath, kind, size, T * 10**9, size, None)


def _unm(relpath: str, size: int, kind: InventoryKind = InventoryKind.FILE) -> UnmanagedEntry:
    return UnmanagedEntry(relpath, kind, size, (T + 1) * 10**9, (T + 2) * 10**9, ignored=True)


def test_the_lists_name_the_inventory_and_the_unmanaged_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything listed (and patched, later) is inventory + unmanaged rows, sorted, each
    path once, the inventory's row where both have one; an unmanaged ``repomd.xml`` gets
    its SHA1 from the tree."""
    root, top = tmp_path / "production", tmp_path / "production" / "cat"
    old_repo = top / "9" / "s" / "old" / "repodata"
    old_repo.mkdir(parents=True)
    (old_repo / "repomd.xml").write_bytes(b"<repomd/>\n")
    sha1 = hashlib.sha1(b"<repomd/>\n").hexdigest()
    now = datetime.now(UTC)

    def rows(*entries: tuple[str, str, int, int, str | None]) -> dict[str, str]:
        return render_all(entries)

    with StateDB.open(tmp_path / "state") as db:
        db.inventory.apply_changes(
            Stage.PRODUCTION,
            [_inv("cat/9", 4096, InventoryKind.DIR), _inv("cat/9/s/a.rpm", 5),
             _inv("cat/9/s/both", 7)],
            [],
        )  # fmt: skip
        db.unmanaged.replace(
            Stage.PRODUCTION,
            "cat/9/s/",
            [_unm("cat/9/s/both", 99), _unm("cat/9/s/img.iso", 3),
             _unm("cat/9/s/old", 4096, InventoryKind.DIR),
             _unm("cat/9/s/old/repodata", 4096, InventoryKind.DIR),
             _unm("cat/9/s/old/repodata/repomd.xml", 10)],
            now,
        )  # fmt: skip
        write_production_filelists(db, root, "cat")
        expected = rows(
            ("9", "d", 4096, T, None),
            ("9/s/a.rpm", "f", 5, T, None),
            ("9/s/both", "f", 7, T, None),  # the inventory's
            ("9/s/img.iso", "f", 3, T + 2, None),
            ("9/s/old", "d", 4096, T + 2, None),
            ("9/s/old/repodata", "d", 4096, T + 2, None),
            ("9/s/old/repodata/repomd.xml", "f", 10, T + 2, sha1),
        )
        assert {n: (top / n).read_text() for n in LIST_NAMES} == expected
        assert (top / IMAGELIST_SIG).read_text() == "./9/s/img.iso\n"

        # A later walk: the image went, another came; the lists are patched, not listed
        # whole, to the same lists as listing everything gives.
        def refuse(entries: object) -> dict[str, str]:
            raise AssertionError("the lists were rendered whole")

        monkeypatch.setattr(retiring, "render_all", refuse)
        db.unmanaged.replace(
            Stage.PRODUCTION,
            "cat/9/s/",
            [_unm("cat/9/s/both", 99), _unm("cat/9/s/new.qcow2", 4),
             _unm("cat/9/s/old", 4096, InventoryKind.DIR),
             _unm("cat/9/s/old/repodata", 4096, InventoryKind.DIR),
             _unm("cat/9/s/old/repodata/repomd.xml", 10)],
            now,
        )  # fmt: skip
        db.inventory.apply_changes(Stage.PRODUCTION, [], ["cat/9/s/both"])
        write_production_filelists(db, root, "cat")
        expected = rows(
            ("9", "d", 4096, T, None),
            ("9/s/a.rpm", "f", 5, T, None),
            ("9/s/both", "f", 99, T + 2, None),  # unmanaged, now the inventory lost it
            ("9/s/new.qcow2", "f", 4, T + 2, None),
            ("9/s/old", "d", 4096, T + 2, None),
            ("9/s/old/repodata", "d", 4096, T + 2, None),
            ("9/s/old/repodata/repomd.xml", "f", 10, T + 2, sha1),
        )
        assert {n: (top / n).read_text() for n in LIST_NAMES} == expected
        assert (top / IMAGELIST_SIG).read_text() == "./9/s/new.qcow2\n"
        assert db.inventory.listing_changes(Stage.PRODUCTION) == frozenset()
