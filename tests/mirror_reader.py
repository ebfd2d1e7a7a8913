"""A mirror-like reader, run as a separate process by the consistency test.

Until STOPFILE exists, it snapshots every repo under SRC the way a client that
follows the metadata copies it (each repomd.xml first, then everything else it
sees), verifies the snapshot with ``reconciler verify``'s code, and counts.
Prints one JSON line: snapshots, inconsistent, problems, repomd digests seen.

Given a public key file (a fourth argument), it checks instead each repo's pair of
``repomd.xml`` and ``repomd.xml.asc`` the way the publisher documents for a client
(reconciler/publishing.py): read ``repomd.xml``, then its ``.asc``, then ``repomd.xml``
again, starting over when it changed; a pair that does not verify is read again
(``transient``) until it does, for at most a few seconds (else ``persistent``). A
mismatch whose ``.asc`` is newer than its ``repomd.xml`` (the ``repomd.xml`` of the
last good pair with another ``.asc``) is the order the publisher promises never to
show (``asc_ahead``). It prints the rounds and those counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from reconciler.verifying import verify_tree


def snapshot(src: Path, dest: Path) -> str:
    repomds = sorted(src.rglob("repodata/repomd.xml"))
    digest = hashlib.sha256()
    for repomd in repomds:  # metadata first, as a client reads it
        target = dest / repomd.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = repomd.read_bytes()
        digest.update(data)
        target.write_bytes(data)
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            path = Path(dirpath) / name
            target = dest / path.relative_to(src)
            if name.endswith(".~tmp~") or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # deleted while we looked: skip it
                shutil.copyfile(path, target)
    return digest.hexdigest()


class Pairs:
    """The signature pairs seen, checked with a keyring of the public key."""

    def __init__(self, keyring: Any, work: Path) -> None:
        self.keyring, self.work = keyring, work
        self.good: dict[Path, tuple[bytes, bytes]] = {}
        self.counts = {"pairs": 0, "transient": 0, "persistent": 0, "asc_ahead": 0}

    def read(self, repomd: Path) -> tuple[bytes, bytes]:
        while True:
            first = repomd.read_bytes()
            try:
                asc = repomd.with_name("repomd.xml.asc").read_bytes()
            except FileNotFoundError:  # a mismatch as well
                asc = b""
            if repomd.read_bytes() == first:
                return first, asc

    def verifies(self, pair: tuple[bytes, bytes]) -> bool:
        data, asc = self.work / "repomd.xml", self.work / "repomd.xml.asc"
        data.write_bytes(pair[0])
        asc.write_bytes(pair[1])
        return self.keyring.verify(data, asc) is None

    def check(self, src: Path) -> None:
        for repomd in sorted(src.rglob("repodata/repomd.xml")):
            pair = self.read(repomd)
            self.counts["pairs"] += 1
            if pair != self.good.get(repomd) and not self.verifies(pair):
                last = self.good.get(repomd)
                if last is not None and last[0] == pair[0] and last[1] != pair[1]:
                    self.counts["asc_ahead"] += 1
                give_up = time.monotonic() + 5
                while not self.verifies(pair) and time.monotonic() < give_up:
                    time.sleep(0.01)
                    pair = self.read(repomd)
                if not self.verifies(pair):
                    self.counts["persistent"] += 1
                    continue
                self.counts["transient"] += 1
            self.good[repomd] = pair


def check_pairs(src: Path, work: Path, stop: Path, public_key: Path) -> int:
    """The pair checks alone, again and again until STOPFILE exists (unchanged pairs cost
    two reads, so that the loop is fast enough to see the moments between two renames)."""
    from reconciler.metasign import Keyring  # only here: the snapshot reader starts as fast

    (work / "pair").mkdir(parents=True)
    with Keyring([public_key]) as keyring:
        pairs = Pairs(keyring, work / "pair")
        rounds = 0
        while not stop.exists() or rounds == 0:
            pairs.check(src)
            rounds += 1
            if rounds == 1:
                (work / "ready").touch()  # the test starts the publish now
    print(json.dumps({"rounds": rounds, **pairs.counts}))
    return 0


def main() -> int:
    src, work, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    if len(sys.argv) > 4:
        return check_pairs(src, work, stop, Path(sys.argv[4]))
    count = bad = 0
    problems: list[str] = []
    seen: set[str] = set()
    while not stop.exists() or count == 0:
        dest = work / f"snap-{count}"
        seen.add(snapshot(src, dest))
        report = verify_tree(dest)
        if not report.ok:
            bad += 1
            problems.extend(str(p) for p in report.problems[:5])
        shutil.rmtree(dest)
        count += 1
    print(
        json.dumps(
            {
                "snapshots": count,
                "inconsistent": bad,
                "problems": problems[:20],
                "states": len(seen),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
