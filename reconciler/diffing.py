"""The package diff of each compose and publish action of a plan (``reconciler plan``).

Reads only a compose's own metadata: productmd's ``composeinfo.json`` (its repos and
arches) and ``rpms.json`` (its packages), and the updateinfo each composed repo
carries, through createrepo_c. What a target holds is the compose the plan's verdict
names for it (the state's record), so no published tree is walked and no RPM is
opened. The diff itself is :func:`reconciler.packagediff.package_diff` (pure).

A compose action, and a publish of the compose this plan makes, get a note instead of
a diff: what a new compose takes is only known once the upstream's primary metadata is
fetched and selected, which a plan does not do (it reads the upstream's ``repomd.xml``
only, to stay fast and free of downloads).
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import createrepo_c as cr

from .hostconfig import HostConfig
from .layout import ComposeTree, Variant
from .names import check_name
from .packagediff import Advisory, Nevra, PackageDiff, RepoContents, package_diff
from .planning import Action, Plan
from .vocabulary import ActionKind, Stage, VariantKind

log = logging.getLogger(__name__)

#: The largest ``composeinfo.json`` / ``rpms.json`` read (a compose of tens of thousands
#: of packages has an ``rpms.json`` of a few tens of MB).
MAX_JSON_BYTES = 256 * 1024 * 1024
#: The largest updateinfo file parsed (compressed size, as the repo carries it).
MAX_UPDATEINFO_BYTES = 256 * 1024 * 1024
#: An advisory's ID, type or severity is shown, cut to this length.
MAX_FIELD = 120
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
COMPOSED_LATER = "known once composed (a plan does not fetch the upstream's package lists)"


class _Unreadable(Exception):
    """A compose's metadata could not be read: its diff is unknown, the plan goes on."""


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise _Unreadable(f"{path.name}: {exc.strerror or exc}") from exc
    if len(data) > MAX_JSON_BYTES:
        raise _Unreadable(f"{path.name} is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise _Unreadable(f"{path.name} is not JSON ({exc})") from exc


def _clean(value: object) -> str:
    """A field of a repo's updateinfo as one short printable line."""
    return _UNPRINTABLE.sub("?", str(value or ""))[:MAX_FIELD]


def _advisories(repo_dir: Path) -> set[Advisory]:
    """The advisories of one composed repo (none when it carries no updateinfo)."""
    repomd = repo_dir / "repodata" / "repomd.xml"
    if not repomd.is_file():
        return set()
    try:
        records = [r for r in cr.Repomd(str(repomd)).records if r.type == "updateinfo"]
    except Exception as exc:  # createrepo_c raises plain exceptions for bad XML
        raise _Unreadable(f"{repomd}: not a valid repomd.xml ({exc})") from exc
    found: set[Advisory] = set()
    for record in records:
        # the href of a composed repo's own metadata: a file under its repodata/
        path = repo_dir / "repodata" / Path(str(record.location_href)).name
        try:
            if path.stat().st_size > MAX_UPDATEINFO_BYTES:
                raise _Unreadable(f"{path} is larger than {MAX_UPDATEINFO_BYTES} bytes")
            info = cr.UpdateInfo(str(path))
        except _Unreadable:
            raise
        except Exception as exc:
            raise _Unreadable(f"{path}: not a readable updateinfo ({exc})") from exc
        found |= {Advisory(_clean(u.id), _clean(u.type), _clean(u.severity)) for u in info.updates}
    return found


def _variants(tree: ComposeTree, cid: str) -> dict[str, list[Variant]]:
    """Every repo of the compose (productmd's variant UID -> its variants), from
    ``composeinfo.json``; names are checked before they make a path."""
    raw = _read_json(tree.metadata_dir(cid) / "composeinfo.json")
    try:
        found: dict[str, list[Variant]] = {}
        for uid, v in raw["payload"]["variants"].items():
            repo = check_name(str(v["name"]), "repo")
            arches = sorted(str(a) for a in v["arches"])
            found[str(uid)] = [
                *(
                    Variant(repo, a, k)
                    for a in arches
                    for k in (VariantKind.BINARY, VariantKind.DEBUG)
                ),
                Variant(repo, "src", VariantKind.SOURCE),
            ]
        return found
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise _Unreadable(f"composeinfo.json of {cid} is not productmd's ({exc})") from exc


def read_contents(tree: ComposeTree, cid: str) -> dict[str, RepoContents]:
    """What each repo of compose ``cid`` holds: its packages and advisories."""
    variants = _variants(tree, cid)
    raw = _read_json(tree.metadata_dir(cid) / "rpms.json")
    packages: dict[str, set[Nevra]] = defaultdict(set)
    try:
        for uid, arches in raw["payload"]["rpms"].items():
            repo = variants[uid][0].repo
            for by_srpm in arches.values():  # sources are listed under every arch: a set
                for rpms in by_srpm.values():
                    packages[repo] |= {Nevra.parse(str(nevra)) for nevra in rpms}
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise _Unreadable(f"rpms.json of {cid} is not productmd's ({exc})") from exc
    out: dict[str, RepoContents] = {}
    for vs in variants.values():
        repo = vs[0].repo
        advisories = set().union(*(_advisories(tree.variant_dir(cid, v)) for v in vs))
        out[repo] = RepoContents(frozenset(packages.get(repo, ())), frozenset(advisories))
    return out


class _Composes:
    """The contents of each compose read once per plan (a compose is immutable)."""

    def __init__(self, host: HostConfig) -> None:
        self.host = host
        self.read: dict[tuple[str, str, str], dict[str, RepoContents] | str] = {}

    def contents(self, sig: str, release: str, cid: str) -> dict[str, RepoContents] | str:
        """The compose's contents, or why they are unknown."""
        key = (sig, release, cid)
        if key not in self.read:
            tree = self.host.compose_tree(sig, release)
            if not tree.compose_dir(cid).is_dir():
                self.read[key] = f"compose {cid} is not on disk"
            else:
                try:
                    self.read[key] = read_contents(tree, cid)
                except _Unreadable as exc:
                    log.warning("package diff: %s", exc)
                    self.read[key] = f"the packages of {cid} are unknown: {exc}"
        return self.read[key]


def _diff(composes: _Composes, plan: Plan, action: Action) -> PackageDiff:
    stage = action.stage or Stage.COMPOSE
    verdict = next(
        (
            v
            for v in plan.verdicts
            if (v.sig, v.release, v.stage) == (action.sig, action.release, stage)
        ),
        None,
    )
    held = verdict.actual if verdict is not None else None
    head = (action.sig, action.release, stage, action.compose_id, held)
    if action.kind is ActionKind.COMPOSE or action.compose_id is None:
        return PackageDiff(*head, note=COMPOSED_LATER)
    if held == action.compose_id:
        return PackageDiff(*head, note=f"no package changes: it holds {held} already")
    new = composes.contents(action.sig, action.release, action.compose_id)
    old = composes.contents(action.sig, action.release, held) if held is not None else {}
    for unknown in (new, old):
        if isinstance(unknown, str):
            return PackageDiff(*head, note=unknown)
    assert not isinstance(new, str) and not isinstance(old, str)
    return PackageDiff(*head, repos=package_diff(old, new))


def package_diffs(host: HostConfig, plan: Plan) -> tuple[PackageDiff, ...]:
    """The package diff of every compose and publish action of ``plan``."""
    composes = _Composes(host)
    return tuple(
        _diff(composes, plan, a)
        for a in plan.actions
        if a.kind in {ActionKind.COMPOSE, ActionKind.PUBLISH}
    )
