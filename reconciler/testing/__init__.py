"""The sample build system, for the tests and the demo only (never imported by a pass).

Bundled real RPMs (:mod:`.rpms`), yum repositories of them written with
createrepo_c (:mod:`.repos`), and an HTTP server on 127.0.0.1 that serves them
like the build system, with fault injection (:mod:`.server`).
"""

from __future__ import annotations

from .repos import (
    add_packages,
    build_upstream,
    default_include,
    include_all,
    iter_repo_dirs,
    remove_packages,
    upstream_repo_dir,
    write_repo,
)
from .rpms import (
    ARCHES,
    EXTRAS_DIR,
    KEYS_DIR,
    OTHER_KEY,
    RPMS_DIR,
    SAMPLE_KEY,
    SAMPLES_DIR,
    RpmSet,
    SampleRpm,
    sample_rpm,
    sample_rpms,
)
from .server import Fault, UpstreamServer

__all__ = [
    "ARCHES",
    "EXTRAS_DIR",
    "KEYS_DIR",
    "OTHER_KEY",
    "RPMS_DIR",
    "SAMPLES_DIR",
    "SAMPLE_KEY",
    "Fault",
    "RpmSet",
    "SampleRpm",
    "UpstreamServer",
    "add_packages",
    "build_upstream",
    "default_include",
    "include_all",
    "iter_repo_dirs",
    "remove_packages",
    "sample_rpm",
    "sample_rpms",
    "upstream_repo_dir",
    "write_repo",
]
