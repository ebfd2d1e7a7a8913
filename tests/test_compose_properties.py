"""Property tests of the compose's inputs (issue 13, "Prove it holds"): generated upstream
repository metadata into the compose.

Real createrepo_c metadata of the bundled sample RPMs is mutated by Hypothesis: the
package documents (primary, filelists, other) get packages dropped, duplicated or
reordered, fields replaced by odd values (epoch/version/release, names, checksums,
sizes, hrefs), truncations, flipped bytes, entity declarations, garbage, and a
compression that may not be the one their name says; ``repomd.xml`` gets records
dropped, duplicated, reordered or retyped, checksums, checksum types and sizes that
lie, hrefs that leave the repository, name nothing or are odd (control characters,
unicode, very long, empty), and raw damage of its own (truncation, flipped bytes,
billion laughs, external entities). The metadata is served over real HTTP by the
sample build system (:class:`reconciler.testing.UpstreamServer`).

The property, at two levels:

* fetching one variant (:func:`reconciler.fetching.fetch_variant`, which parses with
  :mod:`reconciler.repodata`) gives valid records, from which a repository is written
  that verifies; or it raises a :class:`~reconciler.errors.ReconcilerError` whose
  message names the URL of the bad file (the variant's ``repomd.xml`` counts: it names
  every file). Never another exception, never a hang;
* the real ``reconciler compose`` exits 0 with a verified compose, or 1 with such a URL
  in its message, a DOOMED compose, the earlier compose and the ``latest-*`` link
  untouched. Never a traceback, never a half-made ``latest-*`` link.

Half of the examples hold only what a valid repository may (odd versions and names, an
empty repository, a package listed twice, other compressions and checksum types): those
must compose. The defects the properties found each have an example test at the end.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import itertools
import lzma
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import createrepo_c as cr
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconciler import repodata
from reconciler import testing as su
from reconciler.errors import IntegrityError, ReconcilerError, UnsafePathError, UpstreamError
from reconciler.fetching import fetch_variant
from reconciler.hostconfig import DownloadConfig
from reconciler.layout import Variant
from reconciler.names import TMP_SUFFIX
from reconciler.placement import Previous, PreviousPackage, VariantSource, choose, plan
from reconciler.selection import PackageFact
from reconciler.upstream import Upstream
from reconciler.verifying import verify_tree
from reconciler.vocabulary import PlacementKind, VariantKind

from .conftest import DesiredState, Host, tree_digest, write_host_config
from .conftest import Upstream as SampleUpstream
from .test_compose import compose_dirs, run_compose

PACKAGE_KINDS = ("primary", "filelists", "other")
RPMS = [
    "sig-data-1.0-1.noarch.rpm",
    "sig-hello-1.0-1.x86_64.rpm",
    "sig-hello-1.1-1.x86_64.rpm",
    "sig-tools-2.0-1.x86_64.rpm",
]
VARIANT = Variant("core-common", "x86_64", VariantKind.BINARY)
LATEST = "latest-SIG-core-9"
#: The longest file name a compose takes: a file system's 255 bytes with room for its
#: temporary suffix.
MAX_NAME_BYTES = 255 - len(TMP_SUFFIX)

# -- the metadata of a repository, as the generator sees it ---------------------------


class Base:
    """A real repository's metadata: the package documents (XML text) and the records
    carried as they are (type -> (file name, bytes))."""

    def __init__(self, docs: dict[str, str], extras: dict[str, tuple[str, bytes]]) -> None:
        self.docs, self.extras = docs, extras

    def __repr__(self) -> str:
        return f"Base({sorted(self.docs)} + {sorted(self.extras)})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def read_base(repo: Path) -> Base:
    docs: dict[str, str] = {}
    extras: dict[str, tuple[str, bytes]] = {}
    for rec in repodata.parse_repomd(repo / "repodata" / "repomd.xml", str(repo)):
        data = (repo / rec.href).read_bytes()
        if rec.type in PACKAGE_KINDS:
            docs[rec.type] = gzip.decompress(data).decode()
        else:
            extras[rec.type] = (rec.plain_name, data)
    assert set(docs) == set(PACKAGE_KINDS)
    return Base(docs, extras)


@dataclass
class Entry:
    """One record of the generated ``repomd.xml`` and the file it names."""

    type: str
    href: str
    content: bytes
    checksum_type: str = "sha256"
    checksum: str | None = None  # None: no <checksum> element
    size: str | None = None  # the text of <size>; None: no <size> element
    served: bool = True  # whether the server has the file at href


@dataclass
class Generated:
    """An upstream repository's metadata: repomd.xml and the files it names.

    ``suspects`` are the hrefs whose URL an error may name besides ``repomd.xml``:
    the files changed, and those named by a changed record."""

    repomd: bytes
    entries: list[Entry]
    suspects: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    damaged_repomd: bool = False
    changed: set[str] = field(default_factory=set)  # package documents whose content changed
    hostile: bool = True  # False: only what a valid repository may hold

    def __repr__(self) -> str:
        records = [(e.type, e.href[:100], e.checksum_type, (e.checksum or "")[:16], e.size,
                    len(e.content), e.served) for e in self.entries]  # fmt: skip
        return f"Generated(notes={self.notes}, records={records}, repomd={self.repomd[:1500]!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def write(self, repo: Path) -> None:
        """Lay the repository out under ``repo`` (its Packages/ left as they are)."""
        shutil.rmtree(repo / "repodata", ignore_errors=True)
        (repo / "repodata").mkdir(parents=True)
        (repo / "repodata" / "repomd.xml").write_bytes(self.repomd)
        for entry in self.entries:
            path = servable(repo, entry.href)
            if entry.served and path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(entry.content)
                except OSError:  # too long a name for this file system: not served
                    pass


def servable(repo: Path, href: str) -> Path | None:
    """Where the sample server would serve ``href`` from, if it can."""
    if not href or "\x00" in href or "\\" in href or href.startswith("/") or "://" in href:
        return None
    if "?" in href or "#" in href or "%" in href:
        return None
    parts = href.split("/")
    if any(p in {"", ".", ".."} for p in parts):
        return None
    return repo.joinpath(*parts)


def sha(kind: str, data: bytes) -> str:
    return hashlib.new(kind, data).hexdigest()


COMPRESSIONS = {"gz": ".gz", "xz": ".xz", "bz2": ".bz2", "zst": ".zst", "none": ""}


def compress(data: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(data, mtime=0)
    if how == "xz":
        return lzma.compress(data)
    if how == "bz2":
        return bz2.compress(data)
    if how == "zst":
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp, "in"), Path(tmp, "out.zst")
            src.write_bytes(data)
            cr.compress_file(str(src), str(dst), cr.ZSTD_COMPRESSION)
            return dst.read_bytes()
    return data


def render_repomd(entries: list[Entry]) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"'
        ' xmlns:rpm="http://linux.duke.edu/metadata/rpm">',
        "  <revision>1700000000</revision>",
    ]
    for e in entries:
        lines.append(f"  <data type={quoteattr(e.type)}>")
        if e.checksum is not None:
            lines.append(
                f"    <checksum type={quoteattr(e.checksum_type)}>{escape(e.checksum)}</checksum>"
            )
        lines.append(f"    <location href={quoteattr(e.href)}/>")
        lines.append("    <timestamp>1700000000</timestamp>")
        if e.size is not None:
            lines.append(f"    <size>{escape(e.size)}</size>")
        lines.append("  </data>")
    lines.append("</repomd>\n")
    return "\n".join(lines)


# -- odd values ------------------------------------------------------------------------

ODD_VALUES = [
    "", " ", "0", "-1", "1:2", "~", "^", "~~", "1.0~rc1", "1.0^git1", "00010", "9" * 40,
    "a" * 300, "1.0-1", "é", "\u2028", "&", "<", "]]>", "%s", "../x", "None", "\ud7ff",
    "\U0001f600",
]  # fmt: skip
#: Odd values that a valid repository may still hold (no control character).
BENIGN_TEXT = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), max_size=20),
)
ODD_TEXT = st.one_of(
    BENIGN_TEXT, st.sampled_from(["\x01", "\x7f", "\n", "\t"]), st.text(max_size=20)
)
ODD_HREF_PARTS = [
    "", "/", "/etc/passwd", "//host/x", "http://evil.invalid/x", "file:///etc/passwd", "..",
    "../x", "a/../../x", "./x", "a//x", "a/./x", "a/", "a\\b", "a\tb", "a\nb", "a b", "a?b=1",
    "a#frag", "%2e%2e/x", "%41", "é", "\u2028", "\x01", "x" * 300, "x" * 2000, ".", "x.~tmp~",
    "repomd.xml", "\U0001f600",
]  # fmt: skip
ODD_HREFS = st.one_of(
    st.sampled_from(ODD_HREF_PARTS),
    st.sampled_from(ODD_HREF_PARTS).map(lambda s: f"repodata/{s}"),
    st.text(max_size=30).map(lambda s: f"repodata/{s}"),
    st.text(max_size=30),
)
ODD_RPM_HREFS = st.one_of(
    st.sampled_from(ODD_HREF_PARTS).map(lambda s: f"Packages/{s}.rpm"),
    st.sampled_from(ODD_HREF_PARTS),
    st.text(max_size=30).map(lambda s: f"Packages/{s}.rpm"),
    st.sampled_from(["Packages/" + "y" * 250 + ".rpm", "Packages/sig-data-1.0-1.noarch.rpm",
                     "Packages/sig-tools-2.0-1.x86_64.rpm", "sig-data-1.0-1.noarch.rpm"]),
)  # fmt: skip
HASHLIB_NAMES = {"sha1": "sha1", "sha": "sha1", "sha224": "sha224", "sha256": "sha256",
                 "SHA256": "sha256", "sha384": "sha384", "sha512": "sha512", "md5": "md5"}  # fmt: skip
CHECKSUM_TYPES = ["sha1", "sha", "sha224", "sha256", "SHA256", "sha384", "sha512", "md5",
                  "", "sha3", "crc32", "unknown", "sha256 "]  # fmt: skip
ODD_SIZES = st.one_of(
    st.sampled_from(["-1", "0", "", "abc", " 12", "1e3", "99999999999999999999999", "-0"]),
    st.integers(-(2**70), 2**70).map(str),
)
ODD_HEX = st.one_of(
    st.sampled_from(["", "None", "0" * 64, "g" * 64, "x"]),
    st.binary(min_size=1, max_size=64).map(lambda b: b.hex()),
)

BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
              for i in range(1, 10))
    + "]>"
)  # fmt: skip
XXE = '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
ENTITY_USES = {BILLION_LAUGHS: "&lol9;", XXE: "&xxe;"}


def attr(value: str, raw: bool) -> str:
    return value if raw else escape(value, {'"': "&quot;"})


# -- mutations of a package document ----------------------------------------------------

PACKAGE_RE = re.compile(r"<package[ >].*?</package>\n?", re.S)


def split_doc(text: str) -> tuple[str, list[str], str]:
    packages = PACKAGE_RE.findall(text)
    if not packages:
        close = text.rfind("</")
        return (text[:close], [], text[close:]) if close >= 0 else (text, [], "")
    start = text.index(packages[0])
    end = text.rindex(packages[-1]) + len(packages[-1])
    return text[:start], packages, text[end:]


FIELD_PATTERNS = {
    "primary": {
        "name": r"(<name>)([^<]*)(</name>)",
        "arch": r"(<arch>)([^<]*)(</arch>)",
        "epoch": r'(<version epoch=")([^"]*)(")',
        "ver": r'(<version epoch="[^"]*" ver=")([^"]*)(")',
        "rel": r'(<version epoch="[^"]*" ver="[^"]*" rel=")([^"]*)(")',
        "pkgid": r'(<checksum type="[^"]*" pkgid="YES">)([^<]*)(<)',
        "checksum_type": r'(<checksum type=")([^"]*)(")',
        "size": r'(<size package=")([^"]*)(")',
        "href": r'(<location href=")([^"]*)(")',
        "sourcerpm": r"(<rpm:sourcerpm>)([^<]*)(<)",
    },
    "filelists": {
        "pkgid": r'(<package pkgid=")([^"]*)(")',
        "name": r'(<package pkgid="[^"]*" name=")([^"]*)(")',
        "arch": r'(<package pkgid="[^"]*" name="[^"]*" arch=")([^"]*)(")',
        "epoch": r'(<version epoch=")([^"]*)(")',
        "ver": r'(<version epoch="[^"]*" ver=")([^"]*)(")',
        "rel": r'(<version epoch="[^"]*" ver="[^"]*" rel=")([^"]*)(")',
        "file": r"(<file>)([^<]*)(</file>)",
    },
}
FIELD_PATTERNS["other"] = {k: v for k, v in FIELD_PATTERNS["filelists"].items() if k != "file"}


@st.composite
def field_value(draw: Any, kind: str, name: str) -> str:
    del kind  # every document takes the same odd values
    if name == "href":
        return str(draw(ODD_RPM_HREFS))
    if name == "checksum_type":
        return str(draw(st.sampled_from(CHECKSUM_TYPES)))
    if name == "pkgid":
        return str(draw(ODD_HEX))
    if name == "size":
        return str(draw(ODD_SIZES))
    return str(draw(ODD_TEXT))


#: Changes to a package document ("field" is the commonest: thrice as likely).
DOC_OPS = ["drop", "duplicate", "reorder", "empty", "field", "field", "field", "base",
           "truncate", "flip", "entities", "garbage", "packages_attr"]  # fmt: skip


@st.composite
def mutated_doc(draw: Any, kind: str, text: str, pkgids: list[str]) -> tuple[str, str]:
    """``text`` (a package document of ``kind``) changed one to three ways; and a note."""
    notes: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        head, packages, tail = split_doc(text)
        op = draw(st.sampled_from(DOC_OPS))
        notes.append(op)
        if op == "drop" and packages:
            del packages[draw(st.integers(0, len(packages) - 1))]
        elif op == "duplicate" and packages:
            copy = packages[draw(st.integers(0, len(packages) - 1))]
            packages.insert(draw(st.integers(0, len(packages))), copy)
        elif op == "reorder" and packages:
            packages = draw(st.permutations(packages))
        elif op == "empty":
            packages = []
        elif op == "field" and packages:
            i = draw(st.integers(0, len(packages) - 1))
            name = draw(st.sampled_from(sorted(FIELD_PATTERNS[kind])))
            if name == "pkgid" and draw(st.booleans()):
                value = draw(st.sampled_from(pkgids))  # another package's checksum
            else:
                value = draw(field_value(kind, name))
            raw = draw(st.booleans()) and draw(st.booleans())
            new = attr(value, raw)
            packages[i] = re.sub(
                FIELD_PATTERNS[kind][name],
                lambda m, new=new: m.group(1) + new + m.group(3),
                packages[i],
                count=1,
            )
            notes[-1] = f"field {name}={value!r} raw={raw}"
        elif op == "base" and packages and kind == "primary":
            i = draw(st.integers(0, len(packages) - 1))
            base = draw(st.sampled_from(["http://evil.invalid/", "", "../", "file:///"]))
            packages[i] = packages[i].replace(
                "<location href=", f"<location xml:base={quoteattr(base)} href=", 1
            )
        elif op == "packages_attr":
            head = re.sub(r'packages="\d+"', f'packages="{draw(ODD_SIZES)}"', head, count=1)
        text = head + "".join(packages) + tail
        data = text.encode("utf-8", "surrogateescape")
        if op == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
        elif op == "entities":
            decl = draw(st.sampled_from(sorted(ENTITY_USES)))
            data = data.replace(b"?>\n", b"?>\n" + decl.encode() + b"\n", 1)
            data = data.replace(b"</summary>", ENTITY_USES[decl].encode() + b"</summary>", 1)
            data = data.replace(b"</file>", ENTITY_USES[decl].encode() + b"</file>", 1)
            data = data.replace(b'ver="1.0"', f'ver="{ENTITY_USES[decl]}"'.encode(), 1)
        elif op == "garbage":
            data = draw(st.binary(max_size=200))
        text = data.decode("utf-8", "surrogateescape")
    return text, ",".join(notes)


def pkgids_of(primary: str) -> list[str]:
    return re.findall(r'pkgid="YES">([^<]*)<', primary)


# -- the generator ------------------------------------------------------------------------


@st.composite
def alike_in_all(draw: Any, docs: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The same packages dropped, duplicated or reordered in primary, filelists and other
    (the metadata stays consistent: an empty repository, a package listed twice...)."""
    notes: list[str] = []
    split = {kind: split_doc(text) for kind, text in docs.items()}
    count = len(split["primary"][1])
    order = list(range(count))
    for op in draw(st.lists(st.sampled_from(["drop", "duplicate", "reorder", "empty"]),
                            max_size=2)):  # fmt: skip
        if op == "drop" and order:
            del order[draw(st.integers(0, len(order) - 1))]
        elif op == "duplicate" and order:
            order.insert(draw(st.integers(0, len(order))), draw(st.sampled_from(order)))
        elif op == "reorder":
            order = draw(st.permutations(order))
        elif op == "empty":
            order = []
        notes.append(f"all: {op}")
    out = {}
    for kind, (head, packages, tail) in split.items():
        assert len(packages) == count
        counted = re.sub(r'packages="\d+"', f'packages="{len(order)}"', head, count=1)
        out[kind] = counted + "".join(packages[i] for i in order) + tail
    return out, notes


