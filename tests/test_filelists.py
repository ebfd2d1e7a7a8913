"""filelists: quick-fedora-mirror's version-2 file lists, scanned, rendered, written, parsed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import filelists
from reconciler.errors import PublishError, UnsafePathError
from reconciler.filelistformat import _check_entry
from reconciler.filelists import (
    FILELIST,
    IMAGELIST_SIG,
    LIST_NAMES,
    TIMELIST,
    TIMELIST_SIG,
    TIMELIST_SIG_OLD,
    UNLISTED,
    Entry,
    image_suffixes,
    is_image,
    parse_timelist,
    patch_all,
    render_all,
    render_filelist,
    render_imagelist,
    render_timelist,
    scan,
    write_if_changed,
)

REPOMD = b'<?xml version="1.0"?>\n<repomd/>\n'


def qfm_time(path: Path) -> int:
    """max(mtime, ctime) in whole seconds; ctime cannot be set, so read it back."""
    info = path.lstat()
    return max(info.st_mtime_ns, info.st_ctime_ns) // 1_000_000_000


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A file, a directory tree with a repomd.xml, a symlink to a dir, and things to skip."""
    top = tmp_path / "top"
    (top / "repo" / "repodata").mkdir(parents=True)
    (top / "a.txt").write_text("hello\n")
    (top / "repo" / "repodata" / "repomd.xml").write_bytes(REPOMD)
    (top / "repo" / FILELIST).write_text("not ours: only the top-level lists are skipped\n")
    (top / "link").symlink_to("repo", target_is_directory=True)
    # Skipped: temporary names (files and directories) and the lists themselves.
    (top / "a.txt.~tmp~").write_text("partial")
    (top / "repodata.~tmp~").mkdir()
    (top / "repodata.~tmp~" / "primary.xml.gz").write_text("partial")
    (top / f".{TIMELIST}.1234.~tmp~").write_text("partial")
    for name in UNLISTED:
        (top / name).write_text("old list\n")
    # Fixed times: one in the past (ctime wins), one in the future (mtime wins).
    os.utime(top / "a.txt", ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    os.utime(top / "repo" / "repodata" / "repomd.xml", (4_000_000_000, 4_000_000_000))
    os.utime(top / "link", (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    return top


def test_scan_and_render_tiny_tree_exactly(tiny: Path) -> None:
    repomd = tiny / "repo" / "repodata" / "repomd.xml"
    assert qfm_time(repomd) == 4_000_000_000
    sha1 = hashlib.sha1(REPOMD).hexdigest()
    t = {rel: qfm_time(tiny / rel) for rel in ("a.txt", "link", "repo", "repo/repodata")}
    dsize = {rel: (tiny / rel).lstat().st_size for rel in ("repo", "repo/repodata")}
    ours = len((tiny / "repo" / FILELIST).read_bytes())
    tf = qfm_time(tiny / "repo" / FILELIST)

    entries = scan(tiny)
    assert entries == [
        Entry("a.txt", "f", 6, t["a.txt"]),
        Entry("link", "l", 4, t["link"]),
        Entry("repo", "d", dsize["repo"], t["repo"]),
        Entry("repo/fullfilelist", "f", ours, tf),
        Entry("repo/repodata", "d", dsize["repo/repodata"], t["repo/repodata"]),
        Entry("repo/repodata/repomd.xml", "f", len(REPOMD), 4_000_000_000, sha1),
    ]
    assert render_timelist(entries) == (
        "[Version]\n"
        "2\n"
        "\n"
        "[Files]\n"
        f"{t['a.txt']}\tf\t6\ta.txt\n"
        f"{t['link']}\tl\t4\tlink\n"
        f"{t['repo']}\td\t{dsize['repo']}\trepo\n"
        f"{tf}\tf\t{ours}\trepo/fullfilelist\n"
        f"{t['repo/repodata']}\td\t{dsize['repo/repodata']}\trepo/repodata\n"
        f"4000000000\tf\t{len(REPOMD)}\trepo/repodata/repomd.xml\n"
        "\n"
        "[Checksums SHA1]\n"
        f"{sha1}\trepo/repodata/repomd.xml\n"
        "\n"
        "[End]\n"
    )
    assert render_filelist(entries) == (
        "./a.txt\n./link\n./repo\n./repo/fullfilelist\n./repo/repodata\n./repo/repodata/repomd.xml\n"
    )
    lists = render_all(entries)
    # the polled list goes last, after the plain and image lists that match it
    assert list(lists) == [FILELIST, IMAGELIST_SIG, TIMELIST, TIMELIST_SIG]
    assert lists[TIMELIST] == lists[TIMELIST_SIG] == render_timelist(entries)
    assert lists[FILELIST] == render_filelist(entries)
    assert lists[IMAGELIST_SIG] == "", "no image: written, but empty"


def test_scan_times_are_max_of_mtime_and_ctime(tiny: Path) -> None:
    by_path = {e.path: e for e in scan(tiny)}
    assert by_path["a.txt"].mtime > 1_500_000_000  # ctime (now) is newer than mtime
    assert by_path["repo/repodata/repomd.xml"].mtime == 4_000_000_000  # mtime in the future


def test_render_is_sorted_and_skips_lists_and_tmp(tiny: Path) -> None:
    entries = scan(tiny)
    shuffled = [*reversed(entries), Entry(FILELIST, "f", 1, 1), Entry("x/y.~tmp~", "f", 1, 1)]
    assert render_timelist(shuffled) == render_timelist(entries)
    assert render_filelist(shuffled) == render_filelist(entries)


def test_render_empty_tree(tmp_path: Path) -> None:
    assert scan(tmp_path) == []
    text = render_timelist([])
    assert text == "[Version]\n2\n\n[Files]\n\n[Checksums SHA1]\n\n[End]\n"
    assert parse_timelist(text) == ([], {})
    assert render_filelist([]) == ""


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (Entry("a\tb", "f", 1, 1), "cannot list path"),
        (Entry("a\nb", "f", 1, 1), "cannot list path"),
        (Entry("/abs", "f", 1, 1), "cannot list path"),
        (Entry("a/../b", "f", 1, 1), "cannot list path"),
        (Entry("a//b", "f", 1, 1), "cannot list path"),
        (Entry("", "d", 1, 1), "cannot list path"),
        (Entry("a", "x", 1, 1), "unknown kind"),
        (Entry("a", "f", -1, 1), "negative size or time"),
    ],
)
def test_render_refuses_what_the_format_cannot_carry(entry: Entry, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_timelist([entry])


def test_the_image_list_names_what_create_filelist_counts_as_an_image() -> None:
    """create-filelist's ``--imagelist``: every entry whose path ends in ``.<format>`` of
    one of productmd's image formats, written as ``./<path>`` like ``fullfilelist``."""
    import productmd.images

    assert image_suffixes() == tuple(f".{f}" for f in productmd.images.SUPPORTED_IMAGE_FORMATS)
    rows = [
        (path, kind, 1, 1, None)
        for path, kind in [
            ("9/altarch/images", "d"),
            ("9/altarch/images/Rocky-9-RaspberryPi.raw.xz", "f"),
            ("9/altarch/images/Rocky-9-RaspberryPi.raw.xz.CHECKSUM", "f"),
            ("9/altarch/images/boot.iso", "f"),
            ("9/altarch/images/disk.raw", "f"),
            ("9/altarch/images/iso", "f"),  # no dot, no image
            ("9/altarch/images/latest.qcow2", "l"),  # the path decides, not the kind
            ("9/altarch/images/vm.vagrant-libvirt.box", "f"),
            ("9/altarch/images/x.ISO", "f"),  # case matters, as in create-filelist
            ("9/core/source/core-common/tree.tar.gz", "f"),  # tar.gz is a productmd format
            ("9/core/x86_64/core-common/Packages/s/sig-hello-1.0-1.x86_64.rpm", "f"),
            ("9/core/x86_64/core-common/repodata/repomd.xml", "f"),
        ]
    ]
    expected = (
        "./9/altarch/images/Rocky-9-RaspberryPi.raw.xz\n"
        "./9/altarch/images/boot.iso\n"
        "./9/altarch/images/disk.raw\n"
        "./9/altarch/images/latest.qcow2\n"
        "./9/altarch/images/vm.vagrant-libvirt.box\n"
        "./9/core/source/core-common/tree.tar.gz\n"
    )
    assert render_imagelist(reversed(rows)) == expected
    assert render_all(rows)[IMAGELIST_SIG] == expected
    assert is_image("a/b.iso") and not is_image("a/b.iso.asc")
    # The image list follows the listed paths: a patch that removes an image drops it.
    lists = render_all(rows)
    patched = patch_all(lists[FILELIST], lists[TIMELIST], {"9/altarch/images/boot.iso": None})
    assert patched is not None
    assert patched[IMAGELIST_SIG] == expected.replace("./9/altarch/images/boot.iso\n", "")


def test_scan_missing_top_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "nope")


# -- round trip and parsing -----------------------------------------------------------


def test_round_trip(tiny: Path) -> None:
    entries = scan(tiny)
    parsed, checksums = parse_timelist(render_timelist(entries))
    assert parsed == entries
    assert checksums == {"repo/repodata/repomd.xml": hashlib.sha1(REPOMD).hexdigest()}


_segment = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/\t\n\r\0"),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in {".", ".."} and not s.endswith(".~tmp~"))
_entries = st.lists(
    st.builds(
        Entry,
        path=st.lists(_segment, min_size=1, max_size=3).map("/".join),
        kind=st.sampled_from(["f", "d", "l"]),
        size=st.integers(0, 2**40),
        mtime=st.integers(0, 2**33),
        sha1=st.none(),
    ),
    unique_by=lambda e: e.path,
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(_entries, st.data())
def test_round_trip_property(entries: list[Entry], data: st.DataObject) -> None:
    entries = [e for e in entries if e.path not in UNLISTED]
    with_sums = [
        Entry(e.path, e.kind, e.size, e.mtime, hashlib.sha1(e.path.encode()).hexdigest())
        if e.kind == "f" and data.draw(st.booleans())
        else e
        for e in entries
    ]
    parsed, checksums = parse_timelist(render_timelist(with_sums))
    assert parsed == sorted(with_sums)
    assert checksums == {e.path: e.sha1 for e in with_sums if e.sha1}


GOOD = (
    "[Version]\n2\n\n[Files]\n"
    "1700000000\td\t4096\trepo\n"
    "1700000001\tf\t12\trepo/repomd.xml\n"
    "\n[Checksums SHA1]\n"
    f"{'a' * 40}\trepo/repomd.xml\n"
    "\n[End]\n"
)


def test_parse_good_and_tolerated_extras() -> None:
    entries, sums = parse_timelist(GOOD)
    assert entries == [
        Entry("repo", "d", 4096, 1700000000),
        Entry("repo/repomd.xml", "f", 12, 1700000001, "a" * 40),
    ]
    assert sums == {"repo/repomd.xml": "a" * 40}
    # Newer create-filelist also writes other checksum sections: ignored.
    more = GOOD.replace(
        "\n[End]", "\n[Checksums SHA256]\n" + "b" * 64 + "\trepo/repomd.xml\n\n[End]"
    )
    assert parse_timelist(more) == (entries, sums)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (GOOD.replace("\n[End]\n", ""), "sections"),
        (GOOD.replace("[Files]", "[Filez]"), "sections"),
        (GOOD.replace("[Version]\n2\n\n", ""), "sections"),
        (GOOD.replace("[Checksums SHA1]", "[Checksums MD5]"), "SHA1"),
        (GOOD.replace("[Version]\n2", "[Version]\n3"), "version"),
        (GOOD.replace("[Version]\n2", "[Version]\ntwo"), "version"),
        (GOOD.replace("\t4096\trepo\n", "\trepo\n"), "4 tab-separated"),
        (GOOD.replace("d\t4096\trepo", "d\t4096\trepo\textra"), "4 tab-separated"),
        (GOOD.replace("1700000000\td", "17e8\td"), "time or size"),
        (GOOD.replace("\td\t", "\tq\t"), "kind"),
        (GOOD.replace("\trepo/repomd.xml\n\n[End]", "\tnope\n\n[End]"), "not a listed file"),
        (GOOD.replace("a" * 40, "a" * 39), "SHA1"),
        (GOOD.replace("\trepo\n", "\trepo\n\n"), "outside any section"),
        (GOOD + "junk\n", "after"),
        ("junk\n" + GOOD, "before"),
        ("", "empty"),
        (GOOD.replace("[Files]\n", "[Files]\n1\tf\t1\ta\n1\tf\t1\ta\n"), "twice"),
        (GOOD.replace("\n[End]", "\n[Other]\n\n[End]"), "unknown section"),
    ],
)
def test_parse_rejects_malformed(bad: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_timelist(bad)


@pytest.mark.skipif(shutil.which("awk") is None, reason="needs awk")
def test_quick_fedora_mirror_client_reads_it(tiny: Path) -> None:
    """The client's own checks (zsh + awk in quick-fedora-mirror) accept our list."""
    lists = tiny.parent / "lists"
    lists.mkdir()
    text = render_timelist(scan(tiny))
    (lists / TIMELIST_SIG).write_text(text)
    flversion = subprocess.run(
        ["awk", "-F", "\t", r"/^\[Version/ {s=1; next} /^$/ {exit} {if (s) print $0}"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert flversion == "2\n"
    assert "[End]" in text.splitlines()[-2:]  # tail -2 | grep -q '^\[End\]$'
    files = subprocess.run(
        [
            "awk",
            "-F",
            "\t",
            r'/\[Files/ {s=1;next} /^$/ {s=0;next} {if (s && $1 >= 0 && ($2 == "f" || $2 == "l")) print "sig/" $4 "\t" $3}',
            str(lists / TIMELIST_SIG),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert files == [
        "sig/a.txt\t6",
        "sig/link\t4",
        f"sig/repo/fullfilelist\t{(tiny / 'repo' / FILELIST).stat().st_size}",
        f"sig/repo/repodata/repomd.xml\t{len(REPOMD)}",
    ]


# -- writing --------------------------------------------------------------------------


def _ident(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def test_write_if_changed(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "repo" / "repodata").mkdir(parents=True)
    (top / "repo" / "repodata" / "repomd.xml").write_bytes(REPOMD)
    names = list(LIST_NAMES)

    lists = render_all(scan(top))
    assert write_if_changed(top, lists) == names
    for name in names:
        assert (top / name).read_text() == lists[name]
        assert (top / name).stat().st_mode & 0o777 == 0o644  # mirrors read them
    assert not (top / TIMELIST_SIG_OLD).exists(), "no previous list to keep"
    before = {name: _ident(top / name) for name in names}

    # The lists themselves are not listed, so rescanning gives the same lists.
    again = render_all(scan(top))
    assert again == lists
    assert write_if_changed(top, again) == []
    assert {name: _ident(top / name) for name in names} == before

    # A change: replaced by rename (new inode), only the lists whose content changed; the
    # polled list's previous content is kept first, as the distribution's script does.
    (top / "repo" / "repodata" / "repomd.xml").write_bytes(REPOMD + b"<!-- new -->\n")
    changed = render_all(scan(top))
    assert changed[FILELIST] == lists[FILELIST]
    assert write_if_changed(top, changed) == [TIMELIST, TIMELIST_SIG_OLD, TIMELIST_SIG]
    for name in (FILELIST, IMAGELIST_SIG):
        assert _ident(top / name) == before[name]
    for name in (TIMELIST, TIMELIST_SIG):
        assert (top / name).stat().st_ino != before[name][0]
        assert (top / name).read_text() == changed[name]
    assert (top / TIMELIST_SIG_OLD).read_text() == lists[TIMELIST_SIG]
    assert not [p for p in top.iterdir() if p.name.endswith(".~tmp~")]
    # the kept list is not listed either
    assert render_all(scan(top)) == changed

    # Unchanged again: the kept list stays as it is too.
    old = _ident(top / TIMELIST_SIG_OLD)
    assert write_if_changed(top, changed) == []
    assert _ident(top / TIMELIST_SIG_OLD) == old


def test_the_old_list_is_only_kept_from_a_list_that_was_there(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    (tmp_path / "elsewhere").write_text("not a list of ours\n")
    (top / TIMELIST_SIG).symlink_to(tmp_path / "elsewhere")
    assert write_if_changed(top, {TIMELIST_SIG: "new\n"}) == [TIMELIST_SIG]
    assert not (top / TIMELIST_SIG_OLD).exists(), "a symlink is replaced, not kept"
    # a writer killed between keeping the old list and renaming the new one left a
    # temporary file: cleaned up, and the old list is kept (again) before the new one
    (top / f".{TIMELIST_SIG_OLD}.99999.~tmp~").write_text("partial")
    assert write_if_changed(top, {TIMELIST_SIG: "newer\n"}) == [TIMELIST_SIG_OLD, TIMELIST_SIG]
    assert (top / TIMELIST_SIG_OLD).read_text() == "new\n"
    assert sorted(p.name for p in top.iterdir()) == [TIMELIST_SIG, TIMELIST_SIG_OLD]


def test_every_list_gets_the_owner_and_group(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to other ids needs root")
    top = tmp_path / "top"
    top.mkdir()
    first = render_all([("a", "f", 1, 1, None)])
    assert write_if_changed(top, first, owner=4242, group=4343) == list(LIST_NAMES)
    second = render_all([("b", "f", 1, 1, None)])
    write_if_changed(top, second, owner=4242, group=4343)
    for name in (*LIST_NAMES, TIMELIST_SIG_OLD):
        info = (top / name).stat()
        assert (name, info.st_uid, info.st_gid) == (name, 4242, 4343)

    # Other ids later (or ones set by hand): corrected in place, nothing rewritten.
    os.chown(top / FILELIST, 0, 0)
    inodes = {name: (top / name).stat().st_ino for name in UNLISTED}
    assert write_if_changed(top, second, owner=10004, group=10005) == []
    for name in UNLISTED:
        info = (top / name).stat()
        assert (info.st_ino, info.st_uid, info.st_gid) == (inodes[name], 10004, 10005)
    # Only the owner given: the group stays.
    assert write_if_changed(top, second, owner=7) == []
    assert {((top / n).stat().st_uid, (top / n).stat().st_gid) for n in UNLISTED} == {(7, 10005)}


def test_a_list_that_cannot_be_given_its_owner_is_not_put_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "top"
    top.mkdir()
    write_if_changed(top, {FILELIST: "./a\n"})

    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(filelists.os, "fchown", refuse)
    with pytest.raises(PublishError, match=rf"{FILELIST} owner 10004:10005: .*not permitted"):
        write_if_changed(top, {FILELIST: "./b\n"}, owner=10004, group=10005)
    assert (top / FILELIST).read_text() == "./a\n"
    assert [p.name for p in top.iterdir()] == [FILELIST], "no temporary file left"


def test_write_if_changed_replaces_a_symlink_without_following_it(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("same\n")
    top = tmp_path / "top"
    top.mkdir()
    (top / FILELIST).symlink_to(target)
    assert write_if_changed(top, {FILELIST: "same\n"}) == [FILELIST]
    assert not (top / FILELIST).is_symlink()
    assert target.read_text() == "same\n"


@pytest.mark.parametrize("name", ["", "a/b", "..", "x.~tmp~"])
def test_write_if_changed_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        write_if_changed(tmp_path, {name: "x"})


_tricky_path = st.text(alphabet="a./\t\n\r~", max_size=8)


@settings(max_examples=400, deadline=None)
@given(st.lists(_tricky_path, max_size=6))
def test_the_whole_list_check_agrees_with_the_check_of_each_entry(paths: list[str]) -> None:
    # the fast check (a few scans of all paths joined) must refuse exactly what checking
    # every entry on its own refuses
    entries = [Entry(p, "f", 1, 1) for p in dict.fromkeys(paths)]

    def each_ok() -> bool:
        try:
            for e in entries:
                if e.path not in UNLISTED and ".~tmp~" not in e.path:
                    _check_entry(e)
        except ValueError:
            return False
        return True

    listed = [e for e in entries if ".~tmp~" not in e.path]
    try:
        render_all(listed)
    except ValueError as exc:
        assert not each_ok(), exc
    else:
        assert each_ok()


# -- patching the lists with the changes (what a publish to production does) -----------

_small_path = st.lists(
    st.sampled_from(["a", "b", "c", "repodata", "x.~tmp~", "p.iso", "q.raw.xz"]),
    min_size=1,
    max_size=3,
).map("/".join) | st.sampled_from([FILELIST, TIMELIST, IMAGELIST_SIG, "z"])
_row = st.builds(
    lambda path, kind, size, mtime, sum_: (path, kind, size, mtime, sum_),
    _small_path,
    st.sampled_from(["f", "d", "l"]),
    st.integers(0, 10**6),
    st.integers(0, 2**33),
    st.none() | st.sampled_from(["1" * 40, "2" * 40]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_row, unique_by=lambda r: r[0], max_size=12), st.data())
def test_patching_the_changes_in_equals_rendering_anew(
    rows: list[tuple[str, str, int, int, str | None]], data: st.DataObject
) -> None:
    inventory = {r[0]: r for r in rows}
    lists = render_all(inventory.values())
    for _ in range(3):  # several publishes in a row, each patching the last lists
        changes: dict[str, tuple[str, str, int, int, str | None] | None] = {}
        for path in data.draw(st.lists(_small_path, max_size=6)):
            if data.draw(st.booleans()):
                changes[path] = None  # gone (whether it was there or not)
                inventory.pop(path, None)
            else:
                row = data.draw(_row)
                changes[path] = inventory[path] = (path, *row[1:])
        patched = patch_all(lists[FILELIST], lists[TIMELIST], changes)
        assert patched == render_all(inventory.values())
        assert patched is not None
        lists = patched


@pytest.mark.parametrize(
    ("filelist", "timelist"),
    [
        ("./a\n./b\n", "[Version]\n2\n\n[Files]\n1\tf\t1\ta\n\n[Checksums SHA1]\n\n[End]\n"),
        ("./a\n", "[Version]\n1\n\n[Files]\n1\tf\t1\ta\n\n[Checksums SHA1]\n\n[End]\n"),
        ("./a\n", "[Version]\n2\n\n[Files]\n1\tf\t1\ta\n\n[Checksums SHA1]\n\n[End]"),
        ("./a\n", "[Version]\n2\n\n[Files]\n1\tf\t1\ta\n\n[Checksums SHA1]\nbad\n\n[End]\n"),
        ("a\n", "[Version]\n2\n\n[Files]\n1\tf\t1\ta\n\n[Checksums SHA1]\n\n[End]\n"),
        ("./a", "[Version]\n2\n\n[Files]\n1\tf\t1\ta\n\n[Checksums SHA1]\n\n[End]\n"),
        ("", "old list\n"),
    ],
    ids=[
        "fewer lines",
        "version",
        "no final newline",
        "checksum line",
        "no ./",
        "no newline",
        "foreign",
    ],
)
def test_lists_not_written_here_are_not_patched(filelist: str, timelist: str) -> None:
    assert patch_all(filelist, timelist, {"a": None}) is None


def test_a_patched_entry_the_format_cannot_carry_is_refused() -> None:
    lists = render_all([("a", "f", 1, 1, None)])
    with pytest.raises(ValueError, match="cannot list path"):
        patch_all(lists[FILELIST], lists[TIMELIST], {"b//c": ("b//c", "f", 1, 1, None)})
