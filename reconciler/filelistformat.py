"""quick-fedora-mirror (QFM) file lists: ``fullfilelist`` and ``fullfiletimelist*``.

The format is the one ``create-filelist`` (quick-fedora-mirror's server side)
writes and the ``quick-fedora-mirror`` client reads, version 2::

    [Version]
    2

    [Files]
    <mtime>\t<type>\t<size>\t<path>
    ...

    [Checksums SHA1]
    <sha1>\t<path>
    ...

    [End]

``mtime`` is max(mtime, ctime) in whole seconds (a new hardlink makes a file
look new, so mirrors pick it up), ``type`` is ``f``, ``d`` or ``l`` (file,
directory, symlink; from lstat), ``size`` is lstat's, and paths are relative
to the directory the lists are written in. Sections are separated by a blank
line (the client's awk scripts end a section at an empty line) and the client
refuses a list whose last two lines do not hold ``[End]``. The checksums are
those of every ``repomd.xml``. ``fullfilelist`` is the plain list of every
entry, files and directories alike, each as ``./<path>`` (create-filelist
writes scandir's path from ``.``).

``imagelist-sig`` names the images among the entries, one ``./<path>`` a line like
``fullfilelist`` (empty when there are none): create-filelist's ``--imagelist``,
which counts as an image every entry whose path ends in ``.<format>`` for one of
productmd's ``SUPPORTED_IMAGE_FORMATS`` (``iso``, ``qcow2``, ``raw.xz``, ...).
quick-fedora-mirror's stock ``EXTRAFILES=(fullfilelist imagelist-$module)`` fetches
it with the time list, and fails when it is missing.

Unlike create-filelist (which writes scandir order), entries are sorted by
path so the lists are deterministic and rewritten only when the tree changes.
Names ending in ``.~tmp~`` (and what is under such directories) and the lists
themselves in the top directory (with ``fullfiletimelist-sig-old``, the previous
``fullfiletimelist-sig`` that the distribution's list script keeps) are never listed.

This module is the format alone, without I/O: rendering, patching and parsing
the lists' text. Scanning a tree and writing the lists into it is
:mod:`reconciler.filelists`.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from functools import cache
from operator import itemgetter
from typing import NamedTuple

from .names import TMP_SUFFIX

FILELIST = "fullfilelist"
IMAGELIST_SIG = "imagelist-sig"
TIMELIST_SIG = "fullfiletimelist-sig"
TIMELIST = "fullfiletimelist"
TIMELIST_SIG_OLD = "fullfiletimelist-sig-old"
#: The lists, in the order they are replaced: the one QFM clients poll goes last (a
#: client that sees the new time list then finds the plain and image lists that match).
LIST_NAMES: tuple[str, ...] = (FILELIST, IMAGELIST_SIG, TIMELIST, TIMELIST_SIG)
#: list -> the name its previous content is kept under when it changes (as
#: ``sync-sig-file-list.sh`` keeps ``fullfiletimelist-sig-old``)
KEPT_OLD: Mapping[str, str] = {TIMELIST_SIG: TIMELIST_SIG_OLD}
#: The vault's time list (``sync-file-list-vault.sh``), beside its ``fullfilelist``.
TIMELIST_VAULT = "fullfiletimelist-vault"
#: The names in the top directory that are never listed: the lists and the kept old one.
UNLISTED = frozenset({*LIST_NAMES, *KEPT_OLD.values()})
#: ... and in a vault's top directory (``mirror/vault/``) its time list as well.
NEVER_LISTED = UNLISTED | {TIMELIST_VAULT}
CHECKSUMMED = "repomd.xml"
VERSION = 2
KINDS = frozenset({"f", "d", "l"})

#: A path the format cannot carry: absolute, an empty, ``.`` or ``..`` part, or a tab,
#: newline or carriage return in it.
_BAD_PATH = re.compile(r"\A/|(?:\A|/)\.{0,2}(?:/|\Z)|[\t\n\r]")


class Entry(NamedTuple):
    """One line of ``[Files]``; ``sha1`` only for ``repomd.xml`` files (a light tuple: a
    production tree lists tens of thousands)."""

    path: str
    kind: str
    size: int
    mtime: int
    sha1: str | None = None


#: An entry as a plain tuple, in :class:`Entry`'s field order (an Entry is one too).
EntryRow = tuple[str, str, int, int, str | None]
_PATH, _KIND, _SIZE, _MTIME = (itemgetter(i) for i in range(4))


# -- rendering ------------------------------------------------------------------------


def _listed(entries: Iterable[EntryRow]) -> list[EntryRow]:
    """The entries to list, sorted by path; refuses what the format cannot carry."""
    result = [e for e in sorted(entries) if _listable(e[0])]
    if not _all_listable(result):
        for entry in result:
            _check_entry(Entry._make(entry))  # raises, naming the first one the format refuses
    return result


def _all_listable(entries: list[EntryRow]) -> bool:
    """The checks of :func:`_check_entry` over all entries at once (a few scans of one
    string instead of a regular expression per path: production lists are long)."""
    if not entries:
        return True
    text = "\n" + "\n".join(map(_PATH, entries)) + "\n"
    if text.count("\n") != len(entries) + 1 or "\t" in text or "\r" in text:
        return False
    # every part on a line of its own: an empty part (or path, or a leading or trailing
    # "/") is an empty line; ".", ".." (and dotfiles: then the exact check decides) start
    # with "."
    parts = text.replace("/", "\n")
    if "\n\n" in parts or "\n." in parts:
        return False
    return (
        set(map(_KIND, entries)) <= KINDS
        and min(map(_SIZE, entries)) >= 0
        and min(map(_MTIME, entries)) >= 0
    )


def _temporary(path: str) -> bool:
    return any(part.endswith(TMP_SUFFIX) for part in path.split("/"))


def _check_entry(entry: Entry) -> None:
    path = entry.path
    if _BAD_PATH.search(path):
        raise ValueError(f"cannot list path {path!r}")
    if entry.kind not in KINDS:
        raise ValueError(f"{path}: unknown kind {entry.kind!r}")
    if entry.size < 0 or entry.mtime < 0:
        raise ValueError(f"{path}: negative size or time")


_HEAD = ["[Version]", str(VERSION), "", "[Files]"]
_CHECKSUMS = "[Checksums SHA1]"


def _file_line(entry: EntryRow) -> str:
    path, kind, size, mtime, _ = entry
    return f"{mtime}\t{kind}\t{size}\t{path}"


def _assemble_timelist(file_lines: list[str], checksum_lines: list[str]) -> str:
    lines = [*_HEAD, *file_lines, "", _CHECKSUMS, *checksum_lines, "", "[End]"]
    return "\n".join(lines) + "\n"


def _timelist_text(listed: list[EntryRow]) -> str:
    return _assemble_timelist(
        list(map(_file_line, listed)),
        [f"{sha1}\t{path}" for path, _, _, _, sha1 in listed if sha1 is not None],
    )


def _filelist_text(listed: list[EntryRow]) -> str:
    return _assemble_filelist(list(map(_PATH, listed)))


def _assemble_filelist(paths: list[str]) -> str:
    return "".join(["./", "\n./".join(paths), "\n"]) if paths else ""


@cache
def image_suffixes() -> tuple[str, ...]:
    """``.<format>`` of each image format productmd knows: create-filelist's test of an
    image. productmd is imported on first use (it is slow to import, and only the lists
    need it); the host's productmd decides, as it does for create-filelist."""
    from productmd.images import SUPPORTED_IMAGE_FORMATS

    return tuple(f".{fmt}" for fmt in SUPPORTED_IMAGE_FORMATS)


