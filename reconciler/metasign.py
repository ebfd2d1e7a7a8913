"""Signing each composed ``repomd.xml`` and checking the signatures (``sign:``).

:class:`Signer` writes ``repodata/repomd.xml.asc`` as a compose's metadata is written
(:mod:`reconciler.signspec` says how: the toolkit's script interface, or gpg
directly). The signer runs from an argument list (never a shell) in a process group
of its own, so that a timeout kills it and whatever it started; a signer that fails,
outlives its timeout or leaves no signature raises :class:`~reconciler.errors.ComposeError`
naming the ``repomd.xml`` and why, which dooms the compose. A repo whose ``repodata/``
the compose kept byte for byte (:mod:`reconciler.carrying`) keeps the previous
compose's signature too, when it verifies with the key ``sign.key_file`` names (a
rotated key signs anew).

:class:`Keyring` is a throwaway gpg home (``GNUPGHOME`` in a temporary directory)
holding only the public keys of ``desired-state/keys/``; :class:`SignatureChecker`
says, for a repo found anywhere under a tree, whether its SIG signs and whether its
``.asc`` verifies (``reconciler verify``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from .errors import ComposeError, SignatureError
from .fsutil import clone_or_link
from .signspec import ASC_NAME, SignSpec, sign_for
from .spec import Spec

_GPG_TIMEOUT = 60


def _gpg() -> str:
    exe = shutil.which("gpg")
    if exe is None:
        raise SignatureError("gpg is not installed: cannot sign or check repository metadata")
    return exe


def _c_env(home: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "GNUPGHOME")}
    env["LC_ALL"] = "C"
    if home is not None:
        env["GNUPGHOME"] = home
    return env


def run_signer(sign: SignSpec, repomd: Path, release: str) -> Path:
    """Sign ``repomd`` (of a compose of ``release``) as ``sign`` says; the ``.asc``
    written, or ComposeError saying why."""
    asc = repomd.with_name(ASC_NAME)
    argv = sign.argv(_gpg() if sign.command is None else "", repomd, release)
    with tempfile.TemporaryFile() as out:  # not a pipe: a straggler cannot hold it open
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # the operator's script gets this environment
            )  # fmt: skip
        except OSError as exc:
            raise ComposeError(f"{repomd}: cannot run signer {argv[0]}: {exc.strerror}") from exc
        try:
            code = proc.wait(sign.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise ComposeError(
                f"{repomd}: signer {argv[0]} did not finish within {sign.timeout}s "
                "(sign.timeout): killed"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        _kill_group(proc)  # what it left running in its group: nothing may outlive it
        out.seek(0)
        said = " ".join(out.read(4000).decode(errors="replace").split())
    if code != 0:
        raise ComposeError(f"{repomd}: signer {argv[0]} failed (exit {code}): {said}")
    try:
        size = asc.stat().st_size
    except FileNotFoundError:
        raise ComposeError(f"{asc}: signer {argv[0]} wrote no signature") from None
    if size == 0:
        raise ComposeError(f"{asc}: signer {argv[0]} wrote an empty signature")
    return asc


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class Keyring:
    """A temporary gpg home holding only the given public key files."""

    def __init__(self, key_files: list[Path]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="reconciler-gpg-")
        self.home = self._dir.name
        for key in key_files:
            proc = self._gpg("--import", str(key))
            if proc.returncode != 0:
                self.close()
                raise SignatureError(f"{key}: cannot import GPG key: {proc.stderr.strip()}")

    def _gpg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_gpg(), "--batch", "--no-tty", "--homedir", self.home, *args],
            capture_output=True, text=True, timeout=_GPG_TIMEOUT, check=False,
            env=_c_env(self.home), stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def verify(self, data: Path, asc: Path) -> str | None:
        """None when ``asc`` holds only good signatures of ``data`` by these keys (as
        ``gpg --verify`` decides); else what is wrong."""
        proc = self._gpg("--status-fd", "1", "--verify", str(asc), str(data))
        status = [
            f[1] for f in map(str.split, proc.stdout.splitlines()) if f[1:] and f[0] == "[GNUPG:]"
        ]
        if proc.returncode == 0 and "GOODSIG" in status:
            return None
        for bad, why in (("BADSIG", "a bad signature of"), ("NO_PUBKEY", "signed by a key not in")):
            if bad in status:
                return f"{why} {data.name} (gpg --verify with the SIG's keys)"
        lines = proc.stderr.strip().splitlines()
        return f"does not verify {data.name}: {lines[-1] if lines else 'no signature'}"

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Signer:
    """Signs the repos of one compose (nothing when ``sign`` is None)."""

    def __init__(self, sign: SignSpec | None, key_dir: Path, release: str) -> None:
        self.sign, self.key_dir, self.release = sign, key_dir, release
        self._keyring: Keyring | None = None

    def sign_repo(self, repo: Path, previous: Path | None, kept: bool) -> None:
        """Sign ``repo``'s final ``repomd.xml``; ``kept``: its ``repodata/`` is the one of
        the repo ``previous`` (byte for byte), whose good signature it takes."""
        if self.sign is None:
            return
        repomd = repo / "repodata" / "repomd.xml"
        old = previous / "repodata" / ASC_NAME if previous is not None else None
        if kept and old is not None and old.is_file() and self._verifies(repomd, old):
            clone_or_link(old, repomd.with_name(ASC_NAME))
            return
        run_signer(self.sign, repomd, self.release)

    def _verifies(self, repomd: Path, asc: Path) -> bool:
        assert self.sign is not None
        if self._keyring is None:
            self._keyring = Keyring([self.key_dir / self.sign.key_file])
        return self._keyring.verify(repomd, asc) is None

    def close(self) -> None:
        if self._keyring is not None:
            self._keyring.close()
            self._keyring = None

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SignatureChecker:
    """``reconciler verify``'s check of a repo's ``repomd.xml.asc``: a repo under
    ``.../<release>/<sig>/...`` of a SIG release in ``spec`` whose SIG signs must have a
    signature that verifies with ``keys/<sign.key_file>``. Safe across threads."""

    def __init__(self, spec: Spec, spec_dir: Path) -> None:
        self.spec, self.key_dir = spec, spec_dir / "keys"
        self._keyrings: dict[str, Keyring] = {}
        self._lock = threading.Lock()

    def sign_of(self, repo: Path) -> SignSpec | None:
        """The signing of the SIG whose published (or composed) tree holds ``repo``."""
        parts = repo.resolve().parts
        for i in range(len(parts) - 1, 0, -1):
            sig = self.spec.sigs.get(parts[i])
            if sig is not None and parts[i - 1] in sig.releases:
                return sign_for(self.spec.defaults.sign, sig.sign)
        return None

    def check(self, repo: Path) -> tuple[str, str] | None:
        """``(path, problem)`` of the repo's signature, or None when it is fine or not
        expected."""
        sign = self.sign_of(repo)
        if sign is None:
            return None
        repomd = repo / "repodata" / "repomd.xml"
        asc = repomd.with_name(ASC_NAME)
        if not asc.is_file() or asc.is_symlink():
            return str(asc), "missing: the SIG signs its repository metadata (sign:)"
        try:
            problem = self._keyring(sign.key_file).verify(repomd, asc)
        except SignatureError as exc:
            return str(asc), str(exc)
        return None if problem is None else (str(asc), f"{problem} (keys/{sign.key_file})")

    def _keyring(self, key_file: str) -> Keyring:
        with self._lock:
            if key_file not in self._keyrings:
                self._keyrings[key_file] = Keyring([self.key_dir / key_file])
            return self._keyrings[key_file]

    def close(self) -> None:
        for keyring in self._keyrings.values():
            keyring.close()
        self._keyrings.clear()

    def __enter__(self) -> SignatureChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
