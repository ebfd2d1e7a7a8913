"""deploy/: the example host config, the systemd units, sysusers/tmpfiles, the
container files and the CI workflow are consistent with each other and with
the code. Fast: no network, no container engine. The systemd tools are used
when installed (else those tests skip and say why)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

import reconciler
from reconciler.hostconfig import HostConfig
from reconciler.specfile import load_host_config
from reconciler.state import StateDB
from reconciler.vocabulary import Stage

from .conftest import DesiredState, Upstream
from .mounts import Sandbox, unshare_refusal

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
EXAMPLE = DEPLOY / "config.example.yaml"
SERVICE = DEPLOY / "reconciler.service"
VERIFY_SERVICE = DEPLOY / "reconciler-verify.service"
TIMER = DEPLOY / "reconciler-verify.timer"
UNITS = [SERVICE, VERIFY_SERVICE, TIMER]
WORKFLOW = DEPLOY / "ci" / "plan-comment.yml"
VENV_BIN = "/opt/reconciler/venv/bin/reconciler"
ROOTS = {"/mnt/compose", "/mnt/repos-staging", "/mnt/repos-production"}
ROOTS_PARENT = "/mnt"  # the one writable entry holding the three: they stay one mount
STATE_DIR = "/var/lib/reconciler"

# Settings both services must carry, with these exact values.
HARDENING = {
    "User": "reconciler",
    "Group": "reconciler",
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0022",
    "StateDirectory": "reconciler",
    "CacheDirectory": "reconciler",
    "CacheDirectoryMode": "0700",
    "Environment": "RECONCILER_CONFIG=/etc/reconciler/config.yaml",
}


# -- a small unit-file parser (configparser loses repeated keys) -----------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}``; comments, blank lines and continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}:{number}: a setting outside any section"
        assert "=" in line, f"{path}:{number}: not KEY=VALUE: {line!r}"
        key, value = (part.strip() for part in line.split("=", 1))
        current.setdefault(key, []).append(value)
    assert not pending, f"{path}: ends in a continuation"
    return sections


def last(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def paths_of(unit: dict[str, dict[str, list[str]]], key: str) -> set[str]:
    """The paths of a (possibly repeated, possibly reset) path-list setting."""
    paths: set[str] = set()
    for value in unit["Service"].get(key, []):
        if not value:
            paths.clear()  # an empty assignment resets the list
        paths.update(p.lstrip("-+") for p in value.split())
    return paths


# -- the example host config -------------------------------------------------------------


def test_example_config_loads_with_the_current_model() -> None:
    host = load_host_config(EXAMPLE)
    assert {str(host.roots.compose), str(host.roots.staging), str(host.roots.production)} == ROOTS
    assert str(host.state_dir) == STATE_DIR
    assert host.git is not None


def _model_keys(model: type[Any], prefix: str = "") -> set[str]:
    keys = set()
    hints = typing.get_type_hints(model)
    for field in dataclasses.fields(model):
        name = field.name
        keys.add(prefix + name)
        annotation = hints[name]
        candidates = (
            typing.get_args(annotation)
            if isinstance(annotation, types.UnionType) or typing.get_origin(annotation)
            else (annotation,)
        )
        for candidate in candidates:
            if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
                keys |= _model_keys(candidate, f"{prefix}{name}.")
    return keys


def _yaml_keys(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, list):  # a list of records (mirrors): the keys of its items
        return set().union(*(_yaml_keys(item, prefix) for item in node))
    if not isinstance(node, dict):
        return set()
    keys = set()
    for key, value in node.items():
        keys.add(f"{prefix}{key}")
        keys |= _yaml_keys(value, f"{prefix}{key}.")
    return keys


def test_example_config_shows_every_key_of_the_model() -> None:
    shown = _yaml_keys(yaml.safe_load(EXAMPLE.read_text()))
    missing = _model_keys(HostConfig) - shown
    assert not missing, f"keys of the host config model missing from the example: {missing}"


def test_every_key_of_the_example_is_explained_by_a_comment() -> None:
    lines = EXAMPLE.read_text().splitlines()
    unexplained = []
    for i, line in enumerate(lines):
        if not re.match(r"^\s*[a-z_]+:", line):
            continue
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if "#" not in line and not above.lstrip().startswith("#"):
            unexplained.append(f"{EXAMPLE.name}:{i + 1}: {line.strip()}")
    assert not unexplained, "\n".join(unexplained)


# -- the systemd units -------------------------------------------------------------------


@pytest.mark.parametrize("path", [SERVICE, VERIFY_SERVICE], ids=lambda p: p.name)
def test_services_are_hardened(path: Path) -> None:
    unit = parse_unit(path)
    for key, expected in HARDENING.items():
        assert last(unit, "Service", key) == expected, f"{path.name}: {key}"
    exec_start = last(unit, "Service", "ExecStart").split()
    assert exec_start[0] == VENV_BIN
    assert "ProtectSystem" in unit["Service"] and "ReadWritePaths" in unit["Service"]


def test_main_service_runs_the_loop_and_stops_gently() -> None:
    unit = parse_unit(SERVICE)
    assert last(unit, "Service", "ExecStart") == f"{VENV_BIN} run"
    assert last(unit, "Service", "Type") == "simple"
    assert last(unit, "Service", "Restart") == "on-failure"
    assert last(unit, "Service", "RestartSec") == "30"
    assert last(unit, "Service", "KillSignal") == "SIGTERM"
    assert last(unit, "Service", "TimeoutStopSec") == "30min"
    assert last(unit, "Install", "WantedBy") == "multi-user.target"


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def test_main_service_writes_only_the_roots_parent_and_the_state_dir() -> None:
    unit = parse_unit(SERVICE)
    assert paths_of(unit, "ReadWritePaths") == {ROOTS_PARENT, STATE_DIR}
    # the example config's roots are all under that one writable parent, none listed
    # apart (each entry is a mount of its own: link(2) would not cross to its siblings)
    host = load_host_config(EXAMPLE)
    configured = {str(host.roots.compose), str(host.roots.staging), str(host.roots.production)}
    assert configured == ROOTS
    assert all(_under(root, ROOTS_PARENT) and root != ROOTS_PARENT for root in configured)
    assert not configured & paths_of(unit, "ReadWritePaths")
    assert str(host.state_dir) in paths_of(unit, "ReadWritePaths")
    mounts = set(last(unit, "Unit", "RequiresMountsFor").split())
    assert mounts >= ROOTS


def test_verify_service_only_reads_the_trees() -> None:
    unit = parse_unit(VERIFY_SERVICE)
    assert last(unit, "Service", "Type") == "oneshot"
    assert paths_of(unit, "ReadWritePaths") == {STATE_DIR}
    args = last(unit, "Service", "ExecStart").split()
    assert args[1:3] == ["verify", "--drift"]
    # it reads the loop's checkout instead of fetching git beside it
    assert args[args.index("--desired-state") + 1] == f"{STATE_DIR}/checkout"
    assert "Install" not in unit  # started by the timer


def test_timer_starts_the_verify_service_daily() -> None:
    unit = parse_unit(TIMER)
    assert last(unit, "Timer", "OnCalendar") == "daily"
    assert last(unit, "Timer", "Unit") == VERIFY_SERVICE.name
    assert last(unit, "Install", "WantedBy") == "timers.target"


def _reconciler_script() -> str | None:
    beside = Path(sys.executable).parent / "reconciler"
    return str(beside) if beside.is_file() else shutil.which("reconciler")


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    script = _reconciler_script()
    if script is None:
        pytest.skip("the reconciler script is not installed")
    # verify checks that ExecStart= is executable: point it at the installed script
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(VENV_BIN, script))
    proc = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    # verify exits 0 on settings it ignores ("Unknown key", "Failed to parse"): any line
    # about our units is a failure
    ours = [line for line in output.splitlines() if "reconciler" in line or str(tmp_path) in line]
    assert proc.returncode == 0, output
    assert not ours, "\n".join(ours)


def test_sysusers_and_tmpfiles_make_the_user_and_directories(tmp_path: Path) -> None:
    sysusers_conf = DEPLOY / "sysusers.d" / "reconciler.conf"
    tmpfiles_conf = DEPLOY / "tmpfiles.d" / "reconciler.conf"
    entries = [line.split() for line in tmpfiles_conf.read_text().splitlines()]
    entries = [e for e in entries if e and not e[0].startswith("#")]
    assert ["d", STATE_DIR, "0750", "reconciler", "reconciler", "-"] in entries
    assert ["d", "/etc/reconciler", "0755", "root", "root", "-"] in entries
    users = [line.split()[:2] for line in sysusers_conf.read_text().splitlines()]
    assert ["u", "reconciler"] in users

    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    if sysusers is None or tmpfiles is None:
        pytest.skip("systemd-sysusers/systemd-tmpfiles are not installed")
    # apply both to an empty root: the user is made, then the directories with its ids
    (tmp_path / "etc").mkdir()
    for cmd in (
        [sysusers, f"--root={tmp_path}", str(sysusers_conf)],
        [tmpfiles, f"--root={tmp_path}", "--create", str(tmpfiles_conf)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        print(proc.stdout, proc.stderr)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("reconciler:"))
    uid = int(entry.split(":")[2])
    assert entry.split(":")[5] == STATE_DIR
    state = (tmp_path / STATE_DIR.lstrip("/")).stat()
    assert (state.st_uid, state.st_mode & 0o7777) == (uid, 0o750)
    config_dir = (tmp_path / "etc" / "reconciler").stat()
    assert (config_dir.st_uid, config_dir.st_mode & 0o7777) == (0, 0o755)


# -- the unit's sandbox, as a mount namespace ---------------------------------------------

# The layout the unit had before: each root an entry of its own, so a mount of its own.
PER_ROOT = (
    "ReadWritePaths=/mnt/compose /mnt/repos-staging /mnt/repos-production /var/lib/reconciler"
)
LAYOUTS = ["shipped", "per-root"]


@pytest.fixture(scope="module")
def namespaces() -> None:
    refusal = unshare_refusal()
    if refusal is not None:
        pytest.skip(refusal)


def layout_unit(layout: str, tmp_path: Path) -> dict[str, dict[str, list[str]]]:
    """The shipped unit, or (``per-root``) the same with the roots listed one by one."""
    text = SERVICE.read_text()
    if layout == "per-root":
        text, count = re.subn(r"^ReadWritePaths=.*$", PER_ROOT, text, flags=re.MULTILINE)
        assert count == 1, f"{SERVICE.name}: one ReadWritePaths= line expected"
    path = tmp_path / f"{layout}.service"
    path.write_text(text)
    return parse_unit(path)


def unit_sandbox(unit: dict[str, dict[str, list[str]]], root: Path) -> Sandbox:
    """The mounts systemd makes for ``unit``, over ``root`` standing for "/"."""
    # the premise of the sandbox: all of "/" read-only but what the unit lets it write
    assert last(unit, "Service", "ProtectSystem") == "strict"
    writable = paths_of(unit, "ReadWritePaths")
    writable |= {f"/var/lib/{d}" for d in last(unit, "Service", "StateDirectory").split()}
    writable |= {f"/var/cache/{d}" for d in last(unit, "Service", "CacheDirectory").split()}
    sandbox = Sandbox(root, frozenset(writable), frozenset(paths_of(unit, "ReadOnlyPaths")))
    sandbox.make_paths()
    return sandbox


def _example_roots(sandbox: Sandbox) -> tuple[Path, Path, Path]:
    """compose, staging and production of the example config, inside ``sandbox``, made as
    the install steps of deploy/README.md make them."""
    roots = load_host_config(EXAMPLE).roots
    compose, staging, production = (
        sandbox.path(str(p)) for p in (roots.compose, roots.staging, roots.production)
    )
    for root in (compose, staging, production):
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
    return compose, staging, production


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_units_sandbox_writes_only_its_paths_and_links_within_one_mount(
    layout: str, tmp_path: Path, namespaces: None
) -> None:
    sandbox = unit_sandbox(layout_unit(layout, tmp_path), tmp_path / "sysroot")
    compose, _, production = _example_roots(sandbox)
    (compose / "probe").write_text("a package\n")
    config_dir = sandbox.path("/etc/reconciler")
    config_dir.mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}

    denied = sandbox.run(["touch", str(config_dir / "probe")], env)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    allowed = sandbox.run(["touch", str(sandbox.path(STATE_DIR) / "probe")], env)
    assert allowed.returncode == 0, allowed.stderr
    linked = sandbox.run(["ln", str(compose / "probe"), str(production / "probe")], env)
    if layout == "shipped":
        assert linked.returncode == 0, linked.stderr
        assert (production / "probe").stat().st_ino == (compose / "probe").stat().st_ino
    else:
        assert linked.returncode != 0 and "Invalid cross-device link" in linked.stderr, linked
    # the mounts were the namespace's alone: the host has none of them
    assert str(sandbox.root) not in Path("/proc/self/mountinfo").read_text()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_publish_under_the_unit_hardlinks_the_compose_into_staging_and_production(
    layout: str, tmp_path: Path, namespaces: None, upstream: Upstream, desired_state: DesiredState
) -> None:
    # As the service, but as root: the unit's User= and capabilities do not change
    # where link(2) works; its mounts do.
    unit = layout_unit(layout, tmp_path)
    sandbox = unit_sandbox(unit, tmp_path / "sysroot")
    compose, staging, production = _example_roots(sandbox)
    state_dir = sandbox.path(str(load_host_config(EXAMPLE).state_dir))
    config = sandbox.path("/etc/reconciler/config.yaml")  # read-only inside, as on a host
    config.parent.mkdir(parents=True)
    conf = {
        "roots": {"compose": str(compose), "staging": str(staging), "production": str(production)},
        "state_dir": str(state_dir),
        "upstream_base_url": upstream.server.base_url,
        "download": {"workers": 4, "retries": 2, "backoff": 0.01, "timeout": 10},
    }
    config.write_text(yaml.safe_dump(conf))
    env = {k: v for k, v in os.environ.items() if k != "RECONCILER_CACHE_DIR"}
    package_dir = str(Path(reconciler.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_dir, env.get("PYTHONPATH")]))
    # the record cache where systemd puts it for CacheDirectory= (writable in the sandbox)
    cache = sandbox.path(f"/var/cache/{last(unit, 'Service', 'CacheDirectory')}")
    env["CACHE_DIRECTORY"] = str(cache)
    apply = [sys.executable, "-m", "reconciler.cli", "apply", "--config", str(config)]
    apply += ["--desired-state", str(desired_state.path)]
    # the first pass composes and stages; the second promotes the staged compose
    for promote in (False, True):
        if promote:
            with StateDB.open(state_dir) as state:
                staged = state.targets.get("core", "9", Stage.STAGING)
            assert staged is not None and staged.compose_id
            desired_state.write(production=staged.compose_id)
        proc = sandbox.run(apply, env)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    composed: dict[str, set[int]] = {}
    for rpm in compose.rglob("*.rpm"):
        composed.setdefault(rpm.name, set()).add(rpm.stat().st_ino)
    assert composed, f"nothing composed under {compose}"
    for stage_root in (staging, production):
        published = sorted(stage_root.rglob("*.rpm"))
        assert published, f"nothing published under {stage_root}"
        for rpm in published:
            st = rpm.stat()
            if layout == "shipped":  # a link of the compose's file: the same inode
                assert st.st_ino in composed[rpm.name] and st.st_nlink > 1, rpm
            else:  # EXDEV: the publisher fell back to a copy, a new inode
                assert st.st_ino not in composed[rpm.name], rpm


# -- the container -----------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_containerfile_installs_the_package_and_runs_unprivileged() -> None:
    steps = _instructions(DEPLOY / "Containerfile")
    first = steps[0]
    assert first[0] == "FROM"
    assert first[1].startswith(("quay.io/rockylinux/rockylinux:9", "registry.access.redhat.com/"))
    values = {word: [rest for w, rest in steps if w == word] for word, _ in steps}
    assert values["ENTRYPOINT"] == ['["reconciler"]']
    assert values["CMD"] == ['["run"]']
    volumes = yaml.safe_load(values["VOLUME"][-1])
    # the roots are one volume (one mount: publishing hardlinks), as under the unit
    assert set(volumes) == {"/mnt", STATE_DIR, "/etc/reconciler"}
    assert all(root.startswith("/mnt/") for root in ROOTS)
    assert values["USER"][-1].split(":")[0] not in {"0", "root"}
    run = " ".join(values["RUN"])
    for package in ("python3.11", "python3.11-pip", "rpm", "git", "createrepo_c"):
        assert re.search(rf"\s{re.escape(package)}[\s-]", run), package
    assert "pip install" in run
    # everything it COPYs exists in the build context (the top of the repository)
    for rest in values["COPY"]:
        for source in rest.split()[:-1]:
            assert (DEPLOY.parent / source).exists(), source


def test_podman_example_is_valid_bash_and_mounts_everything() -> None:
    script = DEPLOY / "podman-run.example.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    for option in ("--read-only", "--tmpfs /tmp", "--user", "--stop-timeout", "--init"):
        assert option in text, option
    for target in ("/mnt", STATE_DIR, "/etc/reconciler"):
        assert f":{target}" in text, target
    for root in ROOTS:  # not one volume per root: links would not cross them
        assert f":{root}" not in text, root
    assert ":Z" in text and ":ro,Z" in text


# -- the CI workflow ---------------------------------------------------------------------


def _workflow() -> dict[typing.Any, typing.Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def test_ci_workflow_parses_and_plans_pull_requests() -> None:
    wf = _workflow()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on
    steps = wf["jobs"]["plan"]["steps"]
    scripts = "\n".join(s.get("run", "") for s in steps)
    assert "reconciler validate desired-state" in scripts
    assert re.search(r"reconciler plan --against \S+ --format markdown", scripts)
    assert "--config" in scripts
    assert "gh pr comment" in scripts and "--body-file" in scripts
    assert WORKFLOW.read_text().startswith("#")  # what it needs, before anything else


def test_ci_workflow_scripts_are_valid_bash_without_untrusted_expressions() -> None:
    for step in _workflow()["jobs"]["plan"]["steps"]:
        script = step.get("run")
        if script is None:
            continue
        # pull-request data must reach scripts through env:, never pasted into them
        assert "github.event" not in script and "head_ref" not in script, step["name"]
        plain = re.sub(r"\$\{\{.*?\}\}", "X", script)
        proc = subprocess.run(
            ["bash", "-n"], input=plain, capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, f"{step['name']}: {proc.stderr}"