def is_image(path: str) -> bool:
    """Whether create-filelist would put ``path`` in the image list (any kind of entry,
    as it does: it tests the path alone)."""
    return path.endswith(image_suffixes())


def _assemble_imagelist(paths: list[str]) -> str:
    suffixes = image_suffixes()
    return _assemble_filelist([p for p in paths if p.endswith(suffixes)])


def _contents(paths: list[str], timelist: str) -> dict[str, str]:
    """Every list, in :data:`LIST_NAMES` order, from the listed paths and the time list."""
    return {
        FILELIST: _assemble_filelist(paths),
        IMAGELIST_SIG: _assemble_imagelist(paths),
        TIMELIST: timelist,
        TIMELIST_SIG: timelist,
    }


def render_timelist(entries: Iterable[EntryRow]) -> str:
    """The ``fullfiletimelist`` text of ``entries``."""
    return _timelist_text(_listed(entries))


def render_filelist(entries: Iterable[EntryRow]) -> str:
    """The ``fullfilelist`` text of ``entries``: ``./<path>`` of each, files and dirs."""
    return _filelist_text(_listed(entries))


def render_imagelist(entries: Iterable[EntryRow]) -> str:
    """The ``imagelist-sig`` text of ``entries``: ``./<path>`` of each image."""
    return _assemble_imagelist(list(map(_PATH, _listed(entries))))


def render_all(entries: Iterable[EntryRow]) -> dict[str, str]:
    """Every list, keyed by file name, in the order to write them (see :data:`LIST_NAMES`).

    The entries (:class:`Entry`, or plain tuples in its field order, as the state's
    inventory gives them) are checked and sorted once for all the lists.
    """
    listed = _listed(entries)
    return _contents(list(map(_PATH, listed)), _timelist_text(listed))


