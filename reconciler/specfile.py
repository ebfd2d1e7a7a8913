"""Read a desired-state folder into a :class:`~reconciler.spec.Spec`, and one YAML
file (the host config) into its record.

Each file is read once. With a :class:`~reconciler.recordcache.RecordCache`, the
digest of those bytes finds records validated before, and neither PyYAML nor
pydantic is imported. Otherwise :mod:`reconciler.documents` validates them, reporting
every problem with its file and line, and :func:`reconciler.spec.cross_check` adds
the checks that span files; a valid result is then cached.

No file is read past :data:`MAX_FILE_BYTES` (1 MiB): its size is checked before it is
read, and the read stops there. Only regular files are read (a FIFO or a device would
block or never end). In ``sigs/``, only ``<name>.yaml`` files are SIG files; anything
else there (``.x.yaml``, ``x.yaml.disabled``, notes, folders) is not read, and is
named in :attr:`Spec.ignored_files <reconciler.spec.Spec.ignored_files>` and in a
warning, so that a parked file is never silently ignored.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from .errors import ConfigError, SpecError, SpecIssue
from .hostconfig import HostConfig
from .schema import Record
from .spec import Defaults, SigSpec, Spec, cross_check

if TYPE_CHECKING:
    from .recordcache import RecordCache

R = TypeVar("R", bound=Record)

log = logging.getLogger(__name__)

#: The largest desired-state file (``defaults.yaml``, ``sigs/<sig>.yaml``) or host config
#: read, in bytes: 1 MiB. The real files are a few KiB.
MAX_FILE_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class SpecFiles:
    """A desired-state folder, read: what validation (or the cache) starts from."""

    #: defaults.yaml, or ``None`` when it could not be read (an issue says why).
    defaults: bytes | None
    #: (file name, bytes) of every ``sigs/*.yaml``, in name order.
    sigs: tuple[tuple[str, bytes], ...]
    #: names of the files in ``keys/`` (README.md and dot files aside).
    key_files: frozenset[str]
    #: what else is in ``sigs/`` (``sigs/x.yaml.disabled``), in name order: not read.
    ignored: tuple[str, ...] = ()

    def parts(self) -> dict[str, bytes]:
        """Everything the result depends on, by name: the input of the cache key."""
        parts = {f"sigs/{name}": raw for name, raw in self.sigs}
        parts["defaults.yaml"] = self.defaults or b""
        parts["keys/"] = "\n".join(sorted(self.key_files)).encode()
        parts["sigs/ (ignored)"] = "\n".join(self.ignored).encode()
        return parts


def _shown(name: str) -> str:
    """A file name as it can be printed (bytes that are not UTF-8 as ``\\xff``)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _read(path: Path, name: str, issues: list[SpecIssue]) -> bytes | None:
    """The bytes of the regular file ``path``, if it holds at most :data:`MAX_FILE_BYTES`."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        issues.append(SpecIssue(name, None, f"cannot read: {exc.strerror}"))
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            issues.append(SpecIssue(name, None, "not a regular file"))
            return None
        with open(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # at most this much, whatever the size said
    except OSError as exc:
        issues.append(SpecIssue(name, None, f"cannot read: {exc.strerror}"))
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        line = raw.count(b"\n", 0, MAX_FILE_BYTES) + 1
        issues.append(
            SpecIssue(
                name,
                line,
                f"file too large: {max(st.st_size, len(raw))} bytes, over the limit of 1 MiB "
                f"({MAX_FILE_BYTES} bytes), which this line passes",
            )
        )
        return None
    return raw


def read_folder(directory: Path, issues: list[SpecIssue]) -> SpecFiles:
    """Read a desired-state folder; what cannot be read is added to ``issues`` (a folder
    that is not there is a :class:`SpecError` at once)."""
    if not directory.is_dir():
        raise SpecError([SpecIssue(str(directory), None, "not a directory")])
    defaults = _read(directory / "defaults.yaml", "defaults.yaml", issues)
    sigs: list[tuple[str, bytes]] = []
    ignored: list[str] = []
    sig_dir = directory / "sigs"
    if not sig_dir.is_dir():
        issues.append(SpecIssue("sigs/", None, "missing folder of SIG definitions"))
    else:
        for path in sorted(sig_dir.iterdir()):
            name = _shown(path.name)
            rel = f"sigs/{name}"
            if path.name.startswith(".") or path.suffix not in (".yaml", ".yml"):
                ignored.append(rel)
            elif path.suffix == ".yml":
                issues.append(SpecIssue(rel, None, "SIG files end in .yaml"))
            else:
                raw = _read(path, rel, issues)
                if raw is not None:
                    sigs.append((name, raw))
    key_dir = directory / "keys"
    key_files = (
        frozenset(
            _shown(p.name)
            for p in key_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".md"
        )
        if key_dir.is_dir()
        else frozenset()
    )
    return SpecFiles(defaults, tuple(sigs), key_files, tuple(ignored))


def validate_folder(files: SpecFiles, issues: list[SpecIssue]) -> Spec:
    """Validate what :func:`read_folder` read; raise :class:`SpecError` listing every issue."""
    from . import documents

    defaults: Defaults | None = None
    doc: documents.Document | None = None
    if files.defaults is not None:
        doc = documents.read_yaml(files.defaults, "defaults.yaml", issues)
        if doc is not None:
            defaults = documents.validate(Defaults, doc, "defaults.yaml", issues)

    sigs: dict[str, SigSpec] = {}
    sig_docs: dict[str, tuple[str, documents.Document]] = {}
    for file_name, raw in files.sigs:
        rel, stem = f"sigs/{file_name}", file_name.removesuffix(".yaml")
        sig_doc = documents.read_yaml(raw, rel, issues)
        if sig_doc is None:
            continue
        sig = documents.validate(SigSpec, sig_doc, rel, issues)
        if sig is not None:
            sigs[stem] = sig
            sig_docs[stem] = (rel, sig_doc)

    if defaults is not None:
        for problem in cross_check(defaults, sigs, files.key_files):
            # a problem of defaults.yaml (its sign) has a source no SIG name can be
            rel, sdoc = sig_docs.get(problem.source) or ("defaults.yaml", doc)
            line = sdoc.line_of(problem.loc) if sdoc is not None else None
            issues.append(SpecIssue(rel, line, problem.message))

    if issues or defaults is None:
        raise SpecError(issues or [SpecIssue("defaults.yaml", None, "missing")])
    return Spec(
        defaults=defaults, sigs=sigs, key_files=files.key_files, ignored_files=files.ignored
    )


def load_spec(directory: Path, cache: RecordCache | None = None) -> Spec:
    """Load and check a desired-state folder; raise :class:`SpecError` listing every issue."""
    issues: list[SpecIssue] = []
    files = read_folder(directory, issues)
    if cache is None or issues:  # an unreadable file is not in the key: never a hit
        return validate_folder(files, issues)
    return cache.get_or_build("spec", files.parts(), Spec, lambda: validate_folder(files, issues))


def load_record(
    path: Path, record: type[R], display: str | None = None, cache: RecordCache | None = None
) -> R:
    """Read one YAML file into ``record``; raise :class:`SpecError` with file:line issues."""
    name = display or str(path)
    issues: list[SpecIssue] = []
    raw = _read(path, name, issues)
    if raw is None:
        raise SpecError(issues)

    def build() -> R:
        from . import documents

        doc = documents.read_yaml(raw, name, issues)
        result = documents.validate(record, doc, name, issues) if doc is not None else None
        if issues or result is None:
            raise SpecError(issues or [SpecIssue(name, None, "invalid")])
        return result

    if cache is None:
        return build()
    # a default may depend on the machine (download workers: two per CPU)
    parts = {"file": raw, "cpus": str(os.cpu_count()).encode()}
    return cache.get_or_build(record.__name__.lower(), parts, record, build)


# --- the host config ------------------------------------------------------------

DEFAULT_CONFIG = Path("/etc/reconciler/config.yaml")


def config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("RECONCILER_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load_host_config(explicit: Path | None, cache: RecordCache | None = None) -> HostConfig:
    """Load the host config; a clear :class:`ConfigError` names the file and line.

    With ``cache``, a config already validated in these exact bytes is taken from it.
    """
    path = config_path(explicit)
    if not path.is_file():
        raise ConfigError(
            f"{path}: host config not found (pass --config FILE or set RECONCILER_CONFIG)"
        )
    try:
        return load_record(path, HostConfig, cache=cache)
    except SpecError as exc:
        raise ConfigError(str(exc)) from exc