BENIGN_FIELDS = ["epoch", "ver", "rel", "name"]


@st.composite
def upstream_metadata(draw: Any, base: Base) -> Generated:
    """An upstream repository's metadata, generated from ``base``: half of the time only
    what a valid repository may hold (odd versions and names, an empty repository, other
    compressions and checksum types), else anything."""
    hostile = draw(st.booleans())
    notes: list[str] = ["hostile" if hostile else "benign"]
    suspects: set[str] = set()
    entries: list[Entry] = []
    ids = pkgids_of(base.docs["primary"])
    docs, alike = draw(alike_in_all(base.docs))
    notes += alike
    changed: set[str] = set()
    if hostile:
        changed = draw(st.sets(st.sampled_from(PACKAGE_KINDS), max_size=3))
    elif draw(st.booleans()):  # a field of primary that any valid value may hold
        head, packages, tail = split_doc(docs["primary"])
        if packages:
            i = draw(st.integers(0, len(packages) - 1))
            name = draw(st.sampled_from(BENIGN_FIELDS))
            value = draw(BENIGN_TEXT)
            pattern = FIELD_PATTERNS["primary"][name]
            new = attr(value, False)
            packages[i] = re.sub(
                pattern, lambda m: m.group(1) + new + m.group(3), packages[i], count=1
            )
            docs["primary"] = head + "".join(packages) + tail
            notes.append(f"primary: {name}={value!r}")
    for kind in PACKAGE_KINDS:
        text = docs[kind]
        touched = False
        if kind in changed:
            text, note = draw(mutated_doc(kind, text, ids))
            notes.append(f"{kind}: {note}")
            touched = True
        how = draw(st.sampled_from(["gz"] * 4 + ["xz", "bz2", "zst", "none"]))
        suffix = COMPRESSIONS[how]
        if hostile and draw(st.integers(0, 5)) == 0:  # a name that lies about the compression
            suffix = draw(st.sampled_from(sorted(set(COMPRESSIONS.values()) - {suffix})))
            notes.append(f"{kind}: {how} named {suffix!r}")
            touched = True
        content = compress(text.encode("utf-8", "surrogateescape"), how)
        href = f"repodata/{sha('sha256', content)}-{kind}.xml{suffix}"
        entries.append(Entry(kind, href, content))
        if touched:
            suspects.add(href)
    for kind, (name, original) in sorted(base.extras.items()):
        if draw(st.integers(0, 3)) == 0:
            continue  # left out
        content = original
        if draw(st.integers(0, 5)) == 0:  # carried as they are: any bytes do
            content = draw(st.binary(max_size=64))
            notes.append(f"{kind}: garbage")
        href = f"repodata/{sha('sha256', content)}-{name}"
        entries.append(Entry(kind, href, content))
        if content != original and kind == "modules":  # read when keep_versions filters
            suspects.add(href)
    for entry in entries:
        entry.checksum = sha("sha256", entry.content)
        entry.size = str(len(entry.content))

    benign_ops = ["shuffle", "checksum_type", "no_size", "upper"]
    hostile_ops = ["href", "checksum_type", "checksum", "size", "type", "drop", "duplicate",
                   "unserved", "extra", "shuffle", "no_checksum"]  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(hostile_ops if hostile else benign_ops))
        if not entries:
            break
        i = draw(st.integers(0, len(entries) - 1))
        entry = entries[i]
        if op == "href":
            entry.href = draw(ODD_HREFS)
        elif op == "checksum_type":
            types = CHECKSUM_TYPES if hostile else sorted(HASHLIB_NAMES)
            entry.checksum_type = draw(st.sampled_from(types))
            algo = HASHLIB_NAMES.get(entry.checksum_type)
            if algo is not None and (not hostile or draw(st.booleans())):
                entry.checksum = sha(algo, entry.content)  # right, in that type
        elif op == "checksum":
            entry.checksum = draw(ODD_HEX)
        elif op == "upper":
            entry.checksum = str(entry.checksum).upper()
        elif op == "no_checksum":
            entry.checksum = None
        elif op == "size":
            entry.size = draw(st.one_of(st.none(), ODD_SIZES))
        elif op == "no_size":
            entry.size = None
        elif op == "type":
            entry.type = draw(
                st.sampled_from([*PACKAGE_KINDS, *sorted(repodata.CARRIED_TYPES), "prestodelta",
                                 "", "x" * 100, "primary_db", "../primary"])
            )  # fmt: skip
        elif op == "drop":
            del entries[i]
        elif op == "duplicate":
            entries.insert(draw(st.integers(0, len(entries))), replace(entry))
        elif op == "unserved":
            entry.served = False
        elif op == "extra":
            entry = Entry(
                draw(st.sampled_from(["updateinfo", "modules", "group", "primary", "other2"])),
                draw(ODD_HREFS),
                b"",
                checksum=sha("sha256", b""),
                size="0",
                served=False,
            )
            entries.append(entry)
        elif op == "shuffle":
            entries[:] = draw(st.permutations(entries))
        notes.append(f"repomd: {op} {entry.type} {entry.href[:80]!r}")
        if hostile:
            suspects.add(entry.href)

    repomd = render_repomd(entries).encode("utf-8", "surrogateescape")
    raw = None
    if hostile:
        raw = draw(st.sampled_from([None] * 8 + ["truncate", "flip", "entities", "garbage"]))
    if raw == "truncate":
        repomd = repomd[: draw(st.integers(0, len(repomd)))]
    elif raw == "flip":
        i = draw(st.integers(0, len(repomd) - 1))
        repomd = repomd[:i] + bytes([repomd[i] ^ draw(st.integers(1, 255))]) + repomd[i + 1 :]
    elif raw == "entities":
        decl = draw(st.sampled_from(sorted(ENTITY_USES)))
        repomd = repomd.replace(b"?>\n", b"?>\n" + decl.encode() + b"\n", 1)
        where = draw(st.sampled_from([b"<revision>", b'href="', b"<size>"]))
        repomd = repomd.replace(where, where + ENTITY_USES[decl].encode(), 1)
    elif raw == "garbage":
        repomd = draw(st.binary(max_size=300))
    if raw:
        notes.append(f"repomd.xml: {raw}")
    return Generated(repomd, entries, suspects, notes, raw is not None, changed, hostile)


