"""`reconciler watch`: the daemon's loop — lead (or stand by), and reconcile on every trigger.

    triggers (files, SIGHUP, resync timer, callbacks, due retries)
        └─> TriggerQueue (coalesced, debounced) ─> one pass at a time:
              read the files (incremental) ─ invalid? nothing at all is done; the last good
              set stays the truth, the problems are logged once and shown at /status
              ─> mark the tasks a callback says ended ─> Engine.prepare (recover, observe,
              plan) ─> leave out the sessions backing off ─> Engine.execute
              ─> backoff, heals, metrics, status

Level-triggered: every pass reads the whole desired set and every record; a trigger only says
"look again", and what it names (a callback's session) is only where to look first. Resync
passes (and the first pass, and SIGHUP) observe every record of the providers that can be
asked (Aliyun Describe, within the rate limit); a file change does not wait for that.

Leadership: with PostgreSQL state any number of replicas run and one leads (LeaderLease);
the others serve /healthz, /readyz and /metrics (reconciler_leader 0) and try again every
third of the lease. With SQLite exactly one daemon runs: the state's file lock is held for the
daemon's life, and a second one is refused with the holder named.

Shutdown: the first SIGTERM/SIGINT stops taking triggers and lets the pass in flight finish its
calls in flight (it begins no new one) for up to --grace seconds, then cancels it; intents are
written before calls, so the journal is consistent either way and the next run finishes what
is pending. Exit 0. A second signal exits at once (130).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from reconciler.core.model import DesiredSession, SessionRecord
from reconciler.core.plan import UNCHANGING, Guards, Plan
from reconciler.core.timestamps import utc_timestamp
from reconciler.daemon.backoff import SessionBackoff
from reconciler.daemon.heal import ended_by_callback, heals
from reconciler.daemon.http import Endpoints, HttpServer, trigger_on_end
from reconciler.daemon.metrics import DaemonMetrics, HealSource, ReconcileResult
from reconciler.daemon.snapshot import DesiredReader
from reconciler.daemon.status import SessionStatus, session_counts, session_statuses
from reconciler.daemon.triggers import Batch, Source, Trigger, TriggerQueue
from reconciler.daemon.watcher import watch_files
from reconciler.engine.calls import CallEvent
from reconciler.engine.reconcile import Engine, Prepared, RunOptions
from reconciler.engine.results import Outcome, SessionResult
from reconciler.errors import LockHeld, LockLost, ReconcilerError, SecretError, StateError
from reconciler.state.base import LockHandle, StateStore
from reconciler.state.fenced import FencedStore

if TYPE_CHECKING:  # lease.py imports psycopg, which only PostgreSQL state needs
    from reconciler.daemon.lease import LeaderLease

FORCED_EXIT = 130
LOSS_CHECK_SECONDS = 0.25
WATCH_READY_SECONDS = 5.0
_log = structlog.get_logger("reconciler.daemon")


@dataclass(frozen=True, slots=True)
class WatchConfig:
    paths: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 9430
    resync: float = 60.0  # seconds between full passes that observe every record
    lease: float = 15.0
    grace: float = 20.0
    guards: Guards = field(default_factory=Guards)
    given_paths: tuple[str, ...] = ()
    probe: bool = False
    probe_timeout: float = 10.0
    # The queue's quiet period: watchfiles already groups a save's events (10 ms apart).
    debounce: float = 0.02
    volcengine_callback_secret: str | None = None
    aliyun_callback_token: str | None = None


class Leadership(Protocol):
    """Who may write: the SQLite file lock (one daemon) or the PostgreSQL leader lease."""

    @property
    def handle(self) -> LockHandle: ...

    def try_acquire(self) -> bool:
        """True when this daemon now leads; False when another does (standby). Raises
        LockHeld where standing by is not possible (SQLite)."""
        ...

    def release(self) -> None: ...

    def lost(self) -> bool:
        """Whether the lead was lost while held (the lease's heartbeat found out)."""
        ...

    def holder(self) -> str | None:
        """Who leads, as last seen, for logs and /status."""
        ...


class SoleWriter:
    """SQLite: the state's file lock, held for the daemon's life. A second daemon (or an
    apply) meets LockHeld, which names the holder."""

    def __init__(self, store: StateStore, command: str) -> None:
        self._store = store
        self._command = command
        self._context: AbstractContextManager[LockHandle] | None = None
        self._handle: LockHandle | None = None

    @property
    def handle(self) -> LockHandle:
        if self._handle is None:
            raise LockLost("this daemon does not hold the state's lock")
        return self._handle

    def try_acquire(self) -> bool:
        if self._handle is None:
            context = self._store.lock(self._command)
            self._handle = context.__enter__()
            self._context = context
        return True

    def release(self) -> None:
        context, self._context, self._handle = self._context, None, None
        if context is not None:
            with contextlib.suppress(StateError):
                context.__exit__(None, None, None)

    def lost(self) -> bool:
        return False  # an flock is not taken away; verify() sees a replaced lock file

    def holder(self) -> str | None:
        return None


class LeaseLeadership:
    """PostgreSQL: the leader lease (daemon/lease.py)."""

    def __init__(self, lease: LeaderLease) -> None:
        self._lease = lease

    @property
    def handle(self) -> LockHandle:
        return self._lease

    def try_acquire(self) -> bool:
        return self._lease.try_acquire()

    def release(self) -> None:
        self._lease.release()

    def lost(self) -> bool:
        return self._lease.lost is not None

    def holder(self) -> str | None:
        holder = self._lease.holder
        return None if holder is None else holder.describe()


# (the lock to verify, on_result, on_call) → the engine every pass of one leadership uses.
EngineFactory = Callable[
    [LockHandle, Callable[[SessionResult], None], Callable[[CallEvent], None]], Engine
]


@dataclass
class _LastPass:
    result: ReconcileResult
    finished_at: str
    seconds: float
    triggers: dict[str, int]
    results: int


class Daemon:
    def __init__(
        self,
        config: WatchConfig,
        leadership: Leadership,
        make_engine: EngineFactory,
        *,
        secrets_for: Callable[[Sequence[DesiredSession]], dict[str, str]],
        on_secrets: Callable[[Sequence[str]], None] = lambda values: None,
        probe: Callable[[Plan, Mapping[str, str], float], Any] | None = None,
        now: Callable[[], str] = lambda: utc_timestamp(time.time()),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.leadership = leadership
        self.make_engine = make_engine
        self.secrets_for = secrets_for
        self.on_secrets = on_secrets
        self.probe = probe
        self.now = now
        self.clock = clock
        self.queue = TriggerQueue(debounce=config.debounce)
        self.reader = DesiredReader(config.paths)
        self.metrics = DaemonMetrics()
        self.backoff = SessionBackoff()
        self.leading = False
        self._stopping = asyncio.Event()
        self._watch_ready = asyncio.Event()
        self._pass_task: asyncio.Task[bool] | None = None
        self._prepared: Prepared | None = None
        self._problems: tuple[str, ...] = ()
        self._refusal: tuple[str, ...] = ()
        self._last: _LastPass | None = None
        self._records: list[SessionRecord] = []
        # The desired set and record listing the session counts were last made from.
        self._counted_for: tuple[Sequence[DesiredSession], list[SessionRecord]] | None = None
        self._standby_error: str | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._alive = True

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        server = HttpServer(self._endpoints(), self.config.host, self.config.port)
        await server.start()
        _log.info("listening", host=self.config.host, port=server.port)
        background = [
            asyncio.create_task(
                watch_files(self.config.paths, self.queue, self._stopping, ready=self._watch_ready)
            ),
            asyncio.create_task(self._resync_timer()),
        ]
        try:
            # The watch must be in place before the first pass reads the files: a save in
            # between would otherwise wait for the resync.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watch_ready.wait(), WATCH_READY_SECONDS)
            _log.info("watching", paths=list(self.config.paths))
            await self._lead_or_stand_by()
        finally:
            self._alive = False
            self._stopping.set()
            self.queue.close()
            if self._retry_timer is not None:
                self._retry_timer.cancel()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._step_down()
            await server.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            _log.info("stopped")
        return 0

    async def _lead_or_stand_by(self) -> None:
        announced_standby = False
        while not self._stopping.is_set():
            try:
                leading = await asyncio.to_thread(self.leadership.try_acquire)
            except LockHeld:
                raise  # SQLite: one daemon only; the message names the holder
            except LockLost as lost:
                self._standby_error = str(lost)
                leading = False
            except StateError as error:
                unreachable = f"the state is unreachable: {error}"
                if unreachable != self._standby_error:
                    _log.warning("state unreachable", error=str(error))
                self._standby_error = unreachable
                leading = False
            if not leading:
                self.metrics.set_leader(False)
                if not announced_standby and self._standby_error is None:
                    _log.info("standing by", leader=self.leadership.holder())
                    announced_standby = True
                await self._sleep_unless_stopping(max(0.2, self.config.lease / 3))
                continue
            self._standby_error = None
            announced_standby = False
            self.leading = True
            self.metrics.set_leader(True)
            _log.info("leading")
            try:
                await self._serve_as_leader()
            finally:
                self.leading = False
                self.metrics.set_leader(False)
                self._step_down()

    async def _serve_as_leader(self) -> None:
        engine = self.make_engine(self.leadership.handle, self._on_result, self._on_call)
        self.queue.post(Trigger(Source.START))
        watchdog = asyncio.create_task(self._notice_loss())
        try:
            await self._passes(engine)
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _notice_loss(self) -> None:
        """Between passes, a lease the heartbeat found lost wakes the loop to stand by (a
        frozen leader, thawed, must not keep reporting itself as leader)."""
        while not self.leadership.lost():
            await asyncio.sleep(LOSS_CHECK_SECONDS)
        self.queue.post(Trigger(Source.START))

    async def _passes(self, engine: Engine) -> None:
        while True:
            batch = await self.queue.next_batch()
            if batch is None:
                return  # shutting down
            if self.leadership.lost():
                _log.error("lost the leadership: standing by", error="the lease was lost")
                return
            self._pass_task = asyncio.create_task(self._pass(engine, batch))
            try:
                lost = await self._pass_task
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    _log.warning("grace period over: the pass in flight was cancelled")
                    return
                raise
            finally:
                self._pass_task = None
                self._prepared = None
            if lost:
                return

    def _step_down(self) -> None:
        with contextlib.suppress(ReconcilerError):
            self.leadership.release()

    async def _resync_timer(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync)
            self.queue.post(Trigger(Source.RESYNC))

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- one pass -------------------------------------------------------------------------

    async def _pass(self, engine: Engine, batch: Batch) -> bool:
        """One reconcile; True when the lease was lost during it."""
        began = self.clock()
        lost = False
        try:
            # Still leading? A replica thawed after a freeze must find out before it reads
            # anything, not at its first call.
            await asyncio.to_thread(engine.lock.verify)
            result, count = await self._reconcile(engine, batch)
        except LockLost as error:
            _log.error("lost the leadership: standing by", error=str(error))
            result, count, lost = ReconcileResult.FAILED, 0, True
        except (ReconcilerError, OSError) as error:
            _log.error("pass failed", error=str(error))
            result, count = ReconcileResult.FAILED, 0
        seconds = self.clock() - began
        self.metrics.reconcile_finished(result, seconds, time.time())
        self._last = _LastPass(
            result,
            self.now(),
            seconds,
            {trigger.source.value: n for trigger, n in batch.counts.items()},
            count,
        )
        _log.info(
            "pass",
            result=result.value,
            seconds=round(seconds, 4),
            triggers=sorted(s.value for s in batch.sources),
            actions=count,
        )
        self._schedule_retry()
        # What survived the pass (the snapshot, the records, the plan memo: millions of
        # objects at 10,000 sessions) is long-lived: taken out of the cyclic collector's
        # generations, so that a full collection does not walk it all again mid-pass (a
        # 100 ms stall before a new session's Start). Refcounting still frees it. (A full
        # collection every 100 passes, tried, freed nothing measurable and cost 6 ms a pass.)
        gc.freeze()
        return lost

    async def _reconcile(self, engine: Engine, batch: Batch) -> tuple[ReconcileResult, int]:
        read = await asyncio.to_thread(self.reader.read)
        self.metrics.set_desired_valid(read.valid)
        if not read.valid or read.snapshot is None:
            self._report_problems(tuple(str(p) for p in read.problems))
            return ReconcileResult.INVALID, 0
        desired = read.snapshot.sessions
        try:
            secrets = self.secrets_for(desired)
        except SecretError as error:
            self.metrics.set_desired_valid(False)
            self._report_problems(tuple(str(error).splitlines()))
            return ReconcileResult.INVALID, 0
        self._report_problems(())
        self.on_secrets(list(secrets.values()))
        from_callbacks = set(batch.sessions)
        from_callbacks |= await self._mark_callback_ends(engine, batch)
        full = bool(batch.sources & {Source.START, Source.RESYNC, Source.SIGHUP})
        options = RunOptions(
            guards=self.config.guards,
            given_paths=self.config.given_paths,
            refresh=full or bool(batch.sessions),
            observe_only=None if full else frozenset(batch.sessions),
        )
        prepared = await engine.prepare(desired, secrets, options)
        self._prepared = prepared
        plan = prepared.plan
        results = list(prepared.recovered.results)
        if plan.violations:
            self._report_refusal(plan.violations)
            await self._after(engine, desired, results)
            return ReconcileResult.REFUSED, len(results)
        self._report_refusal(())
        plan = _without(plan, self.backoff.waiting(self.clock()))
        refused: list[SessionResult] = []
        if self.probe is not None and plan.changes:
            plan, refused = await self.probe(plan, secrets, self.config.probe_timeout)
            for result in refused:
                self._on_result(result)
        if self._stopping.is_set():
            return ReconcileResult.FAILED, len(results)
        executed = await engine.execute(replace(prepared, plan=plan))
        results += executed.report.results + refused
        for provider, name in heals(plan, executed.report.results):
            source = HealSource.CALLBACK if name in from_callbacks else HealSource.OBSERVE
            self.metrics.drift_healed(provider, source)
            _log.info("drift healed", session=name, provider=provider, source=source.value)
        await self._after(engine, desired, results)
        if executed.aborted:
            return ReconcileResult.FAILED, len(results)
        if any(r.outcome is not Outcome.OK for r in results):
            return ReconcileResult.PARTIAL, len(results)
        return ReconcileResult.CONVERGED, len(results)

    async def _mark_callback_ends(self, engine: Engine, batch: Batch) -> set[str]:
        """Records a task-stop callback shows ended by themselves, marked so (heal.py)."""
        ends = batch.task_ends
        if not ends:
            return set()
        # Through the engine's store: its cached records must see the change.
        records = await asyncio.to_thread(engine.cache.cached_records)
        pending = await asyncio.to_thread(engine.store.pending_intents)
        marked = ended_by_callback(records, ends, [e.name for e in pending], self.now())
        fenced = FencedStore(engine.store, engine.lock)
        for record in marked:
            await asyncio.to_thread(fenced.put_record, record)
            _log.info("ended by itself (callback)", session=record.name, provider=record.provider)
        return {record.name for record in marked}

    async def _after(
        self,
        engine: Engine,
        desired: Sequence[DesiredSession],
        results: Sequence[SessionResult],
    ) -> None:
        """Backoff and session counts after a pass."""
        now = self.clock()
        for result in results:
            if result.outcome is Outcome.FAILED:
                self.backoff.failed(result.name, now, result.detail)
            elif result.outcome is Outcome.OK:
                self.backoff.succeeded(result.name)
        records = await asyncio.to_thread(engine.cache.cached_records)
        # A pass that changed nothing (the same desired set, the very same record listing,
        # nobody backing off) leaves the counts as they were: 10,000 statuses are not free.
        counted = self._counted_for
        if (
            counted is not None
            and counted[0] is desired
            and counted[1] is records
            and not results
            and not self.backoff.any()
        ):
            return
        self._records = records
        if self.backoff.any():
            self.backoff.forget_except({s.name for s in desired} | {r.name for r in records})
        self.metrics.set_sessions(session_counts(self._statuses(desired)))
        self._counted_for = (desired, records)

    def _schedule_retry(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        due = self.backoff.next_due(self.clock())
        if due is not None and not self._stopping.is_set():
            loop = asyncio.get_running_loop()
            self._retry_timer = loop.call_later(due + 0.01, self.queue.post, Trigger(Source.RETRY))

    # -- reporting ------------------------------------------------------------------------

    def _report_problems(self, problems: tuple[str, ...]) -> None:
        """Log the desired set's problems once (not on every pass), and when they are fixed."""
        if problems == self._problems:
            return
        if problems:
            _log.error(
                "the desired set is invalid: nothing is done until it is fixed",
                problems=list(problems),
            )
        else:
            _log.info("the desired set is valid again")
        self._problems = problems

    def _report_refusal(self, violations: tuple[str, ...]) -> None:
        if violations == self._refusal:
            return
        if violations:
            _log.error("a guard refused the plan: nothing is done", violations=list(violations))
        self._refusal = violations

    def _on_result(self, result: SessionResult) -> None:
        level = _log.info if result.outcome is Outcome.OK else _log.warning
        level(
            "action",
            session=result.name,
            provider=result.provider,
            action=result.kind,
            outcome=result.outcome.value,
            detail=result.detail,
            attempts=result.requests,
            seconds=round(result.seconds, 4),
        )

    def _on_call(self, event: CallEvent) -> None:
        self.metrics.provider_request(event.provider, event.action, event.outcome)
        if event.outcome != "ok":
            _log.warning(
                "request failed",
                session=event.session,
                provider=event.provider,
                action=event.action,
                outcome=event.outcome,
                attempt=event.attempt,
                seconds=round(event.seconds, 4),
                error=event.error,
            )

    def _statuses(self, desired: Sequence[DesiredSession]) -> list[SessionStatus]:
        now, wall = self.clock(), time.time()
        retries = {}
        for name in self.backoff.waiting(now):
            retry = self.backoff.get(name)
            if retry is not None:
                retries[name] = (retry, utc_timestamp(wall + retry.not_before - now))
        return session_statuses(desired, self._records, retries)

    def status(self) -> dict[str, Any]:
        snapshot = self.reader.last_good
        desired = snapshot.sessions if snapshot is not None else ()
        last = self._last
        return {
            "leader": self.leading,
            "leader_elsewhere": None if self.leading else self.leadership.holder(),
            "desired_valid": not self._problems,
            "problems": list(self._problems),
            "refused": list(self._refusal),
            "last_pass": None
            if last is None
            else {
                "result": last.result.value,
                "finished_at": last.finished_at,
                "seconds": round(last.seconds, 4),
                "triggers": last.triggers,
                "actions": last.results,
            },
            "sessions": [asdict(s) for s in self._statuses(desired)],
        }

    def _ready(self) -> tuple[bool, str]:
        if self._stopping.is_set():
            return False, "shutting down"
        if not self.leading:
            if self._standby_error is not None:
                return False, self._standby_error
            return True, ""
        if self._last is None:
            return False, "the first reconcile has not finished"
        if self._last.result is ReconcileResult.FAILED:
            return False, "the last reconcile failed"
        return True, ""

    def _endpoints(self) -> Endpoints:
        return Endpoints(
            metrics=self.metrics,
            status=self.status,
            alive=lambda: self._alive,
            ready=self._ready,
            on_hint=trigger_on_end(self.queue),
            volcengine_secret=self.config.volcengine_callback_secret,
            aliyun_token=self.config.aliyun_callback_token,
            accepting=lambda: self.leading and not self._stopping.is_set(),
        )

    # -- signals --------------------------------------------------------------------------

    def _on_sighup(self) -> None:
        _log.info("SIGHUP: reconciling now")
        self.queue.post(Trigger(Source.SIGHUP))

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            _log.warning("second signal: exiting at once", signal=name)
            os._exit(FORCED_EXIT)
        _log.info("shutting down", signal=name, grace=self.config.grace)
        self._stopping.set()
        self.queue.close()
        if self._prepared is not None:
            self._prepared.applier.stop_starting("the daemon is shutting down")
        task = self._pass_task
        if task is not None:
            asyncio.get_running_loop().call_later(self.config.grace, task.cancel)


def _without(plan: Plan, waiting: frozenset[str]) -> Plan:
    """The plan without the changes of sessions still backing off."""
    if not waiting:
        return plan
    actions = tuple(a for a in plan.actions if a.kind in UNCHANGING or a.name not in waiting)
    return replace(plan, actions=actions)
