"""Compose, stage and promote the RPM repositories of SIGs from a desired state in git.

The public surface is small; everything else is private to its step module.
``Spec`` and ``load_spec`` are imported on first use (a command that does not read
the desired state need not pay for them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ReconcilerError, SpecError, SpecIssue

if TYPE_CHECKING:
    from .spec import Spec
    from .specfile import load_spec

__version__ = "0.1.0"

__all__ = ["ReconcilerError", "Spec", "SpecError", "SpecIssue", "__version__", "load_spec"]


def __getattr__(name: str) -> Any:
    if name == "Spec":
        from .spec import Spec

        return Spec
    if name == "load_spec":
        from .specfile import load_spec

        return load_spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
