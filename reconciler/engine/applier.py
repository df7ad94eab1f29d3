"""Runs a plan against the providers and keeps the journal.

Crash safety: before each provider call an intent is written to the journal; after the answer,
the outcome and its effect on the records are written in one transaction. A process killed at
any instant leaves at most one intent per session without an outcome, and `recover` finishes
those first on the next run:
    start   re-sent when the session is still declared with the same config ("already started"
            then means our earlier Start took effect); otherwise the task is stopped
    stop    re-sent; "not found" means it is stopped
    update  an announcement whose answer was lost is recorded as delivered: announcements are
            delivered at most once; an in-place config update whose answer was lost leaves
            the record as it was, so the plan sends it again (an update merges: repeating
            it is harmless)
A record is removed only once its Stop is confirmed. A Start whose retries ran out after an
attempt that may have taken effect (a late 504, a lost answer) is left pending the same way, and
a session with a pending intent gets no new one until recovery has finished it.

Order: every stop (deletes and the first half of restarts) before any start, so a task moved
from one session to another never meets itself; a session's calls run one after another.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from reconciler.core.model import (
    Announcement,
    DesiredSession,
    JournalEntry,
    JournalOp,
    SessionRecord,
    StateMeta,
)
from reconciler.core.normalize import SensitivePaths, fingerprint, redact
from reconciler.core.outcome import (
    reconfigured_record,
    started_record,
    updated_record,
    with_error,
)
from reconciler.core.plan import Action, ActionKind, Plan
from reconciler.core.providers import ProviderRules
from reconciler.core.secrets import substitute
from reconciler.engine.calls import OnCall, ignore_calls, reported, session_scope, with_tally
from reconciler.engine.results import ApplyReport, Outcome, Remark, SessionResult
from reconciler.errors import (
    AuthRefused,
    Conflict,
    ErrorKind,
    NotFound,
    ProviderError,
    Terminal,
    Throttled,
    Transient,
)
from reconciler.providers.base import (
    LiveSession,
    ObservingProvider,
    Owner,
    ProviderSpec,
    Recovery,
    SessionProvider,
    SpecChange,
)
from reconciler.retrying import RetryPolicy, Sleep, TokenBucket, call_with_retries
from reconciler.state.base import LockHandle, RecordChange, StateStore
from reconciler.state.fenced import FencedStore

T = TypeVar("T")


def _not_delivered(error: BaseException) -> bool:
    """The call certainly took no effect: throttled at the gateway (before the call takes
    effect), or never sent at all (connection refused, DNS failure). Safe to retry anything,
    and nothing to be unsure of."""
    return isinstance(error, Throttled) or (isinstance(error, Transient) and not error.sent)


@dataclass
class Applier:
    store: StateStore
    providers: Mapping[str, SessionProvider]
    # What is known of each provider (rules, recovery): the registry's entries.
    registry: Mapping[str, ProviderSpec]
    secrets: Mapping[str, str]
    sensitive: Mapping[str, SensitivePaths]
    now: Callable[[], str]
    # The writer lock the caller holds. Verified before every provider call and (through
    # FencedStore) every journal and record write: once it is lost (LockLost) the apply stops
    # at once, and a call answered after the loss is not journaled; its intent stays pending
    # for the new holder to recover.
    lock: LockHandle
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    buckets: Mapping[str, TokenBucket] = field(default_factory=dict)
    parallelism: int = 16
    sleep: Sleep = asyncio.sleep
    adopt_running: bool = False
    on_result: Callable[[SessionResult], None] = lambda result: None
    on_call: OnCall = ignore_calls  # every provider request, for metrics and logs
    _abort: str | None = None
    _slots: asyncio.Semaphore | None = None
    _meta: StateMeta | None = None

    def __post_init__(self) -> None:
        self.store = FencedStore(self.store, self.lock)

    def stop_starting(self, reason: str) -> None:
        """Begin no new call (the daemon is shutting down): calls in flight finish and are
        journaled; every action not yet begun is skipped with this reason."""
        if self._abort is None:
            self._abort = reason

    # -- recovery -------------------------------------------------------------------------

    async def recover(self, desired: Sequence[DesiredSession]) -> ApplyReport:
        """Finish the intents a killed run left without an outcome."""
        by_name = {session.name: session for session in desired}
        report = ApplyReport()
        pending = await self._io(self.store.pending_intents)
        self._providers_for(entry.provider for entry in pending)
        # A session's intents are finished one after another, oldest first: never two calls
        # for one session at once.
        by_session: dict[str, list[JournalEntry]] = {}
        for entry in pending:
            by_session.setdefault(entry.name, []).append(entry)

        async def finish(entries: list[JournalEntry]) -> list[SessionResult]:
            session = by_name.get(entries[0].name)
            return [
                await self._in_slot(e.name, e.provider, partial(self._recover_one, e, session))
                for e in entries
            ]

        results = await _all(finish(entries) for entries in by_session.values())
        report.results.extend(result for results_of in results for result in results_of)
        report.aborted = self._abort
        return report

    async def _recover_one(
        self, entry: JournalEntry, session: DesiredSession | None
    ) -> SessionResult:
        payload = json.loads(entry.payload_json)
        ids: dict[str, str] = payload["provider_ids"]
        kind = f"recover {entry.op.value}"
        try:
            if entry.op is JournalOp.START:
                if self.registry[entry.provider].recovery is Recovery.RESTART_AND_LIST:
                    return self._done(await self._restart_and_list(entry, session, payload))
                if session is not None and self._same_start(session, entry, payload):
                    owner = self._owner(session.name)
                    try:
                        _, assigned = await self._start_call(
                            entry.provider, session, owner, begun=True
                        )
                    except ProviderError as error:
                        if self._refused(error):
                            # The same body refused (a bad parameter): the lost Start was
                            # refused too. Finished, so the plan handles the session again.
                            await self._io(
                                self.store.finish_intent, entry.id, f"failed: {error}", None
                            )
                        raise
                    previous = await self._io(self.store.get_record, session.name)
                    started = self._started(session, assigned, previous, owner)
                    await self._io(
                        self.store.finish_intent,
                        entry.id,
                        "started (recovered)",
                        RecordChange(put=started),
                    )
                    return self._done(SessionResult(entry.name, kind, Outcome.OK, "started"))
                # No longer wanted as it was: make sure the task we may have started is gone.
                await self._stop_call(entry.provider, ids)
                await self._io(
                    self.store.finish_intent,
                    entry.id,
                    "stopped (recovered: no longer declared so)",
                    None,
                )
                return self._done(
                    SessionResult(entry.name, kind, Outcome.OK, "abandoned start undone")
                )
            if entry.op is JournalOp.STOP:
                await self._stop_call(entry.provider, ids)
                change = await self._delete_if_same_task(entry)
                await self._io(self.store.finish_intent, entry.id, "stopped (recovered)", change)
                return self._done(SessionResult(entry.name, kind, Outcome.OK, "stopped"))
            if "change" in payload:
                # An in-place update merges the declared values: the record still holds the
                # old spec, so the plan sends the update again.
                await self._io(
                    self.store.finish_intent, entry.id, "update unconfirmed (recovered)", None
                )
                detail = "in-place update unconfirmed: left to the plan, which sends it again"
                return self._done(SessionResult(entry.name, kind, Outcome.OK, detail))
            # An announcement whose answer was lost may have been played: never play it twice.
            announcement_id = payload["announcement"]["id"]
            record = await self._io(self.store.get_record, entry.name)
            change = None
            if record is not None and record.identity == entry.identity:
                change = RecordChange(
                    put=updated_record(
                        record,
                        _as_desired(record),
                        [announcement_id],
                        self.now(),
                        f"announcement {announcement_id}: delivery unconfirmed (run was killed)",
                    )
                )
            await self._io(
                self.store.finish_intent, entry.id, "delivery unconfirmed (recovered)", change
            )
            detail = (
                f"delivery unconfirmed: announcement {announcement_id} may have played before "
                "the run that sent it was killed; recorded as delivered, never repeated"
            )
            return self._done(
                SessionResult(entry.name, kind, Outcome.OK, detail, Remark.UNCONFIRMED)
            )
        except ProviderError as error:
            return self._done(SessionResult(entry.name, kind, Outcome.FAILED, str(error)))

    async def _restart_and_list(
        self, entry: JournalEntry, session: DesiredSession | None, payload: Any
    ) -> SessionResult:
        """Settle a lost Start whose session only the cloud's id addresses: start again into
        the same channel with a new attempt (the newcomer replaces the earlier, unaddressable
        one), then list the live sessions: exactly one may carry this session's tag, and it
        must be the new attempt. A session no longer declared as it was is started bare and
        stopped again, which pushes the lost one out; then none may carry the tag."""
        kind = "recover start"
        rules = self._rules(entry.provider)
        ids: dict[str, str] = dict(payload["provider_ids"])
        keep = (
            session is not None
            and session.provider == entry.provider
            and session.identity == entry.identity
        )
        target = (
            session
            if session is not None and keep
            else DesiredSession(entry.name, entry.provider, entry.identity, rules.spec_of(ids))
        )
        owner = self._owner(entry.name)
        # The new attempt is journaled before its call, and supersedes the lost one.
        restart = await self._io(
            self.store.begin_intent,
            entry.name,
            JournalOp.START,
            entry.provider,
            entry.identity,
            json.dumps(
                {
                    "provider_ids": ids,
                    "fingerprint": self._fingerprint(target) if keep else None,
                    "attempt": owner.attempt,
                    "recovers": entry.id,
                }
            ),
        )
        await self._io(
            self.store.finish_intent,
            entry.id,
            f"superseded: started again as attempt {owner.attempt}",
            None,
        )
        try:
            _, assigned = await self._start_call(entry.provider, target, owner, begun=True)
        except _StartUnconfirmed:
            raise  # the new intent stays pending: the next apply settles it the same way
        except ProviderError as error:
            if self._refused(error):
                await self._io(self.store.finish_intent, restart, f"failed: {error}", None)
            raise
        started = {**ids, **assigned}
        if not keep:
            await self._stop_call(entry.provider, started)
        tagged = await self._tagged_live(entry.provider, ids, owner)
        stray = [s for s in tagged if s.owner is None or s.owner.attempt != owner.attempt]
        if keep:
            assert session is not None
            record = self._started(
                session, assigned, await self._io(self.store.get_record, entry.name), owner
            )
            await self._io(
                self.store.finish_intent, restart, "started (recovered)", RecordChange(put=record)
            )
            detail = "started again into its channel; the lost Start's instance was replaced"
        else:
            await self._io(
                self.store.finish_intent,
                restart,
                "stopped (recovered: no longer declared so)",
                None,
            )
            detail = "abandoned start undone (pushed out of its channel, then stopped)"
        if stray or (keep and len(tagged) != 1):
            attempts = ", ".join(sorted(s.owner.attempt for s in stray if s.owner)) or "none"
            detail += (
                f"; but {len(tagged)} live {rules.noun}(s) carry this session's tag "
                f"(other attempts: {attempts}): stop the strays by hand"
            )
            return SessionResult(entry.name, kind, Outcome.FAILED, detail)
        return SessionResult(entry.name, kind, Outcome.OK, detail)

    async def _tagged_live(
        self, provider_name: str, ids: Mapping[str, str], owner: Owner
    ) -> list[LiveSession]:
        """The live sessions carrying this session's tag (this state's lineage, its name)."""
        provider = self.providers[provider_name]
        if not isinstance(provider, ObservingProvider):
            raise TypeError(f"{provider_name} recovers by listing but cannot list")
        scope = {name: ids[name] for name in self.registry[provider_name].list_scope}
        live: Sequence[LiveSession] = await self._call(
            provider_name, lambda: provider.list_live(scope), action="list"
        )
        return [
            s
            for s in live
            if s.owner is not None
            and (s.owner.lineage, s.owner.session) == (owner.lineage, owner.session)
        ]

    def _same_start(self, session: DesiredSession, entry: JournalEntry, payload: Any) -> bool:
        return (
            session.provider == entry.provider
            and session.identity == entry.identity
            and self._fingerprint(session) == payload.get("fingerprint")
        )

    async def _delete_if_same_task(self, entry: JournalEntry) -> RecordChange | None:
        record = await self._io(self.store.get_record, entry.name)
        if record is not None and record.identity == entry.identity:
            return RecordChange(delete=entry.name)
        return None

    # -- execution ------------------------------------------------------------------------

    async def execute(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        # Build the clients before the first intent: unusable settings (no credentials) must
        # fail the apply before anything is journaled.
        self._providers_for(a.provider for a in plan.changes if not a.record_only)
        # A session with an intent still pending (its recovery failed, or a Start's outcome is
        # unknown) is left alone until that intent is finished: never two intents at once.
        pending = await self._io(self.store.pending_intents)
        unresolved = _Unresolved({e.name for e in pending}, {e.identity for e in pending})
        changes = tuple(a for a in plan.changes if not unresolved.blocks(a))
        report.results.extend(
            self._done(
                SessionResult(
                    a.name,
                    a.kind.value,
                    Outcome.FAILED,
                    "not touched: an earlier call for this session has an unknown outcome; "
                    "the next apply finishes it first",
                )
            )
            for a in plan.changes
            if unresolved.blocks(a)
        )
        stopped = await _all(
            self._in_slot(a.name, a.provider, partial(self._stop_action, a))
            for a in _interleaved(a for a in changes if a.stops)
        )
        failed_stops = {result.name for result in stopped if result.outcome is not Outcome.OK}
        # A restart whose stop succeeded is reported once, by its start.
        report.results.extend(
            r for r in stopped if r.kind == ActionKind.DELETE or r.outcome is not Outcome.OK
        )
        forward = [
            action
            for action in changes
            if action.kind in (ActionKind.CREATE, ActionKind.UPDATE)
            or (action.kind is ActionKind.REPLACE and action.name not in failed_stops)
        ]
        report.results.extend(
            await _all(
                self._in_slot(a.name, a.provider, partial(self._forward_action, a))
                for a in _interleaved(forward)
            )
        )
        report.results.sort(key=lambda result: result.name)
        report.aborted = self._abort
        return report

    async def _stop_action(self, action: Action) -> SessionResult:
        record = action.recorded
        assert record is not None
        kind = action.kind.value
        if self._abort:
            return self._done(SessionResult(action.name, kind, Outcome.SKIPPED, self._abort))
        entry = await self._io(
            self.store.begin_intent,
            record.name,
            JournalOp.STOP,
            record.provider,
            record.identity,
            json.dumps({"provider_ids": dict(record.provider_ids), "reason": action.reason}),
        )
        try:
            already = await self._stop_call(record.provider, record.provider_ids)
        except ProviderError as error:
            # Refused credentials say nothing about the task: the record stays as it was.
            failed = (
                None
                if self._abort
                else RecordChange(put=with_error(record, f"stop failed: {error}", self.now()))
            )
            await self._io(self.store.finish_intent, entry, f"failed: {error}", failed)
            return self._done(
                SessionResult(action.name, kind, Outcome.FAILED, f"stop failed: {error}")
            )
        outcome = "already stopped" if already else "stopped"
        await self._io(self.store.finish_intent, entry, outcome, RecordChange(delete=record.name))
        result = SessionResult(action.name, kind, Outcome.OK, outcome)
        return self._done(result) if action.kind is ActionKind.DELETE else result

    async def _forward_action(self, action: Action) -> SessionResult:
        kind = action.kind.value
        if self._abort:
            return self._done(SessionResult(action.name, kind, Outcome.SKIPPED, self._abort))
        if action.kind is ActionKind.UPDATE:
            return self._done(await self._update(action))
        session = action.desired
        assert session is not None
        previous = action.recorded  # a restart keeps the announcements already delivered
        rules = self._rules(session.provider)
        # The attempt is journaled before the call: the owner tag of a Start whose answer is
        # lost is known to the run that finishes it.
        owner = self._owner(session.name)
        entry = await self._io(
            self.store.begin_intent,
            session.name,
            JournalOp.START,
            session.provider,
            session.identity,
            json.dumps(
                {
                    "provider_ids": rules.identity_ids(session.spec),
                    "fingerprint": self._fingerprint(session),
                    "attempt": owner.attempt,
                }
            ),
        )
        try:
            adopted, assigned = await self._start_call(
                session.provider, session, owner, begun=self.adopt_running
            )
        except _StartUnconfirmed as error:
            # It may have taken effect (a late 504, a lost answer): the intent stays pending
            # and the next apply finishes it as it finishes one a killed run left behind.
            detail = f"start unconfirmed: {error} (the next apply finishes it)"
            return self._done(SessionResult(action.name, kind, Outcome.FAILED, detail))
        except ProviderError as error:
            await self._io(self.store.finish_intent, entry, f"failed: {error}", None)
            detail = f"start failed: {error}"
            if isinstance(error, Conflict):
                detail += (
                    f" (a {rules.noun} with this {rules.identity_label} is running but not "
                    "recorded here: stop it, or apply with --adopt-running to take it over as "
                    "it is)"
                )
            return self._done(SessionResult(action.name, kind, Outcome.FAILED, detail))
        record = self._started(session, assigned, previous, owner)
        outcome = "already started" if adopted else "started"
        await self._io(self.store.finish_intent, entry, outcome, RecordChange(put=record))
        if adopted and self.adopt_running:
            # Without --adopt-running, "already started" can only be our own retried Start.
            detail = "adopted (already running; taken over as it is)"
            return self._done(SessionResult(action.name, kind, Outcome.OK, detail, Remark.ADOPTED))
        detail = "restarted" if action.kind is ActionKind.REPLACE else "started"
        return self._done(SessionResult(action.name, kind, Outcome.OK, detail))

    async def _update(self, action: Action) -> SessionResult:
        session, record = action.desired, action.recorded
        assert session is not None and record is not None
        if action.record_only:
            await self._io(self.store.put_record, updated_record(record, session, (), self.now()))
            return SessionResult(action.name, "update", Outcome.OK, "record updated")
        details: list[str] = []
        if action.in_place_paths:
            failure = await self._reconfigure(action, record, session)
            if failure is not None:
                return failure
            record = await self._io(self.store.get_record, action.name) or record
            details.append("updated in place: " + ", ".join(action.in_place_paths))
        delivered: list[str] = []
        unconfirmed: list[str] = []
        for announcement in action.announcements:
            failure = await self._announce(record, session, announcement, delivered)
            if failure is not None and failure.remark is Remark.UNCONFIRMED:
                # Recorded as delivered: not a failure, and the next announcements still go.
                unconfirmed.append(failure.detail)
            elif failure is not None:
                return failure
            record = await self._io(self.store.get_record, action.name) or record
        details += (["announced " + ", ".join(delivered)] if delivered else []) + unconfirmed
        remark = Remark.UNCONFIRMED if unconfirmed else None
        return SessionResult(action.name, "update", Outcome.OK, "; ".join(details), remark)

    async def _reconfigure(
        self, action: Action, record: SessionRecord, session: DesiredSession
    ) -> SessionResult | None:
        """Send the changed in-place fields; on success the record's spec and fingerprint move
        to the declared ones (with labels, protect and source), in the outcome's transaction."""
        entry = await self._io(
            self.store.begin_intent,
            record.name,
            JournalOp.UPDATE,
            record.provider,
            record.identity,
            json.dumps(
                {
                    "provider_ids": dict(record.provider_ids),
                    "change": list(action.in_place_paths),
                    "fingerprint": self._fingerprint(session),
                }
            ),
        )
        provider = self.providers[record.provider]
        change = SpecChange(substitute(session.spec, self.secrets), action.in_place_paths)
        try:
            # Every retryable error is retried: an update merges the declared values, so
            # one that took effect does no harm when repeated.
            await self._call(
                record.provider,
                lambda: provider.update(record.provider_ids, change),
                action="update",
            )
        except ProviderError as error:
            if isinstance(error, NotFound):
                await self._io(
                    self.store.finish_intent,
                    entry,
                    f"not found: {error}",
                    RecordChange(delete=record.name),
                )
                detail = f"it had ended by itself ({error}); the next apply starts it again"
                return SessionResult(record.name, "update", Outcome.FAILED, detail)
            await self._io(self.store.finish_intent, entry, f"failed: {error}", None)
            return SessionResult(
                record.name, "update", Outcome.FAILED, f"update in place failed: {error}"
            )
        now = self.now()
        moved = reconfigured_record(record, session, self.key, self.sensitive, self.secrets, now)
        updated = updated_record(moved, session, (), now)
        await self._io(
            self.store.finish_intent, entry, "updated in place", RecordChange(put=updated)
        )
        return None

    async def _announce(
        self,
        record: SessionRecord,
        session: DesiredSession,
        announcement: Announcement,
        delivered: list[str],
    ) -> SessionResult | None:
        entry = await self._io(
            self.store.begin_intent,
            record.name,
            JournalOp.UPDATE,
            record.provider,
            record.identity,
            json.dumps(
                {
                    "provider_ids": dict(record.provider_ids),
                    "announcement": {"id": announcement.id},
                }
            ),
        )
        provider = self.providers[record.provider]
        try:
            await self._call(
                record.provider,
                lambda: provider.announce(record.provider_ids, announcement),
                retry_on=_not_delivered,
                action="announce",
            )
        except ProviderError as error:
            if isinstance(error, NotFound):
                # The task ended by itself (IdleTimeout, a user leaving): it is not running, so
                # the record goes and the next apply starts it again.
                await self._io(
                    self.store.finish_intent,
                    entry,
                    f"not found: {error}",
                    RecordChange(delete=record.name),
                )
                return SessionResult(
                    record.name,
                    "update",
                    Outcome.FAILED,
                    f"it had ended by itself ({error}); the next apply starts it again",
                )
            if isinstance(error, Transient) and not _not_delivered(error):
                # The answer is unknown: it may have been played. At most once. (Throttling is
                # answered at the gateway and an unsent call never arrived: such an
                # announcement was not played, and is left for the next apply.)
                note = f"announcement {announcement.id}: delivery unconfirmed ({error})"
                updated = updated_record(record, session, [announcement.id], self.now(), note)
                await self._io(
                    self.store.finish_intent,
                    entry,
                    f"unconfirmed: {error}",
                    RecordChange(put=updated),
                )
                detail = (
                    f"delivery unconfirmed: announcement {announcement.id} may have played, "
                    f"its answer was lost ({error}); recorded as delivered, never repeated"
                )
                return SessionResult(record.name, "update", Outcome.OK, detail, Remark.UNCONFIRMED)
            await self._io(self.store.finish_intent, entry, f"failed: {error}", None)
            return SessionResult(
                record.name, "update", Outcome.FAILED, f"announce {announcement.id} failed: {error}"
            )
        updated = updated_record(record, session, [announcement.id], self.now())
        await self._io(self.store.finish_intent, entry, "delivered", RecordChange(put=updated))
        delivered.append(announcement.id)
        return None

    # -- calls ----------------------------------------------------------------------------

    async def _start_call(
        self, provider_name: str, session: DesiredSession, owner: Owner, *, begun: bool
    ) -> tuple[bool, Mapping[str, str]]:
        """Start the session: whether it turned out to be running already (adopted), and the
        ids the cloud assigned."""
        provider = self.providers[provider_name]
        body = substitute(session.spec, self.secrets)
        reached = begun  # whether an earlier attempt may have reached the cloud

        async def attempt() -> tuple[bool, Mapping[str, str]]:
            nonlocal reached
            try:
                assigned = await provider.start(body, owner)
            except ProviderError as error:
                if isinstance(error, Conflict) and reached:
                    # Our own earlier Start took effect; its answer was lost.
                    return True, {}
                if isinstance(error, Transient) and not _not_delivered(error):
                    reached = True
                raise
            return False, assigned

        try:
            started: tuple[bool, Mapping[str, str]] = await self._call(
                provider_name, attempt, action="start"
            )
        except ProviderError as error:
            if reached and not self._refused(error):
                raise _StartUnconfirmed(error) from error
            raise
        return started

    async def _stop_call(self, provider_name: str, ids: Mapping[str, str]) -> bool:
        """Stop the task; True when it was not running (already stopped counts as stopped)."""
        provider = self.providers[provider_name]

        async def attempt() -> bool:
            try:
                await provider.stop(ids)
            except NotFound:
                return True
            return False

        already: bool = await self._call(provider_name, attempt, action="stop")
        return already

    async def _call(
        self,
        provider_name: str,
        call: Callable[[], Awaitable[Any]],
        retry_on: Callable[[BaseException], bool] | None = None,
        *,
        action: str,
    ) -> Any:
        if self._abort:
            raise ProviderError(ErrorKind.TERMINAL, self._abort)
        bucket = self.buckets.get(provider_name) or TokenBucket(rate=1_000_000)
        request = reported(provider_name, action, call, self.on_call)

        async def fenced() -> Any:
            # LockLost is not retried: it ends the apply. Off the loop: a leader lease's
            # check is a database round trip.
            await asyncio.to_thread(self.lock.verify)
            return await request()

        try:
            return await call_with_retries(
                fenced, self.policy, bucket, sleep=self.sleep, retry_on=retry_on
            )
        except AuthRefused as error:
            self._abort = f"{provider_name} refused the credentials: {error}"
            raise

    async def _in_slot(
        self, name: str, provider: str, run: Callable[[], Awaitable[SessionResult]]
    ) -> SessionResult:
        """Run one session's intents and calls in one of `parallelism` slots. The slot is
        taken before the first intent is written, so an intent is journaled only when its call
        is about to go out: a killed run leaves at most `parallelism` of them pending, each a
        call that may really have begun (what recovery assumes of a pending Start)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.parallelism)
        async with self._slots:
            with session_scope(name, provider):
                return with_tally(await run())

    # -- helpers --------------------------------------------------------------------------

    def _providers_for(self, names: Iterable[str]) -> None:
        for name in sorted(set(names)):
            self.providers[name]

    def _refused(self, error: ProviderError) -> bool:
        """A definite refusal of the request itself (not of the credentials): it took no
        effect, and sending the same request again would be refused the same way."""
        return isinstance(error, Terminal) and error.status is not None and self._abort is None

    def _rules(self, provider_name: str) -> ProviderRules:
        return self.registry[provider_name].rules

    def _owner(self, name: str) -> Owner:
        """The owner tag of a new Start attempt: a fresh attempt id each time."""
        return Owner(self._state_meta().lineage, name, secrets.token_hex(8))

    @property
    def key(self) -> bytes:
        return self._state_meta().fingerprint_key

    def _state_meta(self) -> StateMeta:
        """The state's lineage and key, read once (they never change): from the event loop,
        so not again for every Start."""
        if self._meta is None:
            self._meta = self.store.meta()
        return self._meta

    async def _io(self, call: Callable[..., T], *args: Any) -> T:
        """A state read or write, off the event loop: an fsync or a PostgreSQL round trip
        must not stall the calls in flight (both stores serialise their connection).

        A thread cannot be cancelled: when the run is (a sibling failed), a write already
        handed to its thread is waited for, so that it lands before the run ends, never after
        (a daemon's next run, or the caller reading the journal, would see it change)."""
        work = asyncio.ensure_future(asyncio.to_thread(call, *args))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            raise

    def _fingerprint(self, session: DesiredSession) -> str:
        paths = self.sensitive.get(session.provider, frozenset())
        return fingerprint(redact(session.spec, paths, self.key, self.secrets))

    def _started(
        self,
        session: DesiredSession,
        assigned: Mapping[str, str],
        previous: SessionRecord | None,
        owner: Owner,
    ) -> SessionRecord:
        ids = {**self._rules(session.provider).identity_ids(session.spec), **assigned}
        return started_record(
            session,
            ids,
            self.key,
            self.sensitive,
            self.secrets,
            self.now(),
            previous,
            owner.attempt,
        )

    def _done(self, result: SessionResult) -> SessionResult:
        result = with_tally(result)
        self.on_result(result)
        return result


async def _all(calls: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Every call's result, in order. A TaskGroup, not gather: when one fails (a journal write
    that cannot be made, a lost lock) the others are cancelled before this returns, so no call
    of this run is still writing records when the next run (the daemon's) begins."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        # The first failure, as gather raised it: callers handle LockLost, StateError, ...
        raise failed.exceptions[0]  # noqa: B904 - the group is kept as its context
    return [task.result() for task in tasks]


def _interleaved(actions: Iterable[Action]) -> list[Action]:
    """The actions taken in turn from each provider: the slots are handed out in this order,
    and a run of one provider's calls would leave the other providers' rate limits unused."""
    queues: dict[str, list[Action]] = {}
    for action in actions:
        queues.setdefault(action.provider, []).append(action)
    ordered: list[Action] = []
    for turn in itertools.zip_longest(*queues.values()):
        ordered.extend(action for action in turn if action is not None)
    return ordered


@dataclass(frozen=True, slots=True)
class _Unresolved:
    """Sessions and tasks with an intent still pending."""

    names: set[str]
    identities: set[str]

    def blocks(self, action: Action) -> bool:
        recorded = action.recorded.identity if action.recorded else None
        return (
            action.name in self.names
            or action.identity in self.identities
            or recorded in self.identities
        )


class _StartUnconfirmed(ProviderError):
    """A Start failed after an attempt that may have taken effect: its outcome is unknown."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.kind, str(error))
        self.code, self.status, self.retry_after = error.code, error.status, error.retry_after
        self.sent = error.sent


def _as_desired(record: SessionRecord) -> DesiredSession:
    """The record's own labels and protect, for updates made without the files (recovery)."""
    return DesiredSession(
        name=record.name,
        provider=record.provider,
        identity=record.identity,
        spec={},
        labels=dict(record.labels),
        protect=record.protect,
    )
