"""`reconciler apply`: lock, finish what a killed run left, plan, confirm, execute, report.

`apply PATH...` plans from the files and applies; `apply PLANFILE` applies a saved plan exactly
as reviewed, after checking it was made for this state, is unmodified (its MAC) and is not stale
(serial, age) — before any call. A saved plan is recognised by its content, whatever its name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import exit_codes
from reconciler.apply_report import Reporter, apply_document, counts, summary_text, write_document
from reconciler.commands import guards_from, selection_from
from reconciler.core.plan import Plan
from reconciler.core.plan_signature import has_valid_mac
from reconciler.core.render import text_chunks
from reconciler.core.saved import (
    foreign_lineage,
    is_saved_plan,
    parse_saved_plan,
    plan_from_saved,
    staleness,
)
from reconciler.engine.applier import Applier
from reconciler.engine.reconcile import Engine, RunOptions
from reconciler.engine.results import ApplyReport, SessionResult
from reconciler.errors import PlanRefused, ReconcilerError, UsageError
from reconciler.probe_command import refuse_failing_endpoints
from reconciler.provider_pool import ProviderPool
from reconciler.providers.registry import PROVIDERS, provider_rules
from reconciler.retrying import RetryPolicy
from reconciler.settings import Settings, load_settings
from reconciler.state.base import LockHandle, StateStore
from reconciler.state.open import open_state
from reconciler.workspace import (
    Manifests,
    code_digest,
    load_manifests,
    path_forms,
    schema_set,
    secrets_for,
    utc_now,
)


def apply(args: argparse.Namespace) -> int:
    settings = load_settings()
    saved = _saved_plan(args.paths)
    if saved is not None and (args.selector or args.target):
        raise UsageError(
            "-l / --target do not apply to a saved plan: it applies exactly the actions it "
            "holds; make the plan with -l / --target instead"
        )
    store = open_state(settings.state)
    try:
        if saved is not None:
            return _apply_saved(args, settings, store, args.paths[0], saved)
        manifests = load_manifests(args.paths)
        # Every secret must resolve before the first call: a half-resolved apply is worse
        # than none.
        secrets = secrets_for(manifests.sessions, strict=True)
        with store.lock("apply " + " ".join(args.paths)) as held:
            return asyncio.run(_apply_files(args, settings, store, held, manifests, secrets))
    finally:
        store.close()


def _saved_plan(paths: Sequence[str]) -> dict[str, Any] | None:
    """The saved plan named by a lone argument, or None for manifests.

    A plan is known by its content (a JSON object of kind "reconciler-plan"), not by its name:
    `plan --out p1.plan` must apply as `apply p1.plan`."""
    plans = [(path, doc) for path in paths if (doc := _read_saved_plan(path)) is not None]
    if not plans:
        return None
    if len(paths) > 1:
        others = ", ".join(path for path in paths if path != plans[0][0])
        raise UsageError(
            f"{plans[0][0]} is a saved plan, which is applied alone: "
            f"do not combine it with other paths ({others})"
        )
    return plans[0][1]


def _read_saved_plan(path: str) -> dict[str, Any] | None:
    file = Path(path)
    if not file.is_file():
        return None
    try:
        content = file.read_bytes()
        if not content.lstrip().startswith(b"{"):
            return None
        document = json.loads(content)
    except (OSError, ValueError):
        return None  # not a saved plan; the manifest loader reports what is wrong with it
    return document if is_saved_plan(document) else None


async def _apply_files(
    args: argparse.Namespace,
    settings: Settings,
    store: StateStore,
    held: LockHandle,
    manifests: Manifests,
    secrets: dict[str, str],
) -> int:
    scope = _ApplierScope(args, settings, store, held)
    async with scope:
        options = RunOptions(
            guards=guards_from(args, settings),
            selection=selection_from(args),
            given_paths=path_forms(args.paths),
            refresh=args.refresh,
            adopt_running=args.adopt_running,
        )
        prepared = await scope.engine.prepare(manifests.sessions, secrets, options)
        code = await _execute(
            args, prepared.applier, prepared.plan, prepared.recovered, scope.reporter
        )
        if code == exit_codes.OK:
            await _record_settled(scope.engine, manifests, secrets, options)
        return code


async def _record_settled(
    engine: Engine, manifests: Manifests, secrets: dict[str, str], options: RunOptions
) -> None:
    """Remember which files this apply left settled, for the next plan (core/settled.py).
    Only a cache: should the state refuse the write, the apply still succeeded, and the next
    plan reads every file."""
    try:
        await engine.record_settled(
            manifests.sessions, manifests.files, secrets, options, code_digest()
        )
    except ReconcilerError as error:
        print(f"warning: the next plan will read every file ({error})", file=sys.stderr)


def _apply_saved(
    args: argparse.Namespace,
    settings: Settings,
    store: StateStore,
    path: str,
    document: dict[str, Any],
) -> int:
    with store.lock(f"apply {path}") as held:
        meta = store.meta()
        saved = parse_saved_plan(document, path)
        # Lineage first: a plan made for another state is stale, and its MAC (made with that
        # state's key) cannot be checked here. Then the MAC, before anything acts on the
        # plan's content.
        foreign = foreign_lineage(saved, meta)
        if foreign is not None:
            raise PlanRefused(foreign)
        if not has_valid_mac(document, meta.fingerprint_key):
            raise PlanRefused(
                f"{path}: the plan was modified after it was written (or was not saved by "
                "`reconciler plan --out` for this state): its MAC does not match; make a new plan"
            )
        if saved.refused:
            raise PlanRefused(f"{path}: this plan was refused by a guard when it was made")
        pending = store.pending_intents()
        if pending:
            raise PlanRefused(
                f"the plan is stale: an interrupted (or failed) apply left {len(pending)} "
                "call(s) unfinished; "
                "run `reconciler apply` on the manifests to finish them, then plan again"
            )
        reason = staleness(saved, meta, datetime.now(UTC), settings.plan_max_age)
        if reason is not None:
            raise PlanRefused(reason)
        plan = plan_from_saved(saved, store.list_records(), path, provider_rules())
        desired = [action.desired for action in plan.actions if action.desired is not None]
        secrets = secrets_for(desired, strict=True)

        async def run() -> int:
            scope = _ApplierScope(args, settings, store, held)
            async with scope:
                applier = scope.engine.applier(
                    secrets, RunOptions(adopt_running=args.adopt_running)
                )
                return await _execute(args, applier, plan, ApplyReport(), scope.reporter)

        return asyncio.run(run())


async def _execute(
    args: argparse.Namespace,
    applier: Applier,
    plan: Plan,
    recovered: ApplyReport,
    reporter: Reporter,
) -> int:
    as_json = args.format == "json"
    if not as_json:
        sys.stdout.writelines(text_chunks(plan, applier.sensitive))
    if plan.violations:
        if as_json:
            _finish(args, plan, applier, recovered, ApplyReport(), reporter, exit_codes.ERROR)
        raise PlanRefused("the plan was refused by a guard; nothing was changed")
    if not plan.changes:
        return _finish(args, plan, applier, recovered, ApplyReport(), reporter)
    refused: list[SessionResult] = []
    if getattr(args, "probe", False):
        # Before the question, so whoever confirms sees which sessions will not start.
        plan, refused = await refuse_failing_endpoints(plan, applier.secrets, args.probe_timeout)
    _confirm(args)
    with reporter.progress(len(plan.changes) + len(refused)):
        for result in refused:
            reporter(result)
        report = await applier.execute(plan)
    report.results = sorted([*report.results, *refused], key=lambda result: result.name)
    return _finish(args, plan, applier, recovered, report, reporter)


class _ApplierScope:
    """The engine of one apply, whose provider clients are closed when the apply ends."""

    def __init__(
        self, args: argparse.Namespace, settings: Settings, store: StateStore, held: LockHandle
    ) -> None:
        self.pool = ProviderPool(settings)
        self.reporter = Reporter()

        def recovering(pending: int) -> None:
            print("Finishing the calls an earlier run left unconfirmed...", file=sys.stderr)

        self.engine = Engine(
            store=store,
            lock=held,
            providers=self.pool,
            registry=PROVIDERS,
            sensitive=schema_set().sensitive,
            now=utc_now,
            policy=RetryPolicy(settings.max_attempts, settings.max_retry_seconds),
            buckets=self.pool.buckets,
            parallelism=settings.parallelism,
            on_result=self.reporter,
            on_recovering=recovering,
        )

    async def __aenter__(self) -> Engine:
        return self.engine

    async def __aexit__(self, *exc_info: object) -> None:
        await self.pool.aclose()


def _confirm(args: argparse.Namespace) -> None:
    if args.auto_approve:
        return
    if not sys.stdin.isatty():
        raise PlanRefused(
            "apply needs --auto-approve when it is not run from a terminal; nothing was changed"
        )
    answer = _ask("\nApply these changes? Only 'yes' is accepted: ")
    if answer.strip() != "yes":
        raise PlanRefused("apply cancelled; nothing was changed")


def _ask(question: str) -> str:
    """input(), with Ctrl-C noticed at once. asyncio.run's own SIGINT handler only cancels the
    main task, which a blocking read never notices, so the default handler (KeyboardInterrupt)
    is put back while asking; and the wait is a select() with a timeout, so a signal landing
    just before the read is not left pending until Enter. "" on end of input (Ctrl-D)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.stdout.write(question)
        sys.stdout.flush()
        while not select.select([sys.stdin], [], [], 0.2)[0]:
            pass
        return sys.stdin.readline()
    finally:
        signal.signal(signal.SIGINT, previous)


def _finish(
    args: argparse.Namespace,
    plan: Plan,
    applier: Applier,
    recovered: ApplyReport,
    report: ApplyReport,
    reporter: Reporter,
    exit_code: int | None = None,
) -> int:
    """Failures once (held back in plain mode), then the summary: a line on stdout, or the JSON
    document with everything in it."""
    results = recovered.results + report.results
    combined = ApplyReport(results, report.aborted or recovered.aborted)
    code = _exit_code(combined) if exit_code is None else exit_code
    reporter.finish(combined.aborted)
    summary = summary_text(counts(results))
    if args.format == "json":
        document = apply_document(plan, applier.sensitive, results, combined.aborted, code)
        write_document(document)
        print(summary, file=sys.stderr)
    else:
        print(summary)
    return code


def _exit_code(report: ApplyReport) -> int:
    """0 all went well, 1 nothing did, 3 some did (README, exit codes)."""
    if not report.failed:
        return exit_codes.OK
    return exit_codes.PARTIAL if report.succeeded else exit_codes.ERROR
