"""``sign:``: how a compose signs each ``repomd.xml`` (desired-state/README.md). Pure.

Two ways, as the distribution's tooling does it or directly:

- ``{command: [argv...], key_file: RPM-GPG-KEY-...}``: the argument list is run with
  the path of a ``repomd.xml`` appended (the interface of the toolkit's
  ``/root/bin/sign-repo-<major>.sh``, called by ``sync/common``'s ``sign_data``) and
  must write ``repomd.xml.asc`` next to it;
- ``{gpg_home: PATH, key_id: ID, key_file: ...}``: ``gpg --batch --homedir PATH
  --local-user ID --armor --detach-sign`` (the key is on the compose host; its home is
  a host path, not a secret, so it may stay in git like the toolkit's script path).

``key_file`` names the public key in ``keys/`` that verifies the signatures
(``reconciler verify``); ``timeout`` bounds one signing. ``defaults.yaml``'s ``sign``
applies to every SIG; a SIG's own ``sign`` replaces it (``sign: null`` is not a way to
turn it off: give the SIG nothing and the defaults apply).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from .names import check_key_file
from .schema import Check, Lax, Limits, StrictRecord

#: The signature a signing writes next to each ``repomd.xml``.
ASC_NAME = "repomd.xml.asc"
#: The source of a problem of ``defaults.yaml``'s ``sign`` (never a SIG name: it has a '/').
DEFAULTS_SOURCE = "/defaults.yaml"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9@._<> +-]{1,128}$")


def _check_argv(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value[0].startswith("/"):
        raise ValueError(f"sign.command: {value[0]!r} is not an absolute path (no PATH lookup)")
    if any("\0" in arg or "\n" in arg for arg in value):
        raise ValueError("sign.command: an argument holds a NUL or a newline")
    return value


def _check_home(value: str) -> str:
    if not value.startswith("/") or "\0" in value or "\n" in value:
        raise ValueError(f"sign.gpg_home: {value!r} is not an absolute path")
    return value


def _check_key_id(value: str) -> str:
    if not _KEY_ID_RE.fullmatch(value):
        raise ValueError(f"sign.key_id: invalid key ID or user ID {value!r}")
    return value


Argv = Annotated[
    tuple[Annotated[str, Limits(min_length=1, max_length=4096)], ...],
    Lax(),
    Limits(min_length=1, max_length=64),
    Check(_check_argv),
]


@dataclass(frozen=True)
class SignSpec(StrictRecord):
    """One way of signing; exactly one of ``command`` and ``gpg_home`` + ``key_id``."""

    key_file: Annotated[str, Check(check_key_file)]
    command: Argv | None = None
    gpg_home: Annotated[str, Check(_check_home)] | None = None
    key_id: Annotated[str, Check(_check_key_id)] | None = None
    #: seconds one signing may take; past it the signer's process group is killed
    timeout: Annotated[int, Limits(ge=1, le=3600)] = 60

    def argv(self, gpg: str, repomd: Path, release: str) -> list[str]:
        """The argument list that signs ``repomd`` of a compose of ``release`` (``gpg``:
        the gpg executable); ``{release}`` in a command's arguments is the release (the
        toolkit has one script per major release: ``sign-repo-{release}.sh``)."""
        if self.command is not None:
            return [*(arg.replace("{release}", release) for arg in self.command), str(repomd)]
        assert self.gpg_home is not None and self.key_id is not None
        return [
            gpg, "--batch", "--yes", "--homedir", self.gpg_home, "--local-user", self.key_id,
            "--armor", "--detach-sign", "--output", str(repomd.with_name(ASC_NAME)), str(repomd),
        ]  # fmt: skip

    @property
    def problem(self) -> str | None:
        """What is wrong with the combination of fields, or None."""
        gpg = (self.gpg_home is not None, self.key_id is not None)
        if self.command is not None and any(gpg):
            return "give either command or gpg_home and key_id, not both"
        if self.command is None and gpg != (True, True):
            return "give command, or gpg_home and key_id"
        return None


def sign_for(defaults: SignSpec | None, own: SignSpec | None) -> SignSpec | None:
    """A SIG's signing: its own ``sign``, else ``defaults.yaml``'s."""
    return own if own is not None else defaults


def sign_problems(
    defaults: SignSpec | None, sigs: Mapping[str, SignSpec | None], key_files: frozenset[str]
) -> list[tuple[str, str]]:
    """``(file, message)`` for each ``sign`` that cannot work: a wrong combination of
    fields, or a ``key_file`` that ``keys/`` lacks (nothing could verify it)."""
    found: list[tuple[str, str]] = []
    for source, sign in ((DEFAULTS_SOURCE, defaults), *sigs.items()):
        if sign is None:
            continue
        if sign.problem is not None:
            found.append((source, f"sign: {sign.problem}"))
        if sign.key_file not in key_files:
            found.append((source, f"sign.key_file: keys/{sign.key_file} does not exist"))
    return found
