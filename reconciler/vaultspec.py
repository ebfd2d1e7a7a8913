"""The vault's part of the desired state: a SIG release's vaulted point releases.

``vault: {"9.5": SIG-core-9-20260301.0}`` (point release -> the compose of that point
release) and ``vault_replace: true`` (a changed entry may replace what the vault holds)
are fields of :class:`reconciler.spec.ReleaseSpec`; their types and the checks that
need the release's name are here. Pure: no I/O.

The toolkit's ``sync/vault-sig.sh`` copies production's SIG tree, without deletes, to
``mirror/vault/sig/<point>/`` (``SIG_VAULT_STUB``); ``sync-file-list-vault.sh`` lists
``mirror/vault/`` (``fullfilelist``, ``fullfiletimelist-vault``). Here each entry is
published once to ``<production>/<publish.vault_category>/<point>/<sig>/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Final

from .names import COMPOSE_ID_RE, check_name
from .schema import Check, Limits

#: ``publish.vault_category``'s default: the toolkit's ``SIG_VAULT_STUB``.
VAULT_CATEGORY: Final = "mirror/vault/sig"
_POINT_RE: Final = re.compile(r"^[0-9]+\.[0-9]+$")


def _check_point(value: str) -> str:
    if not _POINT_RE.fullmatch(value):
        raise ValueError(f"invalid vault point release {value!r}: expected one like 9.5")
    return value


def _check_vault_ref(value: str) -> str:
    if not COMPOSE_ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a compose ID like SIG-core-9-20261120.0")
    return value


def _check_vault_category(value: str) -> str:
    """A path of at least two parts: the vault's file lists live in its parent
    (``mirror/vault/`` for ``mirror/vault/sig``), beside trees that are not ours."""
    parts = value.strip("/").split("/")
    for part in parts:
        check_name(part, "vault_category path part")
    if len(parts) < 2:
        raise ValueError(
            f"vault_category {value!r} needs at least two parts (like mirror/vault/sig): "
            "the vault's file lists are written in its parent directory"
        )
    return "/".join(parts)


Point = Annotated[str, Check(_check_point)]
VaultRef = Annotated[str, Check(_check_vault_ref)]
VaultEntries = Annotated[dict[Point, VaultRef], Limits(max_length=1000)]
VaultCategory = Annotated[str, Check(_check_vault_category)]


def vault_lists_dir(vault_category: str) -> str:
    """Where the vault's file lists are, relative to the production root: the parent
    of the vault category (``mirror/vault``)."""
    return str(PurePosixPath(vault_category).parent)


def vault_problems(sig: str, release: str, vault: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(point, message)`` for each entry that does not belong to SIG ``sig`` release
    ``release``: a point of another major release, a compose of another SIG release."""
    problems: list[tuple[str, str]] = []
    for point, ref in sorted(vault.items()):
        if point.split(".", maxsplit=1)[0] != release.split(".", maxsplit=1)[0]:
            problems.append((point, f"vault point release {point} is not one of release {release}"))
        m = COMPOSE_ID_RE.fullmatch(ref)
        if m and (m["sig"] != sig or m["release"] != release):
            problems.append(
                (point, f"vault compose {ref!r} is not a compose of SIG {sig} release {release}")
            )
    return problems
