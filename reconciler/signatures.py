"""RPM signature checks with ``rpmkeys`` and a private keyring.

The host's rpm database is never touched: keys are imported into a throwaway
``--dbpath``. A package passes only when rpmkeys reports its signature OK
(an unsigned package reports digests only, and fails here). rpmkeys runs in
the C locale: its verdicts are parsed, and rpm translates them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import SignatureError

_BATCH = 200
_TIMEOUT = 600
_LINE_RE = re.compile(r"^(?P<path>.+?): (?P<result>.*)$")


def _c_locale() -> dict[str, str]:
    """This process's environment with messages in the C locale (untranslated)."""
    env = {k: v for k, v in os.environ.items() if k != "LANGUAGE"}
    env["LC_ALL"] = "C"
    return env


def _rpmkeys() -> str:
    exe = shutil.which("rpmkeys")
    if exe is None:
        raise SignatureError("rpmkeys is not installed: cannot check RPM signatures")
    return exe


class Keyring:
    """A private rpm keyring holding only the given public keys."""

    def __init__(self, key_files: Sequence[Path]) -> None:
        if not key_files:
            raise SignatureError("signature checking is on but no GPG keys are configured")
        self._dir = tempfile.TemporaryDirectory(prefix="reconciler-keyring-")
        self.dbpath = Path(self._dir.name)
        exe = _rpmkeys()
        for key in key_files:
            proc = subprocess.run(
                [exe, "--dbpath", str(self.dbpath), "--import", str(key)],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
                env=_c_locale(),
            )
            if proc.returncode != 0:
                raise SignatureError(f"{key}: cannot import GPG key: {proc.stderr.strip()}")

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, rpms: Sequence[Path]) -> None:
        """Raise :class:`SignatureError` naming every package not signed by a known key."""
        bad: list[str] = []
        for start in range(0, len(rpms), _BATCH):
            batch = rpms[start : start + _BATCH]
            proc = subprocess.run(
                [_rpmkeys(), "--dbpath", str(self.dbpath), "--checksig", "--", *map(str, batch)],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
                env=_c_locale(),
            )
            results = {}
            for line in proc.stdout.splitlines():
                m = _LINE_RE.match(line)
                if m:
                    results[m["path"]] = m["result"]
            for rpm in batch:
                result = results.get(str(rpm), proc.stderr.strip() or "no result")
                if "signatures OK" not in result:
                    reason = "unsigned" if "signature" not in result.lower() else result
                    bad.append(f"{rpm}: {reason}")
        if bad:
            raise SignatureError("RPM signature check failed:\n  " + "\n  ".join(bad))
