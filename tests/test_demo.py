"""``reconciler demo`` runs the whole flow quickly and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from reconciler.verifying import verify_tree


def test_demo(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "reconciler.cli", "demo", "--dir",
                           str(tmp_path / "demo")], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 60
    out = proc.stdout
    for step in ("1. Alice adds the SIG", "2. Bob merges a promotion", "3. The build system",
                 "4. Carol promotes", "5. Dave reverts"):  # fmt: skip
        assert step in out
    assert "Carol Checker <carol@example.org>" in out and "Dave Ops" in out
    assert "nothing is left running" in out
    production = tmp_path / "demo" / "repos-production"
    assert verify_tree(production).ok
    first = sorted(p.name for p in (tmp_path / "demo" / "compose" / "9").glob("SIG-demo-9-*"))[0]
    assert f"5. Dave reverts Carol's commit: production rolls back to {first}" in out
    # refuses to reuse a non-empty directory
    again = subprocess.run([sys.executable, "-m", "reconciler.cli", "demo", "--dir",
                            str(tmp_path / "demo")], capture_output=True, text=True, timeout=60,
                           check=False)  # fmt: skip
    assert again.returncode == 1 and "not empty" in again.stdout
