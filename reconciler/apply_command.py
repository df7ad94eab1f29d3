"""`reconciler apply`: lock, finish what a killed run left, plan, confirm, execute, report.

`apply PATH...` plans from the files and applies; `apply PLANFILE` applies a saved plan exactly
as reviewed, after checking it was made for this state, is unmodified (its MAC) and is not stale
(serial, age) — before any call. A saved plan is recognised by its content, whatever its name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.apply import Applier, ApplyReport, Outcome, SessionResult
from reconciler.commands import guards_from, selection_from
from reconciler.core.model import DesiredSession
from reconciler.core.plan import Plan, make_plan
from reconciler.core.plan_signature import has_valid_mac
from reconciler.core.render import render_text
from reconciler.core.saved import (
    foreign_lineage,
    is_saved_plan,
    parse_saved_plan,
    plan_from_saved,
    staleness,
)
from reconciler.errors import PlanRefused, UsageError
from reconciler.providers.base import SessionProvider
from reconciler.retrying import RetryPolicy, TokenBucket
from reconciler.settings import Settings, load_settings
from reconciler.state.base import LockHandle, StateStore
from reconciler.state.open import open_state
from reconciler.workspace import load_desired, path_forms, schema_set, secrets_for, utc_now


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
        desired = load_desired(args.paths)
        # Every secret must resolve before the first call: a half-resolved apply is worse
        # than none.
        secrets = secrets_for(desired, strict=True)
        with store.lock("apply " + " ".join(args.paths)) as held:
            return asyncio.run(_apply_files(args, settings, store, held, desired, secrets))
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
    desired: tuple[DesiredSession, ...],
    secrets: dict[str, str],
) -> int:
    async with _ApplierScope(args, settings, store, held, secrets) as applier:
        recovered = ApplyReport()
        if store.pending_intents():
            print("Finishing the calls an earlier run left unconfirmed...", file=sys.stderr)
            recovered = await applier.recover(desired)
        plan = make_plan(
            desired,
            store.list_records(),
            store.meta(),
            schema_set().sensitive,
            secrets,
            guards_from(args, settings),
            created_at=utc_now(),
            selection=selection_from(args),
            given_paths=path_forms(args.paths),
        )
        return await _execute(args, applier, plan, recovered)


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
        plan = plan_from_saved(saved, store.list_records(), path)
        desired = [action.desired for action in plan.actions if action.desired is not None]
        secrets = secrets_for(desired, strict=True)

        async def run() -> int:
            async with _ApplierScope(args, settings, store, held, secrets) as applier:
                return await _execute(args, applier, plan, ApplyReport())

        return asyncio.run(run())


async def _execute(
    args: argparse.Namespace, applier: Applier, plan: Plan, recovered: ApplyReport
) -> int:
    sys.stdout.write(render_text(plan))
    if plan.violations:
        raise PlanRefused("the plan was refused by a guard; nothing was changed")
    if not plan.changes:
        return _finish(recovered, ApplyReport())
    _confirm(args)
    with _progress(len(plan.changes)) as report_result:
        applier.on_result = report_result
        report = await applier.execute(plan)
    return _finish(recovered, report)


class _ApplierScope:
    """An Applier whose provider clients are closed when the apply ends."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        store: StateStore,
        held: LockHandle,
        secrets: dict[str, str],
    ) -> None:
        self.built: dict[str, SessionProvider] = {}
        self.applier = Applier(
            store=store,
            lock=held,
            providers=_LazyProviders(settings, self.built),
            secrets=secrets,
            sensitive=schema_set().sensitive,
            now=utc_now,
            policy=RetryPolicy(settings.max_attempts, settings.max_retry_seconds),
            buckets={"volcengine": TokenBucket(settings.rate_limit)},
            parallelism=settings.parallelism,
            adopt_running=args.adopt_running,
            on_result=_plain_line,
        )

    async def __aenter__(self) -> Applier:
        return self.applier

    async def __aexit__(self, *exc_info: object) -> None:
        for provider in self.built.values():
            await provider.aclose()


class _LazyProviders(Mapping[str, SessionProvider]):
    """Providers built on first use, so a run with nothing to do needs no credentials."""

    def __init__(self, settings: Settings, built: dict[str, SessionProvider]) -> None:
        self.settings = settings
        self.built = built

    def __getitem__(self, name: str) -> SessionProvider:
        if name not in self.built:
            if name != "volcengine":
                raise KeyError(name)
            from reconciler.providers.volcengine_sessions import VolcengineSessions

            self.built[name] = VolcengineSessions.from_settings(
                self.settings, max_connections=self.settings.parallelism
            )
        return self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(("volcengine",))

    def __len__(self) -> int:
        return 1


def _confirm(args: argparse.Namespace) -> None:
    if args.auto_approve:
        return
    if not sys.stdin.isatty():
        raise PlanRefused(
            "apply needs --auto-approve when it is not run from a terminal; nothing was changed"
        )
    answer = input("\nApply these changes? Only 'yes' is accepted: ")
    if answer.strip() != "yes":
        raise PlanRefused("apply cancelled; nothing was changed")


def _finish(recovered: ApplyReport, report: ApplyReport) -> int:
    results = recovered.results + report.results
    combined = ApplyReport(results, report.aborted or recovered.aborted)
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
    if combined.aborted:
        print(f"Aborted: {combined.aborted}", file=sys.stderr)
    for result in failed:
        print(f"  ✗ {result.name}: {result.detail}", file=sys.stderr)
    line = f"Apply: {len(combined.succeeded)} succeeded, {len(failed)} failed"
    if skipped:
        line += f", {len(skipped)} not attempted"
    print(line + ".")
    return combined.exit_code


_SYMBOL = {Outcome.OK: "✓", Outcome.FAILED: "✗", Outcome.SKIPPED: "-"}


def _plain_line(result: SessionResult) -> None:
    symbol = _SYMBOL[result.outcome]
    print(f"  {symbol} {result.kind} {result.name}: {result.detail}", file=sys.stderr)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[SessionResult], None]]:
    """A progress bar on a terminal; one plain line per finished session otherwise."""
    if not sys.stderr.isatty():
        yield _plain_line
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("applying"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("apply", total=total)

        def bar(result: SessionResult) -> None:
            progress.advance(task)
            if result.outcome is not Outcome.OK:
                progress.console.print(f"  ✗ {result.name}: {result.detail}")

        yield bar
