"""Signed repository metadata (issue 17): real gpg, real dnf, real HTTP.

A throwaway key is generated in a temporary gpg home (no passphrase), its public half
exported into the desired state's ``keys/``; the composes sign every ``repomd.xml`` with
it (``sign: {gpg_home, key_id, key_file}``, or a signing command with the toolkit's
interface). What each test proves is in its docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import testing as su
from reconciler.state import StateDB
from reconciler.vocabulary import Stage

from .conftest import PROJECT_ID, REPOS, make_desired_state, write_host_config
from .publish_support import CATEGORY, SIG_REL, World, _initial, history
from .site_support import mirror_reader, slowed_apply

KEY_NAME = "RPM-GPG-KEY-Test-Repo-Signing"
ASC = "repodata/repomd.xml.asc"
REPO = "x86_64/core-common"
pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")


@dataclass(frozen=True)
class Key:
    home: Path
    fingerprint: str
    public: Path


def _gpg(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), *args],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def key() -> Iterator[Key]:
    """A fresh signing key; its agent is stopped afterwards. A short path (in /tmp): the
    agent's socket path has a length limit."""
    home = Path(tempfile.mkdtemp(prefix="gpg-"))
    try:
        _gpg(home, "--passphrase", "", "--quick-gen-key", "Repo Signing <sign@localhost>",
             "ed25519", "sign", "never")  # fmt: skip
        listing = _gpg(home, "--with-colons", "--list-keys").stdout
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if "fpr" in line)
        public = home.parent / f"{home.name}.pub"
        public.write_text(_gpg(home, "--armor", "--export", fingerprint).stdout)
        yield Key(home, fingerprint, public)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)
        home.parent.joinpath(f"{home.name}.pub").unlink(missing_ok=True)


def gpg_sign(key: Key) -> dict[str, Any]:
    return {"gpg_home": str(key.home), "key_id": key.fingerprint, "key_file": KEY_NAME}


def signed_world(tmp: Path, key: Key, sign: dict[str, Any], promote: bool = True) -> World:
    """Compose A staged (and with ``promote``, in production) signed as ``sign`` says."""
    root = tmp / "world"
    root.mkdir(parents=True)
    up_root = root / "upstream"
    su.build_upstream(up_root, PROJECT_ID, REPOS, include=_initial)
    defaults = {
        "upstream": {"base_url": "https://build.invalid/v1/projects"},
        "publish": {"category": CATEGORY, "delete_grace": "24h"},
        "releases": {"9": {"arches": ["x86_64", "aarch64"]}},
        "sign": sign,
    }
    ds = make_desired_state(root / "desired-state", yaml.safe_dump(defaults), write=False)
    shutil.copy(key.public, ds.path / "keys" / KEY_NAME)
    server = su.UpstreamServer(up_root).start()
    config = write_host_config(root, server.base_url, drift_interval=0)
    world = World(root, config, ds, up_root, server)
    ds.write(production=None)
    code = world.run("apply")
    world.a = world.staged()
    if promote and code == 0:
        ds.write(production=world.a)
        assert world.run("apply") == 0
    return world


@pytest.fixture
def world(tmp_path: Path, key: Key) -> Iterator[World]:
    w = signed_world(tmp_path, key, gpg_sign(key))
    try:
        yield w
    finally:
        w.server.stop()


