"""The bundled sample RPMs: real, tiny packages built by ``tests/rpms/build.sh``
(see ``tests/rpms/README.md``), in three sets: ``unsigned``, ``signed`` (sample SIG
key, ``samples/keys/RPM-GPG-KEY-sample-sig``) and ``otherkey`` (an unrelated key,
``samples/keys/RPM-GPG-KEY-other``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

SAMPLES_DIR: Path = Path(__file__).parent.parent / "samples"
"""The bundled samples: ``rpms/<set>/``, ``keys/``, ``extras/``."""
RPMS_DIR: Path = SAMPLES_DIR / "rpms"
KEYS_DIR: Path = SAMPLES_DIR / "keys"
EXTRAS_DIR: Path = SAMPLES_DIR / "extras"
SAMPLE_KEY: Path = KEYS_DIR / "RPM-GPG-KEY-sample-sig"
"""Public key that signed the ``signed`` set."""
OTHER_KEY: Path = KEYS_DIR / "RPM-GPG-KEY-other"
"""Public key that signed the ``otherkey`` set."""

ARCHES: tuple[str, ...] = ("x86_64", "aarch64", "ppc64le", "s390x")
"""Binary arches the sample RPMs are built for (besides noarch)."""

RpmSet = Literal["unsigned", "signed", "otherkey"]

CrObject = Any
"""A createrepo_c object (the module has no type information)."""

_CHANGELOG_LIMIT = 10
_TMP_SUFFIX = ".~tmp~"


# --------------------------------------------------------------------------
# The bundled RPMs
# --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SampleRpm:
    """An RPM file and the name, version, release and arch its name carries."""

    name: str
    version: str
    release: str
    arch: str
    path: Path = field(compare=False)

    @classmethod
    def parse(cls, path: Path) -> SampleRpm:
        """Split ``<name>-<version>-<release>.<arch>.rpm``."""
        stem = path.name.removesuffix(".rpm")
        nvr, _, arch = stem.rpartition(".")
        name_version, _, release = nvr.rpartition("-")
        name, _, version = name_version.rpartition("-")
        if stem == path.name or not all((name, version, release, arch)):
            raise ValueError(f"not an RPM file name: {path.name}")
        return cls(name=name, version=version, release=release, arch=arch, path=path)

    @property
    def is_source(self) -> bool:
        """A source RPM."""
        return self.arch == "src"

    @property
    def is_debug(self) -> bool:
        """A debuginfo or debugsource package (goes to ``<arch>-debug``)."""
        return self.name.endswith(("-debuginfo", "-debugsource"))


def sample_rpms(rpm_set: RpmSet = "signed") -> list[Path]:
    """All bundled RPMs of a set (binaries, debuginfo and SRPMs), sorted by name."""
    if rpm_set not in get_args(RpmSet):
        raise ValueError(f"unknown sample RPM set: {rpm_set!r}")
    return sorted((RPMS_DIR / rpm_set).glob("*.rpm"))


def sample_rpm(filename: str, rpm_set: RpmSet = "signed") -> Path:
    """One bundled RPM by file name, e.g. ``sig-hello-1.1-1.x86_64.rpm``."""
    for path in sample_rpms(rpm_set):
        if path.name == filename:
            return path
    raise FileNotFoundError(f"no sample RPM {filename!r} in set {rpm_set!r}")
