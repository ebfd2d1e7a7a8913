"""Compose, stage and promote the RPM repositories of SIGs from a desired state in git.

The public surface is small; everything else is private to its step module.
"""

from __future__ import annotations

from .errors import ReconcilerError, SpecError, SpecIssue
from .spec import Spec
from .specfile import load_spec

__version__ = "0.1.0"

__all__ = ["ReconcilerError", "Spec", "SpecError", "SpecIssue", "__version__", "load_spec"]
