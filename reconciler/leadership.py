"""One leader publishes: the lease a ``reconciler run`` process holds while it applies.

Every ``run`` process observes and plans; only the one holding the lease applies (the
staging and production trees, the statuses, the history). :func:`lease_for` picks the
lease for the host config's state, the one place that asks which engine it is:

- SQLite (one host): the apply lock (``<state_dir>/apply.lock``) is the lease, taken
  for each pass; a process that finds it taken follows for that pass. Its ``valid()``
  is true while held (the kernel drops the lock when the process dies).
- PostgreSQL (many hosts): a session advisory lock on a fixed key, held on a connection
  of the lease's own (not the state's), and the ``leader`` row renewed every third of
  ``state.lease`` by a heartbeat thread on that connection. ``valid()`` is true until
  ``lease - margin`` seconds after the last renewal that succeeded was SENT: a leader cut
  off from the database stops publishing before its row expires. A new leader, once it
  has the advisory lock (PostgreSQL drops it the moment the old one's socket closes),
  waits until the old row's ``expires_at`` by the database's clock has passed, then
  starts a new term. So failover takes at most ``lease`` plus one pass interval.

Both record who leads in the ``leader`` row and every term in ``leader_terms``, so
``status`` and the metrics read them the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from .errors import LockHeldError, ReconcilerError, StateError
from .hostconfig import HostConfig
from .locking import exclusive_lock
from .nodes import is_dead_here, this_process
from .state import StateDB
from .state.leases import LeaderRecord, begin_term, current, end_term, renew
from .vocabulary import Dialect

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

#: The advisory lock key of the leader lease ("reconcil" in ASCII): one per database.
LEASE_KEY = 0x7265636F6E63696C


class Lease(Protocol):
    """What the loop needs of a lease, whatever holds it."""

    holder: str

    def lead(self, state: StateDB) -> AbstractContextManager[bool]:
        """A context manager for one pass, giving True when this process leads for it
        (and holds the apply lock meanwhile), False when it follows."""

    def valid(self) -> bool:
        """May this process publish now? Checked before each action (the fence)."""

    def close(self) -> None:
        """Give the lease up (a clean exit): the next leader need not wait for it."""


def lease_for(host: HostConfig, stop: threading.Event) -> Lease:
    """The lease of the host config's state (``stop`` cuts a wait for an old lease short)."""
    if host.state.dialect is Dialect.POSTGRESQL:
        return PgLease(host, stop)
    return FileLease(host)


def margin(lease: float) -> float:
    """Seconds before the lease's end at which its holder stops publishing: slack for
    the clocks' rates and for the step that began just before."""
    return lease / 5


class FileLease:
    """The SQLite lease: the apply lock, taken for each pass (``reconciler apply`` and
    ``adopt`` on the same host still run between passes). The leader's row lasts one
    lease plus one interval past each of its passes: the other processes leave the lock
    to it meanwhile, so the same process keeps leading, and take it once the row has
    expired (its holder stopped) or its holder is dead (the pid is gone: one host)."""

    def __init__(self, host: HostConfig) -> None:
        self.host = host
        self.holder = this_process(host)
        self.span = float(host.state.lease) + 1.1 * host.interval  # the jitter's top
        self._held: LeaderRecord | None = None
        self._leading = False

    @contextmanager
    def lead(self, state: StateDB) -> Iterator[bool]:
        other = state.leases.current()
        # one host shares the file: a holder killed here (kill -9) is known dead at once
        if (
            other is not None
            and other.holder != self.holder
            and other.live(state.clock())
            and not is_dead_here(self.host, other.holder)
        ):
            log.info("following %s (term %d)", other.holder, other.term,
                     extra={"event": "leader.follow", "holder": other.holder})  # fmt: skip
            yield False
            return
        with ExitStack() as held_lock:
            try:
                lock = exclusive_lock(self.host.layout.apply_lock, "an apply or run")
                held_lock.enter_context(lock)
            except LockHeldError as exc:
                log.info("following: %s", exc, extra={"event": "leader.follow"})
                yield False
                return
            held = state.leases.hold(self.holder, self.span)
            if self._held is None or self._held.term != held.term:
                log.info("leading: term %d", held.term,
                         extra={"event": "leader.elected", "term": held.term})  # fmt: skip
            self._held, self._leading = held, True
            try:
                yield True
            finally:
                self._leading = False
                try:  # the next pass's lease: from the end of this one
                    state.leases.hold(self.holder, self.span)
                except ReconcilerError as exc:
                    log.warning("cannot renew the leader lease: %s", exc)

    def valid(self) -> bool:
        return self._leading

    def close(self) -> None:
        """Give the row up, so that another ``run`` leads at its next pass."""
        held, self._held = self._held, None
        if held is None or not self.host.layout.database.exists():
            return
        try:
            with StateDB.open(self.host.state_dir, create=False) as state:
                state.leases.give_up(held)
        except ReconcilerError as exc:
            log.warning("cannot give the leader lease up: %s", exc)


