"""Promotion gates: whether production may take a compose, and what status says about
the release's signatures. Pure: no I/O, no clock (``now`` is passed in).

* the **staging gate** (``promotion.require_staged``, ``promotion.min_soak``): production
  only takes a compose that was staged, long enough ago;
* the **signature gate** (``signatures.check``, on by default like the toolkit's
  ``reposync --gpgcheck``): while a key file named in ``gpg_keys`` is missing from
  ``keys/``, the release composes and stages without verifying its packages, but
  production takes nothing new until the key is added or the SIG says
  ``signatures: {check: false, reason: ...}``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .facts import ComposeFact
from .spec import PromotionDefaults, ReleaseSpec, Spec


def _fmt_age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"


def staging_gate(
    promo: PromotionDefaults,
    pin: str,
    staged_at: datetime | None,
    staged_in_this_plan: bool,
    now: datetime,
) -> str | None:
    """Why production may not take ``pin`` yet (``None``: it may). ``staged_at`` is when
    ``pin`` was first staged; ``staged_in_this_plan``: the same plan stages it first."""
    if not promo.require_staged:
        return None
    if staged_at is None:
        if staged_in_this_plan and promo.min_soak == timedelta(0):
            return None
        return f"{pin} has not been staged (promotion.require_staged)"
    soaked = now - staged_at
    if soaked < promo.min_soak:
        return (
            f"{pin} staged {_fmt_age(soaked)} ago; promotion.min_soak is {_fmt_age(promo.min_soak)}"
        )
    return None


def _missing(spec: Spec, rel: ReleaseSpec) -> str:
    """``keys/A is missing`` or ``keys/A, keys/B are missing``."""
    keys = spec.missing_keys(rel)
    listed = ", ".join(f"keys/{k}" for k in keys)
    return f"{listed} {'is' if len(keys) == 1 else 'are'} missing"


def signature_note(spec: Spec, rel: ReleaseSpec) -> str | None:
    """What every status row of the release says about its packages' signatures, when
    they are not verified for a reason the spec shows: a named key file is missing
    (``signatures.check`` on), or the SIG turned the check off (its reason). ``None``
    when the compose verifies them, or when nothing names a key to verify with."""
    if spec.verifies_signatures(rel):
        return None
    if not rel.signatures.check:
        return f"signatures not checked: {rel.signatures.reason or 'signatures.check is off'}"
    if spec.missing_keys(rel):
        return f"packages not verified: {_missing(spec, rel)}"
    return None


def signature_gate(spec: Spec, rel: ReleaseSpec) -> str | None:
    """Why production may not take a compose of ``rel`` (``None``: the gate is open)."""
    if not rel.signatures.check or not spec.missing_keys(rel):
        return None
    return (
        f"packages not verified: {_missing(spec, rel)} (signatures.check is on): add the "
        "key file to desired-state/keys/ (keys/SOURCES.md says how), or set "
        'signatures: {check: false, reason: "..."} for this release'
    )


def unverified(spec: Spec, rel: ReleaseSpec, compose: ComposeFact | None) -> str | None:
    """Why ``compose`` must be made again before production may take one: its packages
    were not verified (a key was missing then, or the check was off), and now they
    would be. ``None``: it was verified, or nothing is verified now."""
    if compose is None or compose.verified or not spec.verifies_signatures(rel):
        return None
    return (
        f"{compose.compose_id} was composed without verifying its packages' signatures; "
        "every key is in keys/ now"
    )


def promotion_gate(
    spec: Spec,
    rel: ReleaseSpec,
    pin: str,
    staged_at: datetime | None,
    staged_new: str | None,
    now: datetime,
    compose: ComposeFact | None = None,
) -> str | None:
    """Every gate that keeps ``pin`` out of production, joined (``None``: none does).
    ``staged_new``: what the same plan stages first, if anything; ``compose``: the pin's
    compose as observed (an unverified one waits for a verified compose to be pinned)."""
    stale = unverified(spec, rel, compose)
    problems = (
        signature_gate(spec, rel),
        f"{stale}: pin a compose made since" if stale else None,
        staging_gate(spec.defaults.promotion, pin, staged_at, staged_new == pin, now),
    )
    return "; ".join(p for p in problems if p) or None
