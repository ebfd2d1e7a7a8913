"""The desired state, schema v1 (desired-state/README.md), as frozen records.

Pure: no I/O, and no pydantic. The records are dataclasses whose fields carry their
validation rules (:mod:`reconciler.schema`); pydantic applies them when a document is
validated. Loading files and locating errors by line is :mod:`reconciler.specfile`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Literal

from .layout import Variant
from .names import COMPOSE_ID_RE, RELEASE_RE, check_arch, check_key_file, check_name
from .schema import Check, Lax, Limits, Prepare, StrictRecord
from .signspec import SignSpec, sign_problems
from .vaultspec import VAULT_CATEGORY, VaultCategory, VaultEntries, vault_problems
from .vocabulary import PUBLISHED_STAGES, VariantKind

_DURATION_RE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TEMPLATE_FIELDS = frozenset({"base_url", "project_id", "repo", "arch"})
#: The longest duration (``delete_grace``, ``min_soak``).
MAX_DURATION = timedelta(days=365)


def parse_duration(value: object) -> object:
    """``"24h"`` -> ``timedelta(hours=24)``, at most :data:`MAX_DURATION`; a timedelta
    passes (records built in code); anything else is an error."""
    if isinstance(value, timedelta):
        return value
    m = _DURATION_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ValueError(f"invalid duration {shown}: use a number and s, m, h, d or w")
    limit = int(MAX_DURATION.total_seconds())
    # a number of more digits than the limit's seconds is beyond it (and int() of
    # thousands of digits is refused)
    if len(m["n"].lstrip("0")) > len(str(limit)) or int(m["n"]) * _UNITS[m["unit"]] > limit:
        raise ValueError(f"duration {m.string[:40]!r} is longer than 365 days")
    return timedelta(seconds=int(m["n"]) * _UNITS[m["unit"]])


def _check_release(value: str) -> str:
    if not RELEASE_RE.fullmatch(value):
        raise ValueError(f"invalid release {value!r}: expected a number like 9 or 9.6")
    return value


def _check_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s]+", value):
        raise ValueError(f"invalid URL {value!r}: expected http:// or https://")
    return value.rstrip("/")


def _check_template(value: str) -> str:
    fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    unknown = fields - _TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"unknown placeholders {sorted(unknown)} in url_template")
    missing = {"project_id", "repo", "arch"} - fields
    if missing:
        raise ValueError(f"url_template lacks {sorted(missing)}")
    return value


def _check_category(value: str) -> str:
    parts = value.strip("/").split("/")
    for part in parts:
        check_name(part, "category path part")
    return "/".join(parts)


def _check_glob(value: str) -> str:
    """A ``publish.unmanaged`` pattern: a path relative to a SIG's published directory
    (``images``, ``images/**``, ``*/README*``); ``*`` and ``?`` stay within one path
    part, ``**`` spans parts, ``[...]`` is a set. Never absolute, never ``..``."""
    if not value or len(value) > 256:
        raise ValueError("an unmanaged pattern is 1 to 256 characters")
    if not re.fullmatch(r"[A-Za-z0-9._*?\[\]!+@%=,~-]+(/[A-Za-z0-9._*?\[\]!+@%=,~-]+)*", value):
        raise ValueError(
            f"invalid unmanaged pattern {value!r}: a relative path of letters, digits, "
            "'._-+@%=,~' and the wildcards * ? ** [...], parts joined by '/'"
        )
    parts = value.split("/")
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"invalid unmanaged pattern {value!r}: no '.' or '..' parts")
    # each ** may try every depth: a few keep the match linear enough on any tree
    if parts.count("**") > 2:
        raise ValueError(f"invalid unmanaged pattern {value!r}: at most two '**' parts")
    return value


def _check_reason(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 500:
        raise ValueError("a reason is 1 to 500 characters")
    return value


def _check_project_id(value: str) -> str:
    if not _UUID_RE.fullmatch(value):
        raise ValueError(f"invalid project_id {value!r}: expected a lowercase UUID")
    return value


Name = Annotated[str, Check(check_name)]
Release = Annotated[str, Check(_check_release)]
Arch = Annotated[str, Check(check_arch)]
KeyFile = Annotated[str, Check(check_key_file)]
Duration = Annotated[timedelta, Prepare(parse_duration)]
Url = Annotated[str, Check(_check_url)]
Glob = Annotated[str, Check(_check_glob)]
Globs = Annotated[tuple[Glob, ...], Lax(), Limits(max_length=1000)]
#: a numeric user or group ID (``publish.owner``, ``publish.group``)
PosixId = Annotated[int, Limits(ge=0, le=2**32 - 2)]
Reason = Annotated[str, Check(_check_reason)]


def _unique_arches(value: tuple[str, ...]) -> tuple[str, ...]:
    dups = sorted({a for a in value if value.count(a) > 1})
    if dups:
        raise ValueError(f"duplicate arches: {', '.join(dups)}")
    return value


Arches = Annotated[tuple[Arch, ...], Lax(), Limits(min_length=1), Check(_unique_arches)]


# --- defaults.yaml -------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamDefaults(StrictRecord):
    base_url: Url
    url_template: Annotated[str, Check(_check_template)] = (
        "{base_url}/{project_id}/repo/{repo}/{arch}"
    )


@dataclass(frozen=True)
class PublishDefaults(StrictRecord):
    category: Annotated[str, Check(_check_category)] = "mirror/pub/sig"
    delete_grace: Duration = timedelta(hours=24)
    #: ``true``: files under a repo's ``Packages/`` and ``repodata/`` that the reconciler
    #: did not publish and the new metadata does not name are retired like superseded
    #: ones (an adopted tree's old packages). Other unmanaged files are never deleted.
    prune: bool = False
    #: patterns (relative to each SIG's published directory) of paths that are neither
    #: reported as unmanaged nor ever touched (altarch's ``images``)
    unmanaged: Globs = ()
    #: numeric owner and group given to every published file, directory and file list
    #: (the toolkit's ``--chown=10004:10005``); ``null`` keeps the reconciler's own
    owner: PosixId | None = None
    group: PosixId | None = None
    vault_category: VaultCategory = VAULT_CATEGORY  # vaulted point releases (vaultspec)


@dataclass(frozen=True)
class ComposeDefaults(StrictRecord):
    keep_composes: Annotated[int, Limits(ge=1, le=1000)] = 5


@dataclass(frozen=True)
class PromotionDefaults(StrictRecord):
    require_staged: bool = True
    min_soak: Duration = timedelta(0)


@dataclass(frozen=True)
class ReleaseDefaults(StrictRecord):
    arches: Arches


@dataclass(frozen=True)
class Defaults(StrictRecord):
    upstream: UpstreamDefaults
    releases: Annotated[dict[Release, ReleaseDefaults], Limits(min_length=1)]
    publish: PublishDefaults = PublishDefaults()
    compose: ComposeDefaults = ComposeDefaults()
    promotion: PromotionDefaults = PromotionDefaults()
    sign: SignSpec | None = None  # signing each repomd.xml (reconciler.signspec)


# --- sigs/<sig>.yaml -------------------------------------------------------------


@dataclass(frozen=True)
class RepoSpec(StrictRecord):
    arches: Arches


@dataclass(frozen=True)
class ComposeOptions(StrictRecord):
    hashed: bool = True
    keep_versions: Annotated[int, Limits(ge=0, le=1000)] = 1
    debug: bool = True
    source: bool = True
    trigger: Literal["upstream", "manual"] = "upstream"
    refresh: Annotated[int, Limits(ge=0, le=10**9)] = 0
    #: verify each RPM's signature against ``gpg_keys`` while composing; ``null``
    #: (the default) follows ``signatures.check`` (verify when every named key is there)
    check_signatures: bool | None = None


@dataclass(frozen=True)
class Signatures(StrictRecord):
    """Whether this release's packages must be signed by its ``gpg_keys``.

    ``check: true`` (the default, the toolkit's ``reposync --gpgcheck``): a key file
    named in ``gpg_keys`` but missing from ``keys/`` lets the release compose and
    stage (unverified, status says so) but blocks production. ``check: false`` needs a
    ``reason``, shown in status.
    """

    check: bool = True
    reason: Reason | None = None


@dataclass(frozen=True)
class SigPublish(StrictRecord):
    """A SIG's own publishing policy, on top of ``defaults.yaml``'s ``publish``."""

    #: ``null``: as ``defaults.yaml`` says
    prune: bool | None = None
    #: added to ``defaults.yaml``'s ``publish.unmanaged``
    unmanaged: Globs = ()


def _check_stage_ref(value: str | None) -> str | None:
    if value is None or value == "latest" or COMPOSE_ID_RE.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is neither 'latest' nor a compose ID like SIG-core-9-20261120.0")


StageRef = Annotated[str | None, Check(_check_stage_ref)]


def _check_production_ref(value: str | None) -> str | None:
    """Production takes a pinned compose: ``latest`` would promote whatever was composed
    last, past every gate (and the staging gate could never find it staged)."""
    if value == "latest":
        raise ValueError(
            "production cannot follow 'latest': pin a compose ID like SIG-core-9-20261120.0 "
            "(or null for nothing in production)"
        )
    return _check_stage_ref(value)


ProductionRef = Annotated[str | None, Check(_check_production_ref)]


@dataclass(frozen=True)
class ReleaseSpec(StrictRecord):
    project_id: Annotated[str, Check(_check_project_id)]
    repos: Annotated[dict[Name, RepoSpec], Limits(min_length=1)]
    gpg_keys: Annotated[tuple[KeyFile, ...], Lax()] = ()
    signatures: Signatures = Signatures()
    compose: ComposeOptions = ComposeOptions()
    staging: StageRef = "latest"
    production: ProductionRef = None
    suspend: bool = False
    eol: bool = False  # end of life: no new composes or staging; production kept (endoflife)
    vault: VaultEntries = field(default_factory=dict)  # point release -> compose (vaulting)
    vault_replace: bool = False  # a changed vault entry may replace what the vault holds


@dataclass(frozen=True)
class SigSpec(StrictRecord):
    sig: Name
    releases: Annotated[dict[Release, ReleaseSpec], Limits(min_length=1)]
    publish: SigPublish = SigPublish()
    sign: SignSpec | None = None  # replaces defaults.yaml's sign


# --- the whole spec, and checks that span files ------------------------------------


@dataclass(frozen=True)
class Problem:
    """A cross-file problem: which file (``defaults`` or a SIG name), where, what."""

    source: str
    loc: tuple[str | int, ...]
    message: str


@dataclass(frozen=True)
class Spec(StrictRecord):
    defaults: Defaults
    sigs: dict[Name, SigSpec]
    key_files: frozenset[str] = field(default_factory=frozenset)
    #: what is in ``sigs/`` but not read, being no ``<name>.yaml`` (``sigs/x.yaml.disabled``)
    ignored_files: tuple[str, ...] = ()

    def release(self, sig: str, release: str) -> ReleaseSpec:
        """The spec of one SIG release; ``KeyError`` naming what is missing."""
        if sig not in self.sigs:
            raise KeyError(f"no SIG {sig!r} in the desired state")
        releases = self.sigs[sig].releases
        if release not in releases:
            raise KeyError(f"SIG {sig!r} has no release {release!r}")
        return releases[release]

    def prune(self, sig: str) -> bool:
        """Whether a SIG's unmanaged files under ``Packages/`` and ``repodata/`` are retired."""
        own = self.sigs[sig].publish.prune
        return self.defaults.publish.prune if own is None else own

    def unmanaged(self, sig: str) -> tuple[str, ...]:
        """The SIG's ``publish.unmanaged`` patterns: the defaults', then its own."""
        return (*self.defaults.publish.unmanaged, *self.sigs[sig].publish.unmanaged)

    def missing_keys(self, release: ReleaseSpec) -> tuple[str, ...]:
        """The key files ``release`` names that ``keys/`` lacks."""
        return tuple(k for k in release.gpg_keys if k not in self.key_files)

    def verifies_signatures(self, release: ReleaseSpec) -> bool:
        """Whether composing ``release`` verifies RPM signatures: as
        ``compose.check_signatures`` says, else when ``signatures.check`` is on and every
        named key file is there."""
        explicit = release.compose.check_signatures
        if explicit is not None:
            return explicit
        return (
            release.signatures.check and bool(release.gpg_keys) and not self.missing_keys(release)
        )

    def upstream_url(
        self, release: ReleaseSpec, repo: str, arch: str, base_url: str | None = None
    ) -> str:
        """Where the build system serves one repo variant (``arch``, ``<arch>-debug``, ``src``)."""
        up = self.defaults.upstream
        return up.url_template.format(
            base_url=(base_url or up.base_url).rstrip("/"),
            project_id=release.project_id,
            repo=repo,
            arch=arch,
        )


def cross_check(
    defaults: Defaults, sigs: dict[str, SigSpec], key_files: frozenset[str]
) -> list[Problem]:
    """Checks that need more than one file; returns every problem found."""
    signs = {n: s.sign for n, s in sigs.items()}
    problems = [Problem(f, ("sign",), m) for f, m in sign_problems(defaults.sign, signs, key_files)]
    for name, sig in sigs.items():
        if sig.sig != name:
            problems.append(
                Problem(name, ("sig",), f"sig {sig.sig!r} does not match file name {name!r}")
            )
        for rel_name, rel in sig.releases.items():
            loc_rel: tuple[str | int, ...] = ("releases", rel_name)
            known = defaults.releases.get(rel_name)
            if known is None:
                problems.append(
                    Problem(name, loc_rel, f"release {rel_name!r} is not in defaults.yaml releases")
                )
            for repo_name, repo in rel.repos.items():
                for i, arch in enumerate(repo.arches):
                    if known is not None and arch not in known.arches:
                        problems.append(
                            Problem(
                                name,
                                (*loc_rel, "repos", repo_name, "arches", i),
                                f"arch {arch!r} of repo {repo_name!r} is not an arch of release "
                                f"{rel_name} ({', '.join(known.arches)})",
                            )
                        )
            problems.extend(_key_problems(name, loc_rel, rel, key_files))
            problems += [Problem(name, (*loc_rel, "vault", p), m)
                         for p, m in vault_problems(name, rel_name, rel.vault)]  # fmt: skip
            for stage in PUBLISHED_STAGES:
                ref = getattr(rel, stage.value)
                m = COMPOSE_ID_RE.fullmatch(ref) if ref else None
                if m and (m["sig"] != name or m["release"] != rel_name):
                    problems.append(
                        Problem(
                            name,
                            (*loc_rel, stage.value),
                            f"{stage} compose {ref!r} is not a compose of "
                            f"SIG {name} release {rel_name}",
                        )
                    )
    return problems


def _key_problems(
    sig: str, loc_rel: tuple[str | int, ...], rel: ReleaseSpec, key_files: frozenset[str]
) -> list[Problem]:
    """A named key that keys/ lacks is not an error (the release composes and stages;
    production is blocked while ``signatures.check`` is on), unless
    ``compose.check_signatures`` asks for a verification that cannot be made."""
    problems = [
        Problem(
            sig,
            (*loc_rel, "gpg_keys", i),
            f"GPG key file keys/{key} does not exist, and compose.check_signatures is on",
        )
        for i, key in enumerate(rel.gpg_keys)
        if key not in key_files and rel.compose.check_signatures
    ]
    if not rel.signatures.check and rel.signatures.reason is None:
        problems.append(
            Problem(
                sig,
                (*loc_rel, "signatures", "reason"),
                "signatures.check is off: say why in signatures.reason",
            )
        )
    if rel.compose.check_signatures and not rel.gpg_keys:
        problems.append(
            Problem(
                sig,
                (*loc_rel, "compose", "check_signatures"),
                "check_signatures is on but gpg_keys is empty",
            )
        )
    return problems


def variants_of(
    release: ReleaseSpec,
    repos: frozenset[str] | None = None,
    arches: frozenset[str] | None = None,
) -> list[Variant]:
    """Every variant a release composes, optionally only some repos and arches."""
    out: list[Variant] = []
    for repo, repo_spec in sorted(release.repos.items()):
        if repos is not None and repo not in repos:
            continue
        repo_arches = [a for a in repo_spec.arches if arches is None or a in arches]
        for arch in repo_arches:
            out.append(Variant(repo, arch, VariantKind.BINARY))
            if release.compose.debug:
                out.append(Variant(repo, arch, VariantKind.DEBUG))
        if release.compose.source and repo_arches:
            out.append(Variant(repo, "src", VariantKind.SOURCE))
    return out
