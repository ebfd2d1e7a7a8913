"""What a new compose would hold, read from the upstream's metadata (``reconciler plan``).

A compose action's package diff needs the packages the compose would take. They are
read the way the compose reads them: each variant's ``repomd.xml``, then its primary
(and the records the compose carries, updateinfo among them) through the compose's own
client (:class:`reconciler.upstream.Upstream`, with the host's timeouts, deadlines and
size caps) and :func:`reconciler.fetching.fetch_variant`, which parses them and chooses
the packages with the release's ``keep_versions`` (module by module where it has to).
No package is downloaded: only metadata, into a temporary directory removed after.

The advisories that arrive are those of the upstream's updateinfo, which the compose
carries as it is: the fetch has it already, so it costs nothing more. A release whose
upstream carries no updateinfo shows no advisories for its compose action.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import createrepo_c as cr

from .errors import ReconcilerError
from .fetching import FetchedVariant, fetch_variant
from .hostconfig import HostConfig
from .layout import Variant
from .names import TMP_SUFFIX
from .packagediff import Advisory, Nevra, RepoContents
from .selection import PackageFact
from .spec import Spec, variants_of
from .upstream import Upstream

log = logging.getLogger(__name__)

#: The largest updateinfo file parsed (compressed size, as the repo carries it).
MAX_UPDATEINFO_BYTES = 256 * 1024 * 1024
#: An advisory's ID, type or severity is shown, cut to this length.
MAX_FIELD = 120
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
UPDATEINFO = "updateinfo"


class UnreadableMetadata(Exception):
    """Metadata could not be read: the diff is unknown, the plan goes on."""


def _clean(value: object) -> str:
    """A field of a repo's updateinfo as one short printable line."""
    return _UNPRINTABLE.sub("?", str(value or ""))[:MAX_FIELD]


def read_advisories(path: Path) -> set[Advisory]:
    """The advisories of one updateinfo file (size-capped; createrepo_c parses it)."""
    try:
        if path.stat().st_size > MAX_UPDATEINFO_BYTES:
            raise UnreadableMetadata(f"{path} is larger than {MAX_UPDATEINFO_BYTES} bytes")
        info = cr.UpdateInfo(str(path))
    except UnreadableMetadata:
        raise
    except Exception as exc:  # createrepo_c raises plain exceptions for bad XML
        raise UnreadableMetadata(f"{path}: not a readable updateinfo ({exc})") from exc
    return {Advisory(_clean(u.id), _clean(u.type), _clean(u.severity)) for u in info.updates}


def _nevra(fact: PackageFact) -> Nevra:
    """A package as ``rpms.json`` reads back (:meth:`Nevra.parse`): epoch 0 when none."""
    epoch = str(int(fact.epoch)) if fact.epoch.isdigit() else "0"
    return Nevra(fact.name, epoch, fact.version, fact.release, fact.arch)


def _contents(fetched: list[FetchedVariant], repos: list[str]) -> dict[str, RepoContents]:
    packages: dict[str, set[Nevra]] = defaultdict(set)
    advisories: dict[str, set[Advisory]] = defaultdict(set)
    for w in fetched:
        packages[w.variant.repo] |= {_nevra(f) for f in w.selection.chosen}
        for kind, path in w.extras:
            if kind == UPDATEINFO:
                advisories[w.variant.repo] |= read_advisories(path)
    return {
        r: RepoContents(frozenset(packages.get(r, ())), frozenset(advisories.get(r, ())))
        for r in repos
    }


def planned_contents(
    host: HostConfig, spec: Spec, sig: str, release: str
) -> dict[str, RepoContents]:
    """What each repo of a new compose of ``sig`` ``release`` would hold, from the
    upstream's metadata as it is now; :class:`UnreadableMetadata` saying why not."""
    try:
        rel = spec.release(sig, release)
    except KeyError as exc:
        raise UnreadableMetadata(str(exc.args[0])) from None
    variants = variants_of(rel)
    keep, hashed = rel.compose.keep_versions, rel.compose.hashed
    try:
        with (
            tempfile.TemporaryDirectory(prefix="reconciler-diff-", suffix=TMP_SUFFIX) as tmp,
            Upstream(host.download, log) as up,
        ):
            work = Path(tmp)

            def fetch(v: Variant) -> FetchedVariant:
                url = spec.upstream_url(rel, v.repo, v.upstream_arch, host.upstream_base_url)
                return fetch_variant(up, url, work, v, keep, hashed)

            with ThreadPoolExecutor(host.download.workers) as pool:
                fetched = list(pool.map(fetch, variants))
            return _contents(fetched, sorted(rel.repos))
    except (ReconcilerError, OSError) as exc:
        raise UnreadableMetadata(str(exc)) from exc
