"""The desired state, schema v1 (DESIGN.md section 4), as frozen pydantic models.

Pure: this module parses values that were already read; it does no I/O.
Loading files and locating errors by line is :mod:`reconciler.specfile`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
)

from .names import COMPOSE_ID_RE, RELEASE_RE, check_arch, check_name

_DURATION_RE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TEMPLATE_FIELDS = frozenset({"base_url", "project_id", "repo", "arch"})


def parse_duration(value: object) -> object:
    """``"24h"`` -> ``timedelta(hours=24)``; other types pass through to pydantic."""
    if isinstance(value, str):
        m = _DURATION_RE.fullmatch(value.strip())
        if not m:
            raise ValueError(f"invalid duration {value!r}: use a number and s, m, h, d or w")
        return timedelta(seconds=int(m["n"]) * _UNITS[m["unit"]])
    return value


def _check_release(value: str) -> str:
    if not RELEASE_RE.fullmatch(value):
        raise ValueError(f"invalid release {value!r}: expected a number like 9 or 9.6")
    return value


def _check_key_file(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise ValueError(f"invalid key file name {value!r}")
    return value


def _check_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s]+", value):
        raise ValueError(f"invalid URL {value!r}: expected http:// or https://")
    return value.rstrip("/")


Name = Annotated[str, AfterValidator(check_name)]
Release = Annotated[str, AfterValidator(_check_release)]
Arch = Annotated[str, AfterValidator(check_arch)]
KeyFile = Annotated[str, AfterValidator(_check_key_file)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Url = Annotated[str, AfterValidator(_check_url)]


def _unique_arches(value: tuple[str, ...]) -> tuple[str, ...]:
    dups = sorted({a for a in value if value.count(a) > 1})
    if dups:
        raise ValueError(f"duplicate arches: {', '.join(dups)}")
    return value


Arches = Annotated[
    tuple[Arch, ...], Strict(False), Field(min_length=1), AfterValidator(_unique_arches)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- defaults.yaml -------------------------------------------------------------


class UpstreamDefaults(_Model):
    base_url: Url
    url_template: str = "{base_url}/{project_id}/repo/{repo}/{arch}"

    @field_validator("url_template")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        unknown = fields - _TEMPLATE_FIELDS
        if unknown:
            raise ValueError(f"unknown placeholders {sorted(unknown)} in url_template")
        missing = {"project_id", "repo", "arch"} - fields
        if missing:
            raise ValueError(f"url_template lacks {sorted(missing)}")
        return value


class PublishDefaults(_Model):
    category: str = "mirror/pub/sig"
    delete_grace: Duration = timedelta(hours=24)

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        for part in parts:
            check_name(part, "category path part")
        return "/".join(parts)


class ComposeDefaults(_Model):
    keep_composes: int = Field(default=5, ge=1)


class PromotionDefaults(_Model):
    require_staged: bool = True
    min_soak: Duration = timedelta(0)


class ReleaseDefaults(_Model):
    arches: Arches


class Defaults(_Model):
    upstream: UpstreamDefaults
    publish: PublishDefaults = PublishDefaults()
    compose: ComposeDefaults = ComposeDefaults()
    promotion: PromotionDefaults = PromotionDefaults()
    releases: dict[Release, ReleaseDefaults] = Field(min_length=1)


# --- sigs/<sig>.yaml -------------------------------------------------------------


class RepoSpec(_Model):
    arches: Arches


class ComposeOptions(_Model):
    hashed: bool = True
    keep_versions: int = Field(default=1, ge=0)
    debug: bool = True
    source: bool = True
    trigger: Literal["upstream", "manual"] = "upstream"
    refresh: int = Field(default=0, ge=0)
    check_signatures: bool = False


def _check_stage_ref(value: str | None) -> str | None:
    if value is None or value == "latest" or COMPOSE_ID_RE.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is neither 'latest' nor a compose ID like SIG-core-9-20261120.0")


class ReleaseSpec(_Model):
    project_id: str
    gpg_keys: Annotated[tuple[KeyFile, ...], Strict(False)] = ()
    repos: dict[Name, RepoSpec] = Field(min_length=1)
    compose: ComposeOptions = ComposeOptions()
    staging: Annotated[str | None, AfterValidator(_check_stage_ref)] = "latest"
    production: Annotated[str | None, AfterValidator(_check_stage_ref)] = None
    suspend: bool = False

    @field_validator("project_id")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not _UUID_RE.fullmatch(value):
            raise ValueError(f"invalid project_id {value!r}: expected a lowercase UUID")
        return value


class SigSpec(_Model):
    sig: Name
    releases: dict[Release, ReleaseSpec] = Field(min_length=1)


# --- the whole spec, and checks that span files ------------------------------------


@dataclass(frozen=True)
class Problem:
    """A cross-file problem: which file (``defaults`` or a SIG name), where, what."""

    source: str
    loc: tuple[str | int, ...]
    message: str


class Spec(_Model):
    defaults: Defaults
    sigs: dict[Name, SigSpec]
    key_files: frozenset[str] = frozenset()

    def release(self, sig: str, release: str) -> ReleaseSpec:
        """The spec of one SIG release; ``KeyError`` naming what is missing."""
        if sig not in self.sigs:
            raise KeyError(f"no SIG {sig!r} in the desired state")
        releases = self.sigs[sig].releases
        if release not in releases:
            raise KeyError(f"SIG {sig!r} has no release {release!r}")
        return releases[release]

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
    problems: list[Problem] = []
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
            for i, key in enumerate(rel.gpg_keys):
                if key not in key_files:
                    problems.append(
                        Problem(
                            name,
                            (*loc_rel, "gpg_keys", i),
                            f"GPG key file keys/{key} does not exist",
                        )
                    )
            if rel.compose.check_signatures and not rel.gpg_keys:
                problems.append(
                    Problem(
                        name,
                        (*loc_rel, "compose", "check_signatures"),
                        "check_signatures is on but gpg_keys is empty",
                    )
                )
            for stage in ("staging", "production"):
                ref = getattr(rel, stage)
                m = COMPOSE_ID_RE.fullmatch(ref) if ref else None
                if m and (m["sig"] != name or m["release"] != rel_name):
                    problems.append(
                        Problem(
                            name,
                            (*loc_rel, stage),
                            f"{stage} compose {ref!r} is not a compose of "
                            f"SIG {name} release {rel_name}",
                        )
                    )
    return problems
