"""What keeps a compose of 100,000 packages small: the placement's steps share what they
have in common (the repository's URL, the reason of a link) instead of a copy each. (The
downloads are queued jobs of ``upstream.batch``'s libcurl loops, not one future each.)"""

from __future__ import annotations

from reconciler.layout import Variant
from reconciler.placement import Previous, PreviousPackage, VariantSource, choose, plan
from reconciler.vocabulary import VariantKind

from .placement_support import package


def test_link_steps_share_their_reason_and_make_a_url_only_when_asked() -> None:
    old = Variant("core-common", "x86_64", VariantKind.BINARY)
    facts = [
        package({"nevra": f"sig-p{i}-1.0-1.x86_64", "id": f"id{i}", "size": 7}) for i in range(3)
    ]
    prev = Previous(
        "SIG-core-9-20261101.0",
        {f.pkgid: PreviousPackage(f.pkgid, 7, old, f"Packages/{f.filename}", 5) for f in facts},
    )
    base = "http://build.invalid/repo/core-common/x86_64"
    links = plan([choose(VariantSource(old, base, tuple(facts)), 0, True)], prev).links
    assert len(links) == 3
    assert all(s.base is base for s in links), "each step refers to the one repository URL"
    assert links[1].reason is links[0].reason is links[2].reason
    assert links[2].url == f"{base}/Packages/sig-p2-1.0-1.x86_64.rpm"
