"""One reconcile run: recover → observe → plan → execute (DESIGN.md, "How a reconcile flows").

`apply` and the daemon share it. `apply` asks its question between the plan and its execution,
so the run comes in two halves: `prepare` (finish what a killed run left, ask the cloud what
became of the records, plan) and `execute`; `reconcile_once` is both, for callers that do not
ask. Each run gets a fresh Applier (its abort flag and slots are the run's own); what lives
longer — the provider clients and their token buckets, the writer lock or leader lease — is the
caller's, handed in once.

The caller holds the writer lock (or the leader lease) for the whole run: it is verified before
every provider call and every journal write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.collector import collection_paused
from reconciler.core.model import DesiredSession, LiveSession, SessionRecord, StateMeta
from reconciler.core.normalize import SensitivePaths
from reconciler.core.plan import ActionKind, Guards, Plan, PlanMemo, make_plan
from reconciler.core.selection import EVERY_SESSION, Selection
from reconciler.core.settled import ManifestFile, settled_files
from reconciler.engine.applier import Applier
from reconciler.engine.calls import OnCall, ignore_calls
from reconciler.engine.record_cache import CachingStore
from reconciler.engine.results import ApplyReport, Outcome, SessionResult
from reconciler.providers.base import ProviderSpec, SessionProvider
from reconciler.refresh import Refresher
from reconciler.retrying import RetryPolicy, TokenBucket
from reconciler.state.base import LockHandle, StateStore


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What one run is asked to do, besides the desired set."""

    guards: Guards = field(default_factory=Guards)
    selection: Selection = EVERY_SESSION
    given_paths: Sequence[str] = ()
    refresh: bool = True  # ask the observing providers about every record first
    # With refresh: ask only about these sessions' records (a callback named them), and list
    # nothing; None asks about every record.
    observe_only: frozenset[str] | None = None
    adopt_running: bool = False


@dataclass(slots=True)
class Prepared:
    """A run up to its plan: what recovery finished, and the plan for the rest."""

    plan: Plan
    recovered: ApplyReport
    applier: Applier


@dataclass(slots=True)
class RunResult:
    plan: Plan
    recovered: ApplyReport
    report: ApplyReport

    @property
    def results(self) -> list[SessionResult]:
        return self.recovered.results + self.report.results

    @property
    def aborted(self) -> str | None:
        return self.report.aborted or self.recovered.aborted