def may_refuse(gen: Generated, keep_versions: int) -> bool:
    """Whether a compose may refuse ``gen``: a hostile one, or one whose modules metadata is
    garbage when ``keep_versions`` filters (the compose must read it then, to know which
    packages are modular: :mod:`reconciler.modularity`)."""
    return gen.hostile or (keep_versions > 0 and "modules: garbage" in gen.notes)


# -- what an error must name ----------------------------------------------------------------

URL_SAFE = "/!$&'()*+,;=:@~"


def url_forms(base_url: str, href: str) -> set[str]:
    """The ways a message may spell the URL of ``href``: as is or normalised (``a//./b``
    is ``a/b``), and either percent-encoded."""
    forms = set()
    for path in (href, str(PurePosixPath(href))):
        forms |= {f"{base_url}/{path}", f"{base_url}/{quote(path, safe=URL_SAFE)}"}
    return forms


def assert_names_the_bad_file(text: str, url: str, gen: Generated, packages: bool = False) -> None:
    """``text`` names the URL of a file ``gen`` changed, or of ``repomd.xml``; with
    ``packages`` (primary changed, and packages were to be downloaded), any file's."""
    wanted = {f"{url}/repodata/repomd.xml"}
    if gen.damaged_repomd or packages:  # whatever it names now may be what fails
        wanted.add(f"{url}/")
    for href in gen.suspects:
        wanted |= url_forms(url, href)
    assert any(w in text for w in wanted), (
        f"the message names none of {sorted(wanted)}:\n{text}\n{gen.notes}"
    )


