"""A mirror-like reader, run as a separate process by the consistency test.

Until STOPFILE exists, it snapshots every repo under SRC the way a client that
follows the metadata copies it (each repomd.xml first, then everything else it
sees), verifies the snapshot with ``reconciler verify``'s code, and counts.
Prints one JSON line: snapshots, inconsistent, problems, repomd digests seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

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


def main() -> int:
    src, work, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
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