class PgLease:
    """The PostgreSQL lease (see the module's docstring). Not shared between threads,
    apart from its own heartbeat thread."""

    def __init__(self, host: HostConfig, stop: threading.Event) -> None:
        self.host = host
        self.holder = this_process(host)
        self.lease = float(host.state.lease)
        self._stop = stop
        self._conn: psycopg.Connection[Any] | None = None
        self._held: LeaderRecord | None = None
        #: monotonic time when the last renewal that succeeded was sent
        self._sent: float | None = None
        self._lock = threading.Lock()  # the connection: the heartbeat and the main thread
        self._quit = threading.Event()
        self._beat: threading.Thread | None = None

    # -- the connection --

    def _error(self, what: str, exc: BaseException) -> StateError:
        return StateError(f"state database {self.host.state.url}: {what}: {exc}")

    def _connect(self) -> psycopg.Connection[Any]:
        from .state.postgres import pg_connect  # psycopg: only where PostgreSQL is used

        return pg_connect(self.host.state, f"{self.holder} lease")

    def _execute(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        from .state.pgsql import translate

        assert self._conn is not None
        return self._conn.execute(translate(sql), tuple(params))

    def _clock(self) -> float:
        row = self._execute("SELECT extract(epoch from clock_timestamp())", ()).fetchone()
        assert row is not None
        return float(row[0])

    # -- taking, keeping and losing the lease --

    def _acquire(self) -> bool:
        """Take the advisory lock, wait out the previous holder's lease, begin a term."""
        import psycopg

        self._conn = self._connect()
        try:
            got = self._execute("SELECT pg_try_advisory_lock(?)", (LEASE_KEY,)).fetchone()
            if got is None or not got[0]:
                self._disconnect()
                return False
            while (old := current(self._execute)) is not None and old.live(now := self._clock()):
                log.info("waiting %.1fs for the lease of %s (term %d) to end",
                         old.expires_at - now, old.holder, old.term,
                         extra={"event": "leader.waiting", "holder": old.holder})  # fmt: skip
                if self._stop.wait(min(old.expires_at - now, self.lease) + 0.05):
                    self._disconnect()
                    return False
            sent = time.monotonic()
            with self._lock, self._conn.transaction():
                self._held = begin_term(self._execute, self.holder, self._clock(), self.lease)
        except psycopg.Error as exc:
            self._disconnect()
            raise self._error("cannot take the leader lease", exc) from None
        self._sent = sent
        self._quit.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        self._beat.start()
        log.info("leading: term %d", self._held.term,
                 extra={"event": "leader.elected", "term": self._held.term})  # fmt: skip
        return True

    def _heartbeat(self) -> None:
        import psycopg

        held = self._held
        assert held is not None
        while not self._quit.wait(self.lease / 3):
            sent = time.monotonic()
            try:
                with self._lock:
                    ok = renew(self._execute, held.term, self.holder, self._clock(), self.lease)
            except psycopg.Error as exc:
                log.warning("cannot renew the leader lease: %s", exc,
                            extra={"event": "leader.renew_failed"})  # fmt: skip
                return
            if not ok:
                log.error("the leader lease of term %d was taken", held.term,
                          extra={"event": "leader.renew_failed"})  # fmt: skip
                return
            self._sent = sent

    def valid(self) -> bool:
        sent = self._sent
        return sent is not None and time.monotonic() < sent + self.lease - margin(self.lease)

    def _disconnect(self) -> None:
        """Stop the heartbeat and close the connection (the server drops the lock)."""
        self._quit.set()
        if self._beat is not None:
            self._beat.join(timeout=self.host.state.statement_timeout + 1)
            self._beat = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._sent = None

    @contextmanager
    def lead(self, state: StateDB) -> Iterator[bool]:
        if self._held is not None and not self.valid():
            log.error("lost the leader lease (term %d): not publishing", self._held.term,
                      extra={"event": "leader.lost", "term": self._held.term})  # fmt: skip
            self._held = None
            self._disconnect()
            yield False  # taken again (on a new connection) on a later pass
            return
        if self._held is None and not self._acquire():
            yield False
            return
        self.host.state_dir.mkdir(parents=True, exist_ok=True)  # holds the apply lock
        with exclusive_lock(self.host.layout.apply_lock, "an apply or run"):
            yield True

    def close(self) -> None:
        import psycopg

        held, conn = self._held, self._conn
        self._quit.set()
        if held is not None and conn is not None and self.valid():
            try:
                with self._lock:
                    end_term(self._execute, held.term, self.holder, self._clock())
            except psycopg.Error as exc:
                log.warning("cannot give the leader lease up: %s", exc)
        self._held = None
        self._disconnect()