# -- level 1: fetching one variant -------------------------------------------------------------


@dataclass
class Served:
    root: Path
    server: su.UpstreamServer
    base: Base
    counter: Iterator[int]

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(f"Served({self.root})")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    base_repo = root / "base"
    su.write_repo(base_repo, [su.sample_rpm(n) for n in RPMS], extras=True)
    with su.UpstreamServer(root) as server:
        yield Served(root, server, read_base(base_repo), itertools.count())


def fetch_client() -> Upstream:
    return Upstream(DownloadConfig(workers=1, retries=0, backoff=0.0, timeout=10.0))


def check_fetch(served: Served, gen: Generated, keep: int, hashed: bool) -> str:
    """Fetch ``gen`` as a variant and check the property; what happened, for statistics."""
    n = next(served.counter)
    repo = served.root / f"r{n}"
    gen.write(repo)
    url = f"{served.server.base_url}/r{n}"
    work = served.root / f"w{n}"
    work.mkdir()
    try:
        with fetch_client() as up:
            try:
                fetched = fetch_variant(up, url, work, VARIANT, keep, hashed)
            except ReconcilerError as exc:
                assert may_refuse(gen, keep), f"a valid repository was refused: {exc}"
                assert_names_the_bad_file(str(exc), url, gen)
                return type(exc).__name__
            assert not list(work.rglob(f"*{TMP_SUFFIX}"))
            hrefs = fetched.selection.hrefs
            out = work / "out"
            out.mkdir()
            packages = repodata.iter_packages(
                fetched.meta["primary"], fetched.meta.get("filelists"), fetched.meta.get("other")
            )
            written = repodata.write_repo(out, packages, hrefs, fetched.extras, "1700000000")
            assert written == len(hrefs), gen.notes
            assert {f.pkgid: f.href for f in repodata.repo_index(out).values()} == hrefs
            report = verify_tree(out, workers=1)
            problems = [p for p in report.problems if p.message != "missing"]
            assert not problems, (problems, gen.notes)
            assert report.repos == 1 and report.packages == written
            return f"ok ({written} packages)"
    finally:
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