@dataclass
class Engine:
    store: StateStore
    lock: LockHandle
    providers: Mapping[str, SessionProvider]
    registry: Mapping[str, ProviderSpec]
    sensitive: Mapping[str, SensitivePaths]
    now: Callable[[], str]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    buckets: Mapping[str, TokenBucket] = field(default_factory=dict)
    parallelism: int = 16
    on_result: Callable[[SessionResult], None] = lambda result: None
    on_recovering: Callable[[int], None] = lambda pending: None  # before recovery starts
    on_call: OnCall = ignore_calls  # every provider request (metrics, logs)
    # What a long-lived engine (the daemon's) remembers between runs: the records (see
    # record_cache.py) and the last plan with its inputs (see _plan).
    # (the desired set, the other inputs, the plan made from them)
    _planned: tuple[Sequence[DesiredSession], tuple[Any, ...], Plan] | None = field(
        default=None, init=False
    )
    _memo: PlanMemo = field(default_factory=PlanMemo, init=False)
    _texts_for: tuple[bytes, dict[str, str]] | None = field(default=None, init=False)

    def applier(self, secrets: Mapping[str, str], options: RunOptions) -> Applier:
        return Applier(
            store=self.store,
            lock=self.lock,
            providers=self.providers,
            registry=self.registry,
            secrets=secrets,
            sensitive=self.sensitive,
            now=self.now,
            policy=self.policy,
            buckets=self.buckets,
            parallelism=self.parallelism,
            adopt_running=options.adopt_running,
            on_result=self.on_result,
            on_call=self.on_call,
        )

    def refresher(self) -> Refresher:
        return Refresher(
            providers=self.providers,
            registry=self.registry,
            now=self.now,
            policy=self.policy,
            buckets=self.buckets,
            parallelism=self.parallelism,
            before_call=self.lock.verify,
            on_call=self.on_call,
        )

    async def prepare(
        self,
        desired: Sequence[DesiredSession],
        secrets: Mapping[str, str],
        options: RunOptions = RunOptions(),
    ) -> Prepared:
        applier = self.applier(secrets, options)
        recovered = ApplyReport()
        pending = await asyncio.to_thread(self.store.pending_intents)
        if pending:
            self.on_recovering(len(pending))
            recovered = await applier.recover(desired)
        records = await self._records()
        live: list[LiveSession] = []
        if options.refresh:
            still_pending = await asyncio.to_thread(self.store.pending_intents)
            subject, listed_for = records, desired
            if options.observe_only is not None:
                subject = [r for r in records if r.name in options.observe_only]
                listed_for = ()
            refreshed = await self.refresher().refresh(subject, listed_for, still_pending)
            await asyncio.to_thread(_keep_observations, applier.store, subject, refreshed.records)
            fresh = {record.name: record for record in refreshed.records}
            records = [fresh.get(record.name, record) for record in records]
            live = refreshed.live
        meta = await asyncio.to_thread(self.store.meta)
        plan = self._plan(desired, records, meta, secrets, options, live)
        return Prepared(plan, recovered, applier)

    def __post_init__(self) -> None:
        # Every write of this engine's runs goes through it (the applier wraps it in turn).
        self.cache = CachingStore(self.store)
        self.store = self.cache

    async def _records(self) -> list[SessionRecord]:
        return await asyncio.to_thread(self.cache.cached_records)

    def _plan(
        self,
        desired: Sequence[DesiredSession],
        records: Sequence[SessionRecord],
        meta: StateMeta,
        secrets: Mapping[str, str],
        options: RunOptions,
        live: Sequence[LiveSession],
    ) -> Plan:
        """make_plan, remembered: the same inputs as the last run (the same desired set, an
        unmoved serial, the same secrets, options and live sessions) make the same plan, so a
        no-change daemon pass does not plan 10,000 sessions again. Otherwise make_plan's memo
        (PlanMemo: each unchanged session's redacted spec and its comparison with an unchanged
        record) is used, for as long as the key and secrets stay the same."""
        inputs = (meta.lineage, meta.serial, dict(secrets), options, tuple(live))
        planned = self._planned
        if planned is not None and planned[0] is desired and planned[1] == inputs:
            return replace(planned[2], created_at=self.now())
        texts_for = (meta.fingerprint_key, dict(secrets))
        if self._texts_for != texts_for:
            self._memo.clear()
            self._texts_for = texts_for
        with collection_paused():
            plan = make_plan(
                desired,
                records,
                meta,
                self.sensitive,
                secrets,
                options.guards,
                created_at=self.now(),
                selection=options.selection,
                given_paths=options.given_paths,
                rules={name: spec.rules for name, spec in self.registry.items()},
                live=live,
                memo=self._memo,
            )
        self._planned = (desired, inputs, plan)
        return plan

    async def execute(self, prepared: Prepared) -> RunResult:
        """The plan's calls; nothing when a guard refused the plan or nothing changes."""
        report = ApplyReport()
        if prepared.plan.changes and not prepared.plan.violations:
            report = await prepared.applier.execute(prepared.plan)
            self._remember_started(prepared.plan, report)
        return RunResult(prepared.plan, prepared.recovered, report)

    def _remember_started(self, plan: Plan, report: ApplyReport) -> None:
        """A session this run started is recorded with its redacted spec text and
        fingerprint: exactly what the memo would compute for it next time (same key, same
        secrets), so the first plan after a pass of 10,000 starts does not redact them all
        again. Only plain successful starts: a failed restart may leave the old record."""
        started = {
            result.name
            for result in report.results
            if result.outcome is Outcome.OK
            and result.remark is None
            and result.kind in (ActionKind.CREATE.value, ActionKind.REPLACE.value)
        }
        for action in plan.changes:
            session = action.desired
            if session is None or action.name not in started:
                continue
            record = self.cache.known(action.name)
            if record is not None:
                self._memo.texts[id(session)] = (session, record.spec_json)

    async def record_settled(
        self,
        desired: Sequence[DesiredSession],
        files: Sequence[ManifestFile],
        secrets: Mapping[str, str],
        options: RunOptions,
        code: str,
    ) -> None:
        """After a run that left nothing failed: plan every declared session once more, against
        the records as the run left them, and keep the files all of whose sessions that plan
        leaves alone (core/settled.py), so that the next `plan` need not read them. Nothing
        under a selection (its plan does not cover every file)."""
        if options.selection.limited:
            return
        records = await self._records()
        meta = await asyncio.to_thread(self.store.meta)
        plan = self._plan(desired, records, meta, secrets, options, ())
        found = settled_files(
            (action.name for action in plan.actions if action.kind is ActionKind.NOOP),
            files,
            desired,
            serial=meta.serial,
            code=code,
            secrets=secrets,
            key=meta.fingerprint_key,
        )
        self.lock.verify()
        await asyncio.to_thread(self.store.record_settled, found, meta.serial)

    async def reconcile_once(
        self,
        desired: Sequence[DesiredSession],
        secrets: Mapping[str, str],
        options: RunOptions = RunOptions(),
    ) -> RunResult:
        return await self.execute(await self.prepare(desired, secrets, options))


def _keep_observations(
    store: StateStore, before: Sequence[SessionRecord], after: Sequence[SessionRecord]
) -> None:
    """What the cloud said is kept: `state list` shows it, and a plan made with
    --refresh=false still knows which sessions ended by themselves."""
    previous = {record.name: record for record in before}
    for record in after:
        if previous.get(record.name) != record:
            store.put_record(record)
