"""`reconciler apply`: lock, finish what a killed run left, plan, confirm, execute, report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from reconciler.apply import Applier, ApplyReport, Outcome, SessionResult
from reconciler.commands import guards_from
from reconciler.core.model import DesiredSession
from reconciler.core.plan import Plan, make_plan
from reconciler.core.render import render_text
from reconciler.errors import PlanRefused
from reconciler.providers.base import SessionProvider
from reconciler.retrying import RetryPolicy, TokenBucket
from reconciler.settings import Settings, load_settings
from reconciler.state.base import StateStore
from reconciler.state.open import open_state
from reconciler.workspace import load_desired, schema_set, secrets_for, utc_now


def apply(args: argparse.Namespace) -> int:
    settings = load_settings()
    desired = load_desired(args.paths)
    # Every secret must resolve before the first call: a half-resolved apply is worse than none.
    secrets = secrets_for(desired, strict=True)
    store = open_state(settings.state)
    try:
        with store.lock("apply " + " ".join(args.paths)):
            return asyncio.run(_apply(args, settings, store, desired, secrets))
    finally:
        store.close()


async def _apply(
    args: argparse.Namespace,
    settings: Settings,
    store: StateStore,
    desired: tuple[DesiredSession, ...],
    secrets: dict[str, str],
) -> int:
    with _progress() as report_result:
        providers: dict[str, SessionProvider] = {}
        try:
            applier = Applier(
                store=store,
                providers=_LazyProviders(settings, providers),
                secrets=secrets,
                sensitive=schema_set().sensitive,
                now=utc_now,
                policy=RetryPolicy(settings.max_attempts, settings.max_retry_seconds),
                buckets={"volcengine": TokenBucket(settings.rate_limit)},
                parallelism=settings.parallelism,
                adopt_running=getattr(args, "adopt_running", False),
                on_result=report_result,
            )
            recovered = ApplyReport()
            if store.pending_intents():
                print("Finishing what an interrupted run left pending...", file=sys.stderr)
                recovered = await applier.recover(desired)
            plan = make_plan(
                desired,
                store.list_records(),
                store.meta(),
                schema_set().sensitive,
                secrets,
                guards_from(args, settings),
                created_at=utc_now(),
            )
            if plan.violations:
                sys.stdout.write(render_text(plan))
                raise PlanRefused("the plan was refused by a guard; nothing was changed")
            if not plan.changes:
                sys.stdout.write(render_text(plan))
                return _finish(recovered, ApplyReport())
            sys.stdout.write(render_text(plan))
            _confirm(args, plan)
            report = await applier.execute(plan)
            return _finish(recovered, report)
        finally:
            for provider in providers.values():
                await provider.aclose()


class _LazyProviders(Mapping[str, SessionProvider]):
    """Providers built on first use, so a plan with nothing to do needs no credentials."""

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


def _confirm(args: argparse.Namespace, plan: Plan) -> None:
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
    ok = len(combined.succeeded)
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
    if combined.aborted:
        print(f"Aborted: {combined.aborted}", file=sys.stderr)
    for result in failed:
        print(f"  ✗ {result.name}: {result.detail}", file=sys.stderr)
    line = f"Apply: {ok} succeeded, {len(failed)} failed"
    if skipped:
        line += f", {len(skipped)} not attempted"
    print(line + ".")
    return combined.exit_code


_SYMBOL = {Outcome.OK: "✓", Outcome.FAILED: "✗", Outcome.SKIPPED: "-"}


@contextmanager
def _progress() -> Iterator[Callable[[SessionResult], None]]:
    """A progress bar on a terminal; one plain line per finished session otherwise."""
    if not sys.stderr.isatty():

        def plain(result: SessionResult) -> None:
            symbol = _SYMBOL[result.outcome]
            print(f"  {symbol} {result.kind} {result.name}: {result.detail}", file=sys.stderr)

        yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("applying"), BarColumn(), MofNCompleteColumn(), transient=True
    ) as progress:
        task = progress.add_task("apply", total=None)

        def bar(result: SessionResult) -> None:
            progress.advance(task)
            if result.outcome is not Outcome.OK:
                progress.console.print(f"  ✗ {result.name}: {result.detail}")

        yield bar