FETCHING = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip


@FETCHING
@given(data=st.data(), keep=st.sampled_from([0, 1, 2]), hashed=st.booleans())
def test_fetched_metadata_is_valid_or_refused_naming_the_url(
    served: Served, data: st.DataObject, keep: int, hashed: bool
) -> None:
    gen = data.draw(upstream_metadata(served.base), label="upstream")
    started = time.monotonic()
    event(check_fetch(served, gen, keep, hashed))
    assert time.monotonic() - started < 10, f"took too long: {gen.notes}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parsing")


PARSING = settings(max_examples=200, deadline=None,
                   suppress_health_check=[HealthCheck.data_too_large])  # fmt: skip


@PARSING
@given(data=st.data())
def test_a_repomd_gives_records_or_an_upstream_error_naming_it(
    served: Served, scratch: Path, data: st.DataObject
) -> None:
    gen = data.draw(upstream_metadata(served.base))
    path = scratch / f"repomd-{next(served.counter)}.xml"
    path.write_bytes(gen.repomd)
    source = "https://build.invalid/p/repo/x86_64/repodata/repomd.xml"
    try:
        records = repodata.parse_repomd(path, source)
    except UpstreamError as exc:
        assert source in str(exc)
        return
    finally:
        path.unlink()
    assert any(r.type == "primary" for r in records)
    for r in records:
        assert all(isinstance(v, str) for v in (r.type, r.href, r.checksum_type, r.checksum))
        assert r.size is None or isinstance(r.size, int)


@PARSING
@given(data=st.data())
def test_a_primary_gives_facts_or_an_upstream_error_naming_it(
    served: Served, scratch: Path, data: st.DataObject
) -> None:
    primary = served.base.docs["primary"]
    text, _note = data.draw(mutated_doc("primary", primary, pkgids_of(primary)))
    how = data.draw(st.sampled_from(sorted(COMPRESSIONS)))
    suffix = data.draw(st.sampled_from(sorted(set(COMPRESSIONS.values()))))
    path = scratch / f"{next(served.counter)}-primary.xml{suffix}"
    path.write_bytes(compress(text.encode("utf-8", "surrogateescape"), how))
    source = "https://build.invalid/p/repo/x86_64/repodata/x-primary.xml.gz"
    try:
        facts = repodata.scan_primary(path, source)
    except UpstreamError as exc:
        assert source in str(exc)
        return
    finally:
        path.unlink()
    for f in facts:
        assert all(isinstance(getattr(f, k), str) for k in ("pkgid", "name", "href", "epoch"))
        assert isinstance(f.size, int)


