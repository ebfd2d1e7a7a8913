"""The status page from the state: ``status --format html``, escaping, commit links, the
per-release page's counts from the compose manifest, and the places other parts fill."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.errors import ConfigError
from reconciler.facts import TargetKey
from reconciler.pagerender import render_index, render_release
from reconciler.specfile import load_host_config
from reconciler.state import StateDB
from reconciler.statuspage import Extras, MirrorCell, PackageDiff, gather, release_page
from reconciler.vocabulary import Stage

from .conftest import DesiredState, Upstream, git_host
from .gitrepo import DesiredRepo

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
FORGE = "https://forge.example/desired-state/commit/{sha}"


@pytest.fixture
def world(
    tmp_path: Path, desired_state: DesiredState, upstream: Upstream
) -> tuple[Path, DesiredRepo]:
    msg = f"Add SIG core {XSS}"
    return git_host(tmp_path, desired_state, upstream, msg, "Mallory Markup", commit_url=FORGE)


def text_of(page: str) -> str:
    """What a reader sees: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_the_exported_page_shows_the_grid_revision_and_history_escaped(
    cli: Any, world: tuple[Path, DesiredRepo]
) -> None:
    config, repo = world
    assert cli("apply", "--config", config).code == 0
    result = cli("status", "--format", "html", "--config", config)
    assert result.code == 0, result.err
    page = result.out
    assert page.startswith("<!doctype html>")
    sha = repo.git("rev-parse", "HEAD")
    # the commit message is text: escaped, never markup
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page
    assert f"Add SIG core {XSS}" in text_of(page)
    assert "Mallory Markup &lt;mallory@example.org&gt;" in page
    assert f'href="{FORGE.replace("{sha}", sha)}"' in page
    # the grid: one row for core 9, a cell per stage with its state as a word (and icon)
    row = re.search(r'<tr data-release="core/9">(.*?)</tr>', page, re.S)
    assert row is not None
    states = re.findall(r'data-state="(\w+)"', row[1])
    assert states == ["Synced", "Synced", "Synced"], states
    # history: the compose and the staging publish, each from the commit, triggered by it
    assert "publish staging" in text_of(page)
    assert ">commit<" in page
    # an export does not refresh itself and links nowhere it cannot serve
    assert 'http-equiv="refresh"' not in page and 'href="release/' not in page
    # the places other parts fill are absent without data
    assert "mirrors:" not in page and 'class="panel diff"' not in page


def test_a_blocked_promotion_is_pending_with_its_reason(
    cli: Any, world: tuple[Path, DesiredRepo]
) -> None:
    config, repo = world
    assert cli("apply", "--config", config).code == 0
    repo.set_release(production="SIG-core-9-20200101.0")
    repo.commit("Pin a compose that does not exist")
    assert cli("apply", "--config", config).code == 1
    page = cli("status", "--format", "html", "--config", config).out
    pending = re.search(r'<section id="pending">(.*?)</section>', page, re.S)
    assert pending is not None, "a blocked target is listed as pending"
    assert 'data-target="core/9/production"' in pending[1]
    assert "Blocked" in pending[1] and "does not exist" in pending[1]


def test_the_release_page_counts_packages_from_the_manifest(
    cli: Any, world: tuple[Path, DesiredRepo]
) -> None:
    config, _repo = world
    assert cli("apply", "--config", config).code == 0
    host = load_host_config(config)
    with StateDB.open(host.state_dir, create=False) as state:
        page = release_page(host, state, "core", "9")
        assert release_page(host, state, "core", "8") is None
    assert page is not None
    compose, staging, production = page.stages
    assert compose.compose_id == staging.compose_id and compose.compose_id is not None
    assert production.compose_id is None and production.repos == ()
    counts = {(r.repo, r.arch): r for r in staging.repos}
    # what the compose's manifest lists under each repo's Packages/, and their bytes
    tree = host.compose_tree("core", "9").sig_dir(compose.compose_id)
    rpms = list((tree / "x86_64" / "core-common" / "Packages").rglob("*.rpm"))
    assert rpms and counts[("core-common", "x86_64")].packages == len(rpms)
    assert counts[("core-common", "x86_64")].bytes == sum(p.stat().st_size for p in rpms)
    assert ("core-common", "src") in counts
    text = text_of(render_release(page))
    assert "core-common" in text and "x86_64" in text and "holds nothing" in text


def test_mirror_cells_and_package_diffs_show_only_when_given(
    cli: Any, world: tuple[Path, DesiredRepo]
) -> None:
    config, _repo = world
    assert cli("apply", "--config", config).code == 0
    host = load_host_config(config)
    extras = Extras(
        mirrors={TargetKey(Stage.STAGING, "core", "9"): MirrorCell(1, 1, 1, 5400.0)},
        diffs=(
            PackageDiff(
                "core",
                "9",
                Stage.PRODUCTION,
                "promote X to production",
                1,
                0,
                2,
                0,
                ("sig-hello 1.0-1 -> 1.1-1",),
            ),
        ),
    )
    with StateDB.open(host.state_dir, create=False) as state:
        page = render_index(gather(host, state, extras=extras))
    shown = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())
    assert "mirrors: 1 current, 1 behind (1h30m), 1 unreachable" in shown
    page = text_of(page)
    assert "1 added, 0 removed, 2 upgraded, 0 downgraded" in page
    assert "sig-hello 1.0-1 -> 1.1-1" in page


def test_the_page_of_an_empty_state_says_so() -> None:
    from reconciler.statuspage import StatusPage

    page = render_index(StatusPage(datetime.now(UTC), None, (), None, (), ()))
    assert "no pass has run yet" in page and "no revision applied yet" in page


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)//{sha}", "https://forge.example/commit", "https://f/{sha}/{x}",
     'https://f/"onmouseover=x/{sha}', "https://f/{sha} x"],
)  # fmt: skip
def test_a_commit_url_must_be_an_http_template_with_the_sha(tmp_path: Path, url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "commit_url": url}))
    with pytest.raises(ConfigError, match="commit_url"):
        load_host_config(config)


def test_the_plans_package_diffs_become_the_pages_pending_diffs(
    cli: Any, world: tuple[Path, DesiredRepo]
) -> None:
    """What the loop keeps of the actions a pass left pending (the plan's diffs) is shown
    with its counts and lines; a diff with only a note ("known once composed") is not."""
    from reconciler import packagediff as pd
    from reconciler.statuspage import extras_from
    from reconciler.vocabulary import PackageChangeKind

    config, _repo = world
    assert cli("apply", "--config", config).code == 0
    host = load_host_config(config)
    change = pd.PackageChange(PackageChangeKind.UPGRADED, "sig-hello", "1.0-1", "1.1-1",
                              ("x86_64", "aarch64"))  # fmt: skip
    diffs = (
        pd.PackageDiff("core", "9", Stage.PRODUCTION, "SIG-core-9-20261204.1",
                       "SIG-core-9-20261204.0", (pd.RepoDiff("core-common", (change,)),)),
        pd.PackageDiff("core", "9", Stage.COMPOSE, None, note="known once composed"),
    )  # fmt: skip
    with StateDB.open(host.state_dir, create=False) as state:
        extras = extras_from(host, state, diffs)
        page = text_of(render_index(gather(host, state, extras=extras)))
    assert len(extras.diffs) == 1 and not extras.mirrors  # no mirrors configured
    assert "SIG-core-9-20261204.1 to production" in page
    assert "0 added, 0 removed, 1 upgraded, 0 downgraded" in page
    assert "upgraded sig-hello 1.0-1 -> 1.1-1" in page
