"""The one exception tree of the reconciler.

Every error the tool raises on purpose derives from :class:`ReconcilerError`;
the CLI turns it into a one-line message and a non-zero exit. Anything else
escaping is a bug.

    ReconcilerError
    ├── SpecError            the desired state is invalid (carries every issue)
    ├── ConfigError          the host config is missing or invalid
    ├── UnsafePathError      a name or href would leave its root
    ├── LockHeldError        another process holds the lock (names its pid)
    ├── UpstreamError        the build system answered badly (names the URL)
    │   ├── HTTPStatusError  ... with an HTTP error status (``status``: 404, 410, ...)
    │   └── IntegrityError   bytes do not match the metadata's size/checksum
    ├── SignatureError       an RPM is unsigned or signed by an unlisted key
    ├── ComposeError         a compose could not finish (names the compose)
    ├── SourceError          the desired-state git repository
    │   ├── SourceUnavailable    cannot be fetched (names the URL)
    │   └── SourceRejected       fetched, but refused (rewritten, unsigned, ...)
    ├── StateError           the state database is missing, corrupt or too new
    ├── LeaseLost            the leader lease lapsed: this process must not publish
    ├── PlanError            a saved plan cannot be applied (stale, unreadable)
    └── PublishError         a staging or production tree could not be updated
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base class of every expected failure."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a desired-state file, located by file and line."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class SpecError(ReconcilerError):
    """The desired state is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ConfigError(ReconcilerError):
    """The host config is missing or invalid."""


class UnsafePathError(ReconcilerError):
    """A name or path would escape the directory it must stay under."""


class LockHeldError(ReconcilerError):
    """Another process holds a lock."""


class UpstreamError(ReconcilerError):
    """The upstream build system could not be read (the message names the URL)."""


class HTTPStatusError(UpstreamError):
    """The server answered with an HTTP error status that is not worth a retry
    (``status``: a 404 tells a missing file from a failure)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class IntegrityError(UpstreamError):
    """Downloaded bytes do not match the size or checksum in the metadata."""


class SignatureError(ReconcilerError):
    """An RPM's signature is missing or made by a key the SIG does not list."""


class ComposeError(ReconcilerError):
    """A compose did not finish."""


class SourceError(ReconcilerError):
    """The desired-state git repository could not be used."""


class SourceUnavailable(SourceError):
    """The remote could not be fetched; the message names the URL."""


class SourceRejected(SourceError):
    """The fetched revision is refused: history rewritten, or a bad or missing signature."""


class NoGoodRevision(SourceError):
    """No revision of the desired state has validated yet; ``problems`` says why each
    candidate was refused (an applying pass records them for ``status``)."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("no usable desired-state revision yet: " + " | ".join(problems))
        self.problems = problems


class StateError(ReconcilerError):
    """The state database is missing, corrupt or of an unknown schema version."""


class PlanError(ReconcilerError):
    """A saved plan cannot be applied (stale or unreadable)."""


class PublishError(ReconcilerError):
    """A staging or production tree could not be updated."""


class LeaseLost(ReconcilerError):
    """The leader lease is no longer valid: this process must not publish (another may
    lead already). The action it stops is recorded as interrupted, not failed."""