# -- level 2: the real compose command -------------------------------------------------------

E2E_VARIANTS = [("core-infra", "x86_64"), ("core-common", "x86_64"), ("core-common", "src")]


@dataclass
class World:
    """A sample build system, a desired state, a host (no retries) and a first compose."""

    upstream: SampleUpstream
    desired_state: DesiredState
    host: Host
    pristine: Path  # copies of the variants' upstream repositories
    bases: dict[tuple[str, str], Base]

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(f"World({self.host.root})")

    def url(self, repo: str, arch: str) -> str:
        return f"{self.upstream.server.base_url}{self.upstream.path(repo, arch)}"

    def restore(self, repo: str, arch: str) -> None:
        vdir = self.upstream.repo_dir(repo, arch)
        shutil.rmtree(vdir)
        shutil.copytree(self.pristine / repo / arch, vdir)


@pytest.fixture
def world(cli: Any, tmp_path: Path, upstream: SampleUpstream, desired_state: DesiredState) -> World:
    root = tmp_path / "host"
    root.mkdir()
    download = {"workers": 2, "retries": 0, "backoff": 0.0, "timeout": 10}
    host = Host(write_host_config(root, upstream.server.base_url, download=download), root)
    assert run_compose(cli, host, desired_state).code == 0
    pristine = tmp_path / "pristine"
    bases = {}
    for repo, arch in E2E_VARIANTS:
        shutil.copytree(upstream.repo_dir(repo, arch), pristine / repo / arch)
        bases[(repo, arch)] = read_base(upstream.repo_dir(repo, arch))
    return World(upstream, desired_state, host, pristine, bases)


def check_compose(cli: Any, world: World, url: str, gen: Generated | None) -> str:
    """Run ``reconciler compose`` and check the property; what happened."""
    host = world.host
    release = host.compose_root / "9"
    latest = release / LATEST
    before = os.readlink(latest)
    digest = tree_digest(release / before)
    earlier = set(compose_dirs(host))
    result = run_compose(cli, host, world.desired_state)
    text = result.out + result.err
    assert "Traceback" not in text, text
    (newest,) = set(compose_dirs(host)) - earlier
    assert tree_digest(release / before) == digest, "the earlier compose must not change"
    assert not list(release.glob(f"*{TMP_SUFFIX}")) and not list(newest.rglob(f"*{TMP_SUFFIX}"))
    assert (latest.resolve() / "STATUS").read_text() == "FINISHED\n"
    if result.code == 0:
        assert (newest / "STATUS").read_text() == "FINISHED\n", text
        assert os.readlink(latest) == newest.name
        report = verify_tree(newest / "compose", workers=2)
        assert report.ok, (report.problems, gen)
        return "FINISHED"
    assert result.code == 1, text
    keep = world.desired_state.release["compose"]["keep_versions"]
    assert gen is None or may_refuse(gen, keep), f"a valid repository was refused: {text}"
    assert (newest / "STATUS").read_text() == "DOOMED\n", text
    assert os.readlink(latest) == before, "a failed compose must leave latest-* alone"
    if gen is not None:
        assert_names_the_bad_file(text, url, gen, packages="primary" in gen.changed)
    return "DOOMED"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(data=st.data())
def test_a_compose_of_generated_metadata_finishes_verified_or_fails_safely(
    cli: Any, world: World, data: st.DataObject
) -> None:
    repo, arch = data.draw(st.sampled_from(E2E_VARIANTS), label="variant")
    gen = data.draw(upstream_metadata(world.bases[(repo, arch)]), label="upstream")
    gen.write(world.upstream.repo_dir(repo, arch))
    try:
        event(check_compose(cli, world, world.url(repo, arch), gen))
    finally:
        world.restore(repo, arch)


# -- the defects the properties found, one example each ------------------------------------


def plain_repo(base: Base, **docs: str) -> Generated:
    """``base`` (with ``docs`` instead of its own) gzipped, as createrepo_c lays it out."""
    texts = {**base.docs, **docs}
    entries = []
    for kind in PACKAGE_KINDS:
        content = gzip.compress(texts[kind].encode(), mtime=0)
        entries.append(Entry(kind, f"repodata/{sha('sha256', content)}-{kind}.xml.gz", content))
    for kind, (name, content) in sorted(base.extras.items()):
        entries.append(Entry(kind, f"repodata/{sha('sha256', content)}-{name}", content))
    for e in entries:
        e.checksum, e.size = sha("sha256", e.content), str(len(e.content))
    return Generated(b"", entries, hostile=False)


def record(gen: Generated, kind: str) -> Entry:
    return next(e for e in gen.entries if e.type == kind)


def edit_package(text: str, index: int, name: str, value: str) -> str:
    """Package ``index`` of a primary document with its field ``name`` set to ``value``."""
    head, packages, tail = split_doc(text)
    pattern = FIELD_PATTERNS["primary"][name]
    packages[index] = re.sub(pattern, lambda m: m[1] + attr(value, False) + m[3], packages[index])
    return head + "".join(packages) + tail


def fetch_example(served: Served, gen: Generated, variant: Variant = VARIANT) -> tuple[str, Any]:
    """Serve ``gen`` and fetch it: the variant's URL, and what fetch_variant returned or the
    ReconcilerError it raised (any other exception goes up)."""
    n = next(served.counter)
    gen.repomd = gen.repomd or render_repomd(gen.entries).encode()
    gen.write(served.root / f"x{n}")
    url = f"{served.server.base_url}/x{n}"
    work = served.root / f"xw{n}"
    work.mkdir()
    with fetch_client() as up:
        try:
            return url, fetch_variant(up, url, work, variant, 1, True)
        except ReconcilerError as exc:
            return url, exc