def patch_all(
    filelist: str, timelist: str, changes: Mapping[str, EntryRow | None]
) -> dict[str, str] | None:
    """:func:`render_all` of the entries of ``timelist`` (with its ``filelist``, both as
    this module wrote them; the image list follows from the paths) after ``changes``:
    path -> the entry now, or ``None`` when it is gone. The work is in proportion to the
    lists' length in bytes (a few splits and joins) and to the number of changes, not to
    a Python object per entry.

    ``None`` when the two texts are not a pair this module wrote: render anew then.
    """
    old = _split_lists(filelist, timelist)
    if old is None:
        return None
    paths, file_lines, checksums = old
    update = {path: e for path, e in changes.items() if _listable(path)}
    for entry in update.values():
        if entry is not None:
            _check_entry(Entry._make(entry))
    new_paths: list[str] = []
    new_lines: list[str] = []
    start = 0
    for path in sorted(update):
        at = bisect_left(paths, path, lo=start)
        new_paths += paths[start:at]
        new_lines += file_lines[start:at]
        start = at + 1 if at < len(paths) and paths[at] == path else at
        entry = update[path]
        checksums.pop(path, None)
        if entry is not None:
            new_paths.append(path)
            new_lines.append(_file_line(entry))
            if entry[4] is not None:
                checksums[path] = entry[4]
    new_paths += paths[start:]
    new_lines += file_lines[start:]
    timelist = _assemble_timelist(
        new_lines, [f"{checksums[path]}\t{path}" for path in sorted(checksums)]
    )
    return _contents(new_paths, timelist)


def _listable(path: str) -> bool:
    return path not in NEVER_LISTED and not (TMP_SUFFIX in path and _temporary(path))


def _split_lists(
    filelist: str, timelist: str
) -> tuple[list[str], list[str], dict[str, str]] | None:
    """(paths, ``[Files]`` lines, path -> sha1) of a pair of lists this module wrote."""
    if filelist and not (filelist.startswith("./") and filelist.endswith("\n")):
        return None
    paths = filelist[2:-1].split("\n./") if filelist else []
    lines = timelist.split("\n")
    if lines[:4] != _HEAD or lines[-3:] != ["", "[End]", ""]:
        return None
    files_end = 4 + len(paths)
    if lines[files_end : files_end + 2] != ["", _CHECKSUMS]:
        return None  # not as many [Files] lines as paths
    checksums: dict[str, str] = {}
    for line in lines[files_end + 2 : -3]:
        sha1, tab, path = line.partition("\t")
        if not tab:
            return None
        checksums[path] = sha1
    return paths, lines[4:files_end], checksums


# -- parsing --------------------------------------------------------------------------


def parse_timelist(text: str) -> tuple[list[Entry], dict[str, str]]:
    """``(entries, {path: sha1})`` of a ``fullfiletimelist``; ValueError if malformed.

    Entries carry the SHA1 given for their path. Further ``[Checksums <ALGO>]``
    sections (newer create-filelist writes MD5, SHA256, SHA512) are ignored.
    """
    body = _check_sections(_sections(text))
    entries = _parse_files(body["Files"])
    checksums = _parse_checksums(body["Checksums SHA1"], entries)
    for path, sha1 in checksums.items():
        old = entries[path]
        entries[path] = Entry(old.path, old.kind, old.size, old.mtime, sha1)
    return sorted(entries.values()), checksums


def _check_sections(sections: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    names = [name for name, _ in sections]
    if names[:2] != ["Version", "Files"] or names[-1] != "End":
        raise ValueError(f"sections must be [Version], [Files], ..., [End], not {names}")
    if "Checksums SHA1" not in names:
        raise ValueError("no [Checksums SHA1] section")
    unknown = [n for n in names[2:-1] if not n.startswith("Checksums ")]
    if unknown:
        raise ValueError(f"unknown section [{unknown[0]}]")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated section in {names}")
    body = dict(sections)
    if body["End"]:
        raise ValueError("text after [End]")
    if body["Version"] != [str(VERSION)]:
        raise ValueError(f"unsupported version {body['Version']}")
    return body


def _parse_files(lines: list[str]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 4:
            raise ValueError(f"[Files] line needs 4 tab-separated fields: {line!r}")
        mtime, kind, size, path = fields
        if not (mtime.isdigit() and size.isdigit()):
            raise ValueError(f"bad time or size: {line!r}")
        entry = Entry(path, kind, int(size), int(mtime))
        _check_entry(entry)
        if path in entries:
            raise ValueError(f"{path} listed twice")
        entries[path] = entry
    return entries


def _parse_checksums(lines: list[str], entries: Mapping[str, Entry]) -> dict[str, str]:
    checksums: dict[str, str] = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"[Checksums SHA1] line needs 2 tab-separated fields: {line!r}")
        sha1, path = fields
        if len(sha1) != 40 or any(c not in "0123456789abcdef" for c in sha1):
            raise ValueError(f"bad SHA1: {line!r}")
        if path not in entries or entries[path].kind != "f":
            raise ValueError(f"checksum of {path}, which is not a listed file")
        if path in checksums:
            raise ValueError(f"{path} checksummed twice")
        checksums[path] = sha1
    return checksums


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """``[(name, lines)]`` in order.

    A blank line ends a section (as in the client's awk scripts), so after one
    only another section header may follow.
    """
    sections: list[tuple[str, list[str]]] = []
    after_blank = False
    for line in text.split("\n"):
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], []))
            after_blank = False
        elif not line:
            after_blank = True
        elif not sections:
            raise ValueError(f"text before [Version]: {line!r}")
        elif after_blank:
            raise ValueError(f"line outside any section (after a blank line): {line!r}")
        else:
            sections[-1][1].append(line)
    if not sections:
        raise ValueError("empty file list")
    return sections
