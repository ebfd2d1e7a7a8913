"""Reading a repository's ``modules.yaml`` and writing it with some stream versions left out.

The file is a YAML stream of documents (libmodulemd's format): ``modulemd`` (a
module stream version: ``data.name``, ``stream``, ``version``, ``context``, and
``artifacts.rpms``, the NEVRAs it is built of), ``modulemd-defaults``,
``modulemd-obsoletes``, ``modulemd-translations``. Only what
:mod:`reconciler.modularity` needs is read from it; every scalar is read as the
string it is (libmodulemd's way: ``stream: 1.10`` is ``"1.10"``, not a float).

The file is decompressed (gzip, bzip2, xz, zstd, as createrepo_c detects them) into
memory at most ``download.max_metadata_bytes`` long: the compressed size the
upstream states says nothing of what it holds. A filtered file keeps the text of
every document it keeps as it was (no re-serialising: libmodulemd reads it as it
read the upstream's), is checked to read back as exactly those documents, and is
gzip-compressed without a timestamp, so that the same input gives the same bytes
in every compose (a repo whose input did not change keeps its metadata).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import createrepo_c as cr

from .errors import UpstreamError
from .fsutil import READ_ONLY, atomic_write
from .modularity import ModuleStream, nevra_key

if TYPE_CHECKING:
    import yaml

#: The document type of a module stream version.
MODULEMD = "modulemd"
#: The compressions the standard library reads, by createrepo_c's name for them.
_STDLIB = {cr.NO_COMPRESSION: "", cr.GZ_COMPRESSION: "gz", cr.BZ2_COMPRESSION: "bz2",
           cr.XZ_COMPRESSION: "xz"}  # fmt: skip
# PyYAML is imported in the functions that read a modules file: a plan reads repos'
# metadata (the package diff of a new compose), most repos carry no modules, and a
# cached pass must not pay for the import (tests/test_recordcache.py).


def _loader() -> type[yaml.CBaseLoader]:
    """Reads only strings, lists and mappings (as libmodulemd reads scalars: as they are)."""
    import yaml

    return yaml.CBaseLoader


@dataclass(frozen=True, slots=True)
class ModulesFile:
    """A ``modules.yaml``: the text of each document, and its module stream versions."""

    path: Path
    documents: tuple[str, ...]  # each a whole YAML document, ``---`` to ``...``
    streams: tuple[ModuleStream, ...]


def read_modules(path: Path, source: str, max_bytes: int) -> ModulesFile:
    """The documents of the (compressed) ``modules.yaml`` at ``path``; ``source`` (its
    URL) names it in every error."""
    import yaml

    raw = _decompressed(path, source, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpstreamError(f"{source}: modules metadata is not UTF-8 ({exc})") from None
    try:
        documents = _split(text)
        loaded = [_load(doc) for doc in documents]
    except yaml.YAMLError as exc:
        raise UpstreamError(f"{source}: modules metadata is not valid YAML ({exc})") from None
    streams = []
    for index, doc in enumerate(loaded):
        stream = _stream(doc, index, source)
        if stream is not None:
            streams.append(stream)
    return ModulesFile(path, tuple(documents), tuple(streams))


def write_modules(
    modules: ModulesFile, drop: Sequence[ModuleStream], dest: Path, source: str
) -> None:
    """Write ``modules`` without the documents of ``drop`` to ``dest`` (gzip)."""
    import yaml

    gone = {s.index for s in drop}
    kept = [doc for i, doc in enumerate(modules.documents) if i not in gone]
    text = "".join(kept)
    # the documents were cut out of the upstream's text: they must read back as they were
    if list(yaml.load_all(text, Loader=_loader())) != [_load(doc) for doc in kept]:
        raise UpstreamError(f"{source}: modules metadata could not be filtered as it is")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as out:
        out.write(text.encode("utf-8"))
    atomic_write(dest, buffer.getvalue(), READ_ONLY)


def _decompressed(path: Path, source: str, max_bytes: int) -> bytes:
    try:
        kind = cr.detect_compression(str(path))
    except Exception as exc:  # createrepo_c raises plain exceptions
        raise UpstreamError(f"{source}: cannot read modules metadata ({exc})") from exc
    too_large = UpstreamError(
        f"{source}: modules metadata is more than download.max_metadata_bytes "
        f"({max_bytes}) uncompressed"
    )
    if kind == cr.ZSTD_COMPRESSION:
        data = _zstd(path, source, max_bytes)
    elif kind in _STDLIB:
        try:
            data = _read(path, _STDLIB[kind], max_bytes + 1)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise UpstreamError(f"{source}: cannot decompress modules metadata ({exc})") from exc
    else:
        raise UpstreamError(
            f"{source}: modules metadata in a compression the compose cannot read "
            f"({cr.compression_suffix(kind) or kind})"
        )
    if len(data) > max_bytes:
        raise too_large
    return data


def _read(path: Path, kind: str, size: int) -> bytes:
    """At most ``size`` bytes of the content of ``path``, compressed with ``kind``."""
    with path.open("rb") as raw:
        if kind == "gz":
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                return unzipped.read(size)
        if kind == "bz2":
            with bz2.BZ2File(raw, "rb") as unzipped:
                return unzipped.read(size)
        if kind == "xz":
            with lzma.LZMAFile(raw, "rb") as unzipped:
                return unzipped.read(size)
        return raw.read(size)


def _zstd(path: Path, source: str, max_bytes: int) -> bytes:
    """zstd has no decompressor in the standard library (before 3.14): the ``zstd``
    command's output, read no further than the cap."""
    try:
        proc = subprocess.Popen(
            ["zstd", "-d", "-c", "-q", "--", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise UpstreamError(
            f"{source}: modules metadata is zstd-compressed and zstd cannot run ({exc})"
        ) from exc
    assert proc.stdout is not None and proc.stderr is not None
    with proc:
        data = proc.stdout.read(max_bytes + 1)
        if len(data) > max_bytes:
            proc.kill()
            return data
        err = proc.stderr.read()
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip()
        raise UpstreamError(f"{source}: cannot decompress modules metadata ({message})")
    return data


def _load(document: str) -> Any:
    import yaml

    return yaml.load(document, Loader=_loader())  # noqa: S506 - strings, lists, mappings only


def _split(text: str) -> list[str]:
    """The documents of a YAML stream, each as its own text from ``---`` to ``...``."""
    import yaml

    documents: list[str] = []
    start: yaml.DocumentStartEvent | None = None
    for event in yaml.parse(text, Loader=_loader()):
        if isinstance(event, yaml.DocumentStartEvent):
            start = event
        elif isinstance(event, yaml.DocumentEndEvent) and start is not None:
            body = text[_index(start.end_mark) : _index(event.start_mark)]
            if not start.explicit or not body.startswith((" ", "\n", "\r", "\t")):
                body = f"\n{body}"  # what follows ``---`` starts a line of its own
            documents.append(f"---{body}{'' if body.endswith(chr(10)) else chr(10)}...\n")
            start = None
    return documents


def _index(mark: Any) -> int:
    """Where a parser's mark is in the text (characters; libyaml's and PyYAML's alike)."""
    import yaml

    if mark is None:
        raise yaml.YAMLError("the YAML parser gave no position")
    return int(mark.index)


def _stream(doc: Any, index: int, source: str) -> ModuleStream | None:
    """A ``modulemd`` document as a :class:`ModuleStream`; None for any other document."""
    where = f"{source}: document {index + 1}"
    if not isinstance(doc, dict):
        raise UpstreamError(f"{where}: not a mapping")
    if doc.get("document") != MODULEMD:
        return None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise UpstreamError(f"{where}: a modulemd document without data")
    fields = {k: data.get(k) for k in ("name", "stream", "version")}
    if not all(isinstance(v, str) and v for v in fields.values()):
        raise UpstreamError(f"{where}: a modulemd document needs data.name, stream and version")
    try:
        version = int(str(fields["version"]))
    except ValueError:
        raise UpstreamError(f"{where}: version {fields['version']!r} is not a number") from None
    artifacts = data.get("artifacts") or {}
    rpms = (artifacts.get("rpms") or []) if isinstance(artifacts, dict) else None
    if not isinstance(rpms, list) or not all(isinstance(r, str) for r in rpms):
        raise UpstreamError(f"{where}: data.artifacts.rpms is not a list of NEVRAs")
    context = data.get("context")
    return ModuleStream(
        index=index,
        name=str(fields["name"]),
        stream=str(fields["stream"]),
        version=version,
        context=context if isinstance(context, str) else "",
        artifacts=frozenset(nevra_key(r) for r in rpms),
    )