def test_a_record_whose_href_leaves_the_repo_is_refused_naming_repomd(served: Served) -> None:
    gen = plain_repo(served.base)
    record(gen, "primary").href = "../primary.xml.gz"
    url, got = fetch_example(served, gen)
    assert isinstance(got, UnsafePathError)
    assert f"{url}/repodata/repomd.xml: primary record: " in str(got), got
    assert "'../primary.xml.gz'" in str(got)


def test_a_record_with_an_unknown_checksum_type_is_refused_naming_repomd(served: Served) -> None:
    gen = plain_repo(served.base)
    record(gen, "filelists").checksum_type = "sha3"
    url, got = fetch_example(served, gen)
    assert isinstance(got, IntegrityError)
    assert f"{url}/repodata/repomd.xml: filelists record: " in str(got), got
    assert "'sha3'" in str(got)


def test_an_unreadable_primary_is_named_when_it_is_not_the_first_record(served: Served) -> None:
    gen = plain_repo(served.base, primary=served.base.docs["primary"][:600])
    gen.entries.sort(key=lambda e: e.type != "filelists")  # filelists first
    url, got = fetch_example(served, gen)
    assert isinstance(got, UpstreamError)
    assert f"{url}/{record(gen, 'primary').href}: cannot parse primary" in str(got), got
    assert record(gen, "filelists").href not in str(got)


IN_STEP = {
    "one package more": lambda packages: [*packages, packages[0]],  # createrepo_c loops
    "one package less": lambda packages: packages[:-1],  # it would leave one out
    "another order": lambda packages: packages[::-1],  # it would raise its own error
    "no package": lambda packages: [],
}


@pytest.mark.parametrize("kind", ["filelists", "other"])
@pytest.mark.parametrize("change", sorted(IN_STEP))
def test_filelists_and_other_must_list_the_packages_of_primary_in_its_order(
    served: Served, kind: str, change: str
) -> None:
    head, packages, tail = split_doc(served.base.docs[kind])
    gen = plain_repo(served.base, **{kind: head + "".join(IN_STEP[change](packages)) + tail})
    url, got = fetch_example(served, gen)
    assert isinstance(got, UpstreamError), got
    assert str(got).startswith(f"{url}/{record(gen, kind).href}: {kind} ")
    assert f"{url}/{record(gen, 'primary').href}" in str(got)