def verify(world: World, path: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "verify", str(path),
         "--desired-state", str(world.ds.path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def dnf_gpgcheck(workdir: Path, url: str, keys: list[Path]) -> subprocess.CompletedProcess[str]:
    """``dnf install sig-hello`` from ``url`` only, packages and repomd.xml signatures checked."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        ["dnf", "-y", "-q", f"--installroot={workdir / 'root'}",
         f"--setopt=cachedir={workdir / 'cache'}", "--setopt=reposdir=/dev/null",
         "--setopt=module_platform_id=platform:el9", "--releasever=9",
         f"--repofrompath=t,{url}", "--repo=t", "--setopt=t.gpgcheck=1",
         "--setopt=t.repo_gpgcheck=1", "--setopt=t.skip_if_unavailable=0", f"--setopt=t.gpgkey={' '.join(k.as_uri() for k in keys)}",
         "install", "sig-hello"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@contextmanager
def dnf_agents(top: Path) -> Iterator[None]:
    """librepo starts a gpg-agent for the keyring it keeps in dnf's cache: stopped after."""
    try:
        yield
    finally:
        for pubring in top.glob("*/cache/*/pubring"):
            subprocess.run(["gpgconf", "--homedir", str(pubring), "--kill", "all"], check=False)


def compose_sig_dirs(world: World) -> list[Path]:
    return sorted((world.root / "compose" / "9").glob("SIG-core-9-*/compose/9/core"))


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")
def test_dnf_with_repo_gpgcheck_installs_from_signed_production_over_http(
    world: World, key: Key, tmp_path: Path
) -> None:
    """Every repo of the compose is signed, the signature is in its manifest, production
    publishes it with its metadata (inventoried, in the file lists); ``verify`` passes,
    and dnf with ``repo_gpgcheck=1`` installs over HTTP. Without the signature dnf
    refuses the repo (so the check is real)."""
    (sig_dir,) = compose_sig_dirs(world)
    repos = sorted(p.parent.parent for p in sig_dir.rglob("repodata/repomd.xml"))
    assert len(repos) == 8  # core-common: 2 arches, their -debug, source; core-infra: 3
    assert all((r / ASC).stat().st_size > 0 for r in repos)
    listed = (
        sig_dir.parent.parent.parent / "compose" / "metadata" / "reconciler-files.tsv"
    ).read_text()
    assert all(f"{r.relative_to(sig_dir)}/{ASC}\t" in listed for r in repos)
    prod = world.production / SIG_REL
    for repo in repos:
        rel = repo.relative_to(sig_dir)
        assert (prod / rel / ASC).read_bytes() == (repo / ASC).read_bytes()
    with StateDB.open(world.root / "state") as state:
        held = state.inventory.entries(Stage.PRODUCTION, f"{SIG_REL}/")
    assert f"{SIG_REL}/{REPO}/{ASC}" in held
    assert f"9/core/{REPO}/{ASC}" in (world.production / CATEGORY / "fullfilelist").read_text()
    code, out = verify(world, world.production)
    assert code == 0, out
    package_key = prod / REPO / su.SAMPLE_KEY.name
    with su.UpstreamServer(world.production) as server, dnf_agents(tmp_path):
        url = f"{server.base_url}/{SIG_REL}/{REPO}"
        done = dnf_gpgcheck(tmp_path / "dnf", url, [package_key, key.public])
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "dnf/root/usr/share/sig-hello").is_dir()
        (prod / REPO / ASC).rename(tmp_path / "asc")
        refused = dnf_gpgcheck(tmp_path / "dnf2", url, [package_key, key.public])
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert "repomd.xml.asc" in refused.stdout + refused.stderr, refused.stdout + refused.stderr


def test_verify_names_a_corrupted_or_missing_signature(world: World) -> None:
    """Bytes flipped in a published ``.asc``: ``verify`` exits 1 naming the file; a
    removed one too; the untouched repos stay fine. Without a desired state it says
    that it did not check signatures."""
    asc = world.production / SIG_REL / REPO / ASC
    data = bytearray(asc.read_bytes())
    plain = subprocess.run(  # a host config without a git source: no keys to check with
        [sys.executable, "-m", "reconciler.cli", "verify", str(world.production),
         "--config", str(world.config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert plain.returncode == 0 and "signatures not checked" in plain.stderr, plain
    body = data.index(b"\n\n") + 10  # inside the base64 of the signature packet
    data[body] = ord("A") if data[body] != ord("A") else ord("B")
    asc.chmod(0o644)
    asc.write_bytes(bytes(data))
    code, out = verify(world, world.production)
    assert code == 1 and f"{asc}:" in out, out
    assert out.count(ASC) == 1, out  # only that repo's
    asc.unlink()
    code, out = verify(world, world.production)
    assert code == 1 and f"{asc}: missing" in out, out


def test_a_compose_that_keeps_its_repodata_keeps_its_signature(
    world: World, key: Key, cli: Any
) -> None:
    """A compose of an unchanged upstream keeps every repo's ``repodata/`` byte for byte,
    and its ``.asc`` with it (the same inode: nothing for a mirror to fetch again)."""
    result = cli("compose", "core", "9", "--config", world.config,
                 "--desired-state", world.ds.path)  # fmt: skip
    assert result.code == 0, result.out + result.err
    first, second = compose_sig_dirs(world)
    for asc in first.rglob(ASC):
        again = second / asc.relative_to(first)
        assert again.stat().st_ino == asc.stat().st_ino
    code, out = verify(world, second)
    assert code == 0, out


SIGNERS = {
    "fails": (
        ["/bin/sh", "-c", "echo no key for {release} >&2; exit 3", "sh"],
        "failed (exit 3): no key for 9",
    ),
    "writes nothing": (["/bin/true"], "wrote no signature"),
    "writes an empty file": (["/bin/sh", "-c", ': > "$1.asc"', "sh"], "wrote an empty signature"),
}


@pytest.mark.parametrize("how", sorted(SIGNERS))
def test_a_signer_that_fails_dooms_the_compose_and_nothing_is_published(
    tmp_path: Path, key: Key, how: str, cli: Any
) -> None:
    """The compose is DOOMED with the reason (in the apply output and in status); nothing
    is staged."""
    command, reason = SIGNERS[how]
    world = signed_world(tmp_path, key, {"command": command, "key_file": KEY_NAME}, False)
    try:
        assert_doomed(world, cli, reason)
    finally:
        world.server.stop()


def test_a_hanging_signer_is_killed_with_its_children_at_the_timeout(
    tmp_path: Path, key: Key, cli: Any
) -> None:
    """``sleep 30`` (and a child it left in the background) past ``timeout: 1``: the
    whole process group is killed, the compose DOOMED with the reason."""
    pidfile = tmp_path / "child.pid"
    command = ["/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait", "sh"]
    world = signed_world(
        tmp_path, key, {"command": command, "key_file": KEY_NAME, "timeout": 1}, False
    )
    try:
        assert_doomed(world, cli, "did not finish within 1s (sign.timeout): killed")
        child = int(pidfile.read_text())
        assert not Path(f"/proc/{child}").exists() or "Z" in _proc_state(child)
    finally:
        world.server.stop()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def assert_doomed(world: World, cli: Any, reason: str) -> None:
    tree = world.root / "compose" / "9"
    (doomed,) = list_composes_in(tree)
    assert (doomed / "STATUS").read_text() == "DOOMED\n"
    assert reason in (doomed / "logs" / "compose.log").read_text()
    result = cli("status", "--format", "json", "--config", world.config)
    rows = [r for r in json.loads(result.out) if r["stage"] == "compose"]
    assert rows and reason in (rows[0]["reason"] or ""), result.out
    assert reason in json.dumps(history(world)), history(world)
    assert not (world.staging / SIG_REL).exists() or not any((world.staging / SIG_REL).rglob("*"))
    assert not (tree / "latest-SIG-core-9").exists()


def list_composes_in(tree: Path) -> list[Path]:
    return sorted(p for p in tree.glob("SIG-core-9-*") if p.is_dir())


def test_sign_is_checked_with_file_and_line(tmp_path: Path, cli: Any) -> None:
    """Both ways at once, neither, and a key file that keys/ lacks: each reported."""
    ds = make_desired_state(tmp_path / "ds")
    with (ds.path / "defaults.yaml").open("a") as fh:
        fh.write("sign: {command: [/bin/sign], gpg_home: /g, key_id: K, key_file: NOPE}\n")
    result = cli("validate", ds.path)
    assert result.code == 1
    assert "defaults.yaml:9: sign: give either command or gpg_home and key_id" in result.out
    assert "defaults.yaml:9: sign.key_file: keys/NOPE does not exist" in result.out


def test_a_reader_following_the_documented_order_never_settles_on_a_mismatched_pair(
    world: World, key: Key, tmp_path: Path
) -> None:
    """The mirror-like reader of the consistency test, and its pair checker reading every
    repo's ``repomd.xml`` and ``.asc`` in a loop while B is promoted: every pair it reads verifies, or does on a prompt
    second read (the moment between a ``repomd.xml`` and its ``.asc``); never a
    signature newer than its ``repomd.xml``; the metadata always consistent. Each rename
    is slowed down (so the moment between two is long enough to be seen): with the
    ``.asc`` placed before its ``repomd.xml`` instead, ``asc_ahead`` counts them."""
    if shutil.which("strace") is None:
        pytest.skip("strace slows the publish down so that the reader overlaps it")
    world.update_upstream()
    assert world.run("apply") == 0
    world.b = world.staged()
    assert world.b != world.a
    stop = tmp_path / "stop"
    src = world.production / SIG_REL
    readers = [
        mirror_reader(src, tmp_path / name, stop, *extra)
        for name, extra in (("snaps", []), ("pairs", [str(key.public)]))
    ]
    try:
        give_up = time.monotonic() + 60
        while not (tmp_path / "pairs" / "ready").exists() and time.monotonic() < give_up:
            time.sleep(0.05)
        time.sleep(0.5)
        world.pin(world.b)
        slowed_apply(world.config, "rename,renameat,renameat2", 100000,
                     "--desired-state", str(world.ds.path))  # fmt: skip
        time.sleep(0.3)
    finally:
        stop.touch()
        said = [reader.communicate(timeout=120) for reader in readers]
    assert all(reader.returncode == 0 for reader in readers), said
    result, pairs = (json.loads(out) for out, _err in said)
    print(f"mirror reader: {result}; pairs: {pairs}")
    assert result["inconsistent"] == 0, result["problems"]
    assert result["snapshots"] >= 5 and result["states"] >= 2, result
    assert pairs["persistent"] == 0 and pairs["asc_ahead"] == 0, pairs
    assert pairs["rounds"] >= 10, pairs
    code, said = verify(world, world.production)
    assert code == 0, said


def test_each_signature_is_placed_right_after_its_repomd_xml() -> None:
    """Whatever order the compose's files come in, the ``repomd.xml`` phase places each
    ``.asc`` right after its ``repomd.xml``; a lone ``.asc`` (its ``repomd.xml`` did not
    change) keeps its place. Pure: the change set alone."""
    from reconciler.changeset import FromInventory, change_set
    from reconciler.composefiles import SourceFile
    from reconciler.vocabulary import PublishPhase

    rels = ["b/repodata/repomd.xml.asc", "a/repodata/repomd.xml", "c/repodata/repomd.xml.asc",
            "b/repodata/repomd.xml", "a/repodata/repomd.xml.asc", "a/Packages/x.rpm"]  # fmt: skip
    files = tuple(SourceFile(rel, Path("/c"), 1, 1) for rel in rels)
    changes = change_set("p/", FromInventory(files, {}), ())
    placed = [c.path.removeprefix("p/") for c in changes.phase(PublishPhase.REPOMD)]
    assert placed == [
        "a/repodata/repomd.xml",
        "a/repodata/repomd.xml.asc",
        "c/repodata/repomd.xml.asc",
        "b/repodata/repomd.xml",
        "b/repodata/repomd.xml.asc",
    ]


def test_sigkill_between_a_repomd_xml_and_its_signature_is_finished_by_the_next_pass(
    world: World, tmp_path: Path
) -> None:
    """The publish is killed right after one ``repomd.xml`` was renamed into place (strace
    kills it there, no hook in the product): that repo has its new ``repomd.xml`` and its
    old ``.asc``, which ``verify`` reports; the metadata is consistent; the next pass
    places the signature and everything verifies."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    world.update_upstream()
    assert world.run("apply") == 0
    world.pin(world.staged())
    repomd = world.production / SIG_REL / REPO / "repodata" / "repomd.xml"
    old_asc = (repomd.parent / "repomd.xml.asc").read_bytes()
    for name in ("production", "state"):  # the same publish twice: traced, then killed
        shutil.copytree(world.root / name, tmp_path / "saved" / name, symlinks=True)
    renames = "rename,renameat,renameat2"
    trace = tmp_path / "renames.txt"
    # -y: the publish renames relative to the open directory (renameat(fd<dir>, name, ...))
    assert traced_apply(world, ["-y", "-o", str(trace), "-e", f"trace={renames}"]) == 0
    calls = [line for line in trace.read_text().splitlines() if "rename" in line]
    dest = (f'"{repomd}"', f'{repomd.parent}>, "{repomd.name}"')
    nth = next(i for i, line in enumerate(calls, 1) if any(d in line for d in dest))
    for name in ("production", "state"):
        shutil.rmtree(world.root / name)
        shutil.copytree(tmp_path / "saved" / name, world.root / name, symlinks=True)
    kill = ["-o", "/dev/null", "-e", f"trace={renames}", "-e",
            f"inject={renames}:signal=SIGKILL:when={nth}"]  # fmt: skip
    assert traced_apply(world, kill) in (-9, 137)
    assert (repomd.parent / "repomd.xml.asc").read_bytes() == old_asc
    code, said = verify(world, world.production)
    assert code == 1 and f"{repomd}.asc: a bad signature of repomd.xml" in said, said
    assert said.count(f"{ASC}:") == 1, said  # that repo's only; its metadata is fine
    assert world.run("apply") == 0
    code, said = verify(world, world.production)
    assert code == 0, said


def traced_apply(world: World, strace: list[str]) -> int:
    cmd = ["strace", "-qq", *strace, sys.executable, "-m", "reconciler.cli", "apply",
           "--config", str(world.config), "--desired-state", str(world.ds.path)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, timeout=300, check=False).returncode
