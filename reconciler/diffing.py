"""The package diff of each compose and publish action of a plan (``reconciler plan``).

Reads only a compose's own metadata: productmd's ``composeinfo.json`` (its repos and
arches) and ``rpms.json`` (its packages), and the updateinfo each composed repo
carries, through createrepo_c. What a target holds is the compose the plan's verdict
names for it (the state's record), so no published tree is walked and no RPM is
opened. The diff itself is :func:`reconciler.packagediff.package_diff` (pure).

A compose action, and a publish of the compose this plan makes, are diffed against
what the new compose would take: :mod:`reconciler.composediff` reads the upstream's
metadata (no packages) as the compose does, once per SIG release that has a compose
action. A compose action's "held" is the release's newest finished compose; a publish
of the new compose, what its target holds. Without the desired state's spec (or when
the upstream cannot be read) the action gets a note instead; the plan never fails.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import createrepo_c as cr

from .composediff import UnreadableMetadata, planned_contents, read_advisories
from .composedir import previous_finished
from .hostconfig import HostConfig
from .layout import ComposeTree, Variant
from .names import check_name, compose_release
from .packagediff import Advisory, Nevra, PackageDiff, RepoContents, package_diff
from .planning import Action, Plan
from .spec import Spec
from .vocabulary import ActionKind, Stage, VariantKind

log = logging.getLogger(__name__)

#: The largest ``composeinfo.json`` / ``rpms.json`` read (a compose of tens of thousands
#: of packages has an ``rpms.json`` of a few tens of MB).
MAX_JSON_BYTES = 256 * 1024 * 1024
COMPOSED_LATER = "known once composed (a plan does not fetch the upstream's package lists)"


#: A compose's metadata could not be read: its diff is unknown, the plan goes on.
_Unreadable = UnreadableMetadata


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
        found |= read_advisories(path)
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
    """The contents of each compose read once per plan (a compose is immutable), and of
    the new compose of each SIG release the plan composes (its upstream read once)."""

    def __init__(self, host: HostConfig, spec: Spec | None) -> None:
        self.host, self.spec = host, spec
        self.read: dict[tuple[str, str, str], dict[str, RepoContents] | str] = {}
        self.planned: dict[tuple[str, str], dict[str, RepoContents] | str] = {}

    def contents(self, sig: str, release: str, cid: str) -> dict[str, RepoContents] | str:
        """The compose's contents, or why they are unknown."""
        key = (sig, release, cid)
        if key not in self.read:
            tree = self.host.compose_tree(sig, compose_release(release, cid))  # vault: a point
            if not tree.compose_dir(cid).is_dir():
                self.read[key] = f"compose {cid} is not on disk"
            else:
                try:
                    self.read[key] = read_contents(tree, cid)
                except _Unreadable as exc:
                    log.warning("package diff: %s", exc)
                    self.read[key] = f"the packages of {cid} are unknown: {exc}"
        return self.read[key]

    def new_compose(self, sig: str, release: str) -> dict[str, RepoContents] | str:
        """What a new compose of the release would hold, or why it is unknown."""
        key = (sig, release)
        if self.spec is None:
            return COMPOSED_LATER
        if key not in self.planned:
            try:
                self.planned[key] = planned_contents(self.host, self.spec, sig, release)
            except UnreadableMetadata as exc:
                log.warning("package diff of a new compose of %s %s: %s", sig, release, exc)
                self.planned[key] = f"the packages of the new compose are unknown: {exc}"
        return self.planned[key]


def _held(plan: Plan, action: Action, stage: Stage) -> str | None:
    verdict = next(
        (
            v
            for v in plan.verdicts
            if (v.sig, v.release, v.stage) == (action.sig, action.release, stage)
        ),
        None,
    )
    return verdict.actual if verdict is not None else None


def _diff(composes: _Composes, plan: Plan, action: Action) -> PackageDiff:
    stage = action.stage or Stage.COMPOSE
    held = _held(plan, action, stage)
    new: dict[str, RepoContents] | str
    if action.kind is ActionKind.COMPOSE:
        # what the new compose is made on top of: the release's newest finished compose
        last = previous_finished(composes.host.compose_tree(action.sig, action.release))
        held = last.compose_id if last is not None else None
    head = (action.sig, action.release, stage, action.compose_id, held)
    if action.kind is ActionKind.COMPOSE or action.compose_id is None:
        new = composes.new_compose(action.sig, action.release)
    elif held == action.compose_id:
        return PackageDiff(*head, note=f"no package changes: it holds {held} already")
    else:
        new = composes.contents(action.sig, action.release, action.compose_id)
    if isinstance(new, str):
        return PackageDiff(*head, note=new)
    old = composes.contents(action.sig, action.release, held) if held is not None else {}
    if isinstance(old, str):
        return PackageDiff(*head, note=old)
    return PackageDiff(*head, repos=package_diff(old, new))


def package_diffs(
    host: HostConfig, plan: Plan, spec: Spec | None = None
) -> tuple[PackageDiff, ...]:
    """The package diff of every compose and publish action of ``plan``. With the
    desired state's ``spec``, a new compose's is read from its upstream's metadata;
    without it, such an action says it is known once composed."""
    composes = _Composes(host, spec)
    return tuple(
        _diff(composes, plan, a)
        for a in plan.actions
        if a.kind in {ActionKind.COMPOSE, ActionKind.PUBLISH}
    )