@pytest.mark.parametrize("kind", ["filelists", "other"])
def test_an_unreadable_filelists_or_other_is_refused_before_any_package_is_placed(
    served: Served, kind: str
) -> None:
    text = served.base.docs[kind]
    gen = plain_repo(served.base, **{kind: text[: len(text) // 2]})
    url, got = fetch_example(served, gen)
    assert isinstance(got, UpstreamError), got
    assert str(got).startswith(f"{url}/{record(gen, kind).href}: cannot parse {kind}")


def test_a_metadata_file_is_asked_for_by_its_name_whatever_its_characters(
    served: Served,
) -> None:
    gen = plain_repo(served.base)
    record(gen, "primary").href = "repodata/prïmary 1.xml.gz"
    _url, got = fetch_example(served, gen)
    assert not isinstance(got, ReconcilerError), got
    assert len(got.selection.chosen) == 3


def test_a_package_is_asked_for_by_its_name_whatever_its_characters() -> None:
    fact = sample_fact(href="Packages/sïg 100%?#.rpm")
    (step,) = plan([choose(VariantSource(VARIANT, "http://h/r", (fact,)), 1, True)], None).steps
    assert step.url == "http://h/r/Packages/s%C3%AFg%20100%25%3F%23.rpm"


def test_a_file_name_too_long_for_a_file_system_is_refused_naming_repomd(served: Served) -> None:
    gen = plain_repo(served.base)
    record(gen, "primary").href = "repodata/" + "x" * 240 + "-primary.xml.gz"
    url, got = fetch_example(served, gen)
    assert isinstance(got, UnsafePathError), got
    assert f"{url}/repodata/repomd.xml: primary record: " in str(got), got
    assert "255 bytes" in str(got)


def test_a_package_file_name_too_long_for_a_file_system_is_refused() -> None:
    longest = sample_fact(href="Packages/" + "y" * (MAX_NAME_BYTES - 4) + ".rpm")
    too_long = sample_fact(pkgid="b" * 64, href="Packages/" + "y" * (MAX_NAME_BYTES - 3) + ".rpm")
    selection = choose(VariantSource(VARIANT, "http://h/r", (longest, too_long)), 0, True)
    assert selection.chosen == (longest,)
    assert selection.problem is not None
    assert f"a file name of {MAX_NAME_BYTES + 1} bytes" in selection.problem


@pytest.mark.parametrize(
    ("kind", "name"), [("group_gz", "comps.xml"), ("updateinfo", "primary.xml.gz")]
)
def test_carried_records_may_not_claim_a_file_name_twice(
    served: Served, kind: str, name: str
) -> None:
    gen = plain_repo(served.base)
    carried = record(gen, kind)
    carried.href = f"repodata/{carried.checksum}-{name}"  # createrepo_c would write both there
    url, got = fetch_example(served, gen)
    assert isinstance(got, UpstreamError), got
    assert f"{url}/repodata/repomd.xml: {kind} record: " in str(got), got
    assert repr(name) in str(got)


@pytest.mark.parametrize(
    ("field_name", "value", "fragment"),
    [
        ("sourcerpm", "", "its source RPM '' is not named"),
        ("sourcerpm", "sources", "its source RPM 'sources' is not named"),
        ("arch", "src", "arch 'src' in a binary repository"),
        ("name", "sig\ntools", "does not read as name-epoch:version-release.arch"),
    ],
)
def test_a_package_rpms_json_cannot_record_is_refused_naming_primary(
    served: Served, field_name: str, value: str, fragment: str
) -> None:
    primary = edit_package(served.base.docs["primary"], 3, field_name, value)  # sig-tools
    gen = plain_repo(served.base, primary=primary)
    url, got = fetch_example(served, gen)
    assert isinstance(got, UpstreamError), got
    assert str(got).startswith(f"{url}/{record(gen, 'primary').href}: package "), got
    assert fragment in str(got)


def test_a_binary_package_in_a_source_repo_is_refused_naming_primary(served: Served) -> None:
    gen = plain_repo(served.base)
    url, got = fetch_example(served, gen, Variant("core-common", "src", VariantKind.SOURCE))
    assert isinstance(got, UpstreamError), got
    assert f"{url}/{record(gen, 'primary').href}: package " in str(got)
    assert "in a source repository" in str(got)


def test_a_package_with_an_unknown_checksum_type_is_refused_naming_primary(
    served: Served,
) -> None:
    primary = edit_package(served.base.docs["primary"], 3, "checksum_type", "sha3")
    gen = plain_repo(served.base, primary=primary)
    url, got = fetch_example(served, gen)
    assert isinstance(got, IntegrityError), got
    assert str(got).startswith(f"{url}/{record(gen, 'primary').href}: package "), got
    assert "'sha3'" in str(got)


def test_entity_declarations_are_not_expanded(served: Served) -> None:
    gen = plain_repo(served.base)
    text = render_repomd(gen.entries).replace("?>\n", f"?>\n{BILLION_LAUGHS}\n", 1)
    gen.repomd = text.replace("<revision>", "<revision>&lol9;", 1).encode()
    started = time.monotonic()
    url, got = fetch_example(served, gen)
    assert isinstance(got, UpstreamError) and f"{url}/repodata/repomd.xml" in str(got)
    assert time.monotonic() - started < 5


def sample_fact(**changes: Any) -> PackageFact:
    fact = PackageFact(
        pkgid="a" * 64, checksum_type="sha256", name="sig", epoch="0", version="1",
        release="1", arch="noarch", size=10, href="Packages/sig-1-1.noarch.rpm",
        sourcerpm="sig-1-1.src.rpm",
    )  # fmt: skip
    return replace(fact, **changes)


def test_a_package_is_linked_only_from_a_checksum_of_the_same_type() -> None:
    fact = sample_fact(pkgid="a" * 40, checksum_type="sha1")  # what was a sha256 value
    prev = Previous(
        "SIG-core-9-20261101.0",
        {
            fact.pkgid: PreviousPackage(
                fact.pkgid, 10, VARIANT, "Packages/s/x.rpm", 1, checksum_type="sha256"
            )
        },
    )
    (step,) = plan([choose(VariantSource(VARIANT, "http://h/r", (fact,)), 1, True)], prev).steps
    assert step.kind is PlacementKind.DOWNLOAD, step.describe()
    assert "sha256" in step.reason and "sha1" in step.reason


@pytest.mark.parametrize("changes", [{"size": 11}, {"checksum_type": "sha1"}])
def test_variants_must_agree_on_what_a_checksum_is(changes: dict[str, Any]) -> None:
    infra = Variant("core-infra", "x86_64", VariantKind.BINARY)
    selections = [
        choose(VariantSource(VARIANT, "http://h/common", (sample_fact(),)), 1, True),
        choose(VariantSource(infra, "http://h/infra", (sample_fact(**changes),)), 1, True),
    ]
    problem = plan(selections, None).problem
    assert problem is not None
    assert problem.startswith("http://h/infra/repodata/repomd.xml: package sig-0:1-1.noarch: ")
    assert "http://h/common/Packages/sig-1-1.noarch.rpm" in problem


def test_a_package_listed_twice_under_two_names_is_placed_once() -> None:
    fact = sample_fact()
    selection = choose(
        VariantSource(VARIANT, "http://h/r", (fact, replace(fact, name=""))), 0, True
    )
    assert selection.chosen == (fact,)
    (step,) = plan([selection], None).placements
    assert len(step.targets) == 1


def rewrite_primary(world: World, repo: str, arch: str, edit: Any) -> Generated:
    vdir = world.upstream.repo_dir(repo, arch)
    base = world.bases[(repo, arch)]
    gen = plain_repo(base, primary=edit(base.docs["primary"], vdir))
    gen.repomd = render_repomd(gen.entries).encode()
    gen.write(vdir)
    return gen


def test_a_compose_downloads_a_package_whose_name_is_not_ascii(
    cli: Any, world: World, tmp_path: Path
) -> None:
    name = "ß-sig-hello-1.1-1.x86_64.rpm"  # new upstream: downloaded, not linked
    shutil.copy(su.sample_rpm("sig-hello-1.1-1.x86_64.rpm"), tmp_path / name)
    su.add_packages(world.upstream.repo_dir("core-infra", "x86_64"), [tmp_path / name])
    try:
        assert check_compose(cli, world, world.url("core-infra", "x86_64"), None) == "FINISHED"
    finally:
        world.restore("core-infra", "x86_64")
    newest = os.readlink(world.host.compose_root / "9" / LATEST)
    tree = world.host.compose_root / "9" / newest / "compose/9/core/x86_64/core-infra"
    assert (tree / "Packages" / "ß" / name).is_file()
    assert world.upstream.server.count(f"Packages/{name}") == 1


def test_a_compose_refuses_a_package_without_a_source_rpm(cli: Any, world: World) -> None:
    def drop_source(text: str, _vdir: Path) -> str:
        return edit_package(text, 0, "sourcerpm", "")

    gen = rewrite_primary(world, "core-infra", "x86_64", drop_source)
    gen.hostile = True
    gen.suspects = {record(gen, "primary").href}
    try:
        assert check_compose(cli, world, world.url("core-infra", "x86_64"), gen) == "DOOMED"
    finally:
        world.restore("core-infra", "x86_64")
