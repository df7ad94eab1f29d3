"""How `apply` shows what it did: a line per finished change, each failure once, the summary;
or, with `--format json`, one document on stdout at the end for machines.

On a terminal every finished change prints one line above the progress bar (green ✓, red ✗,
yellow ! for a success to double-check), so the bar never hides a result, and the summary
only counts the failures already shown. Elsewhere (CI logs) nothing is coloured and failures
are held back and listed once, together, just above the summary, where a reader of a long log
looks; the other results print as they finish.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from reconciler.core.json_text import indented_json
from reconciler.core.normalize import SensitivePaths
from reconciler.core.plan import Plan
from reconciler.core.render import plan_document
from reconciler.engine.results import Outcome, Remark, SessionResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

APPLY_RESULT_KIND = "reconciler-apply-result"


def _symbol(result: SessionResult) -> tuple[str, str]:
    """The mark of a result and its colour on a terminal."""
    if result.outcome is Outcome.FAILED:
        return "✗", "red"
    if result.outcome is Outcome.SKIPPED:
        return "-", "dim"
    if result.remark is Remark.UNCONFIRMED:
        return "!", "yellow"
    return "✓", "green"


def result_text(result: SessionResult) -> str:
    return f"{result.kind} {result.name}: {result.detail}"


def counts(results: Sequence[SessionResult]) -> dict[str, int]:
    """Each result counted once: adopted and unconfirmed successes apart from the others."""
    tally = {"succeeded": 0, "adopted": 0, "unconfirmed": 0, "failed": 0, "not_attempted": 0}
    for result in results:
        if result.outcome is Outcome.FAILED:
            tally["failed"] += 1
        elif result.outcome is Outcome.SKIPPED:
            tally["not_attempted"] += 1
        elif result.remark is not None:
            tally[result.remark.value] += 1
        else:
            tally["succeeded"] += 1
    return tally


def summary_text(tally: Mapping[str, int]) -> str:
    parts = [f"{tally['succeeded']} succeeded"]
    parts += [f"{tally[name]} {name}" for name in ("adopted", "unconfirmed") if tally[name]]
    parts.append(f"{tally['failed']} failed")
    if tally["not_attempted"]:
        parts.append(f"{tally['not_attempted']} not attempted")
    return "Apply: " + ", ".join(parts) + "."


def apply_document(
    plan: Plan,
    sensitive: Mapping[str, SensitivePaths],
    results: Sequence[SessionResult],
    aborted: str | None,
    exit_code: int,
) -> dict[str, Any]:
    """The `apply --format json` document: the plan applied, every result, the counts."""
    return {
        "kind": APPLY_RESULT_KIND,
        "plan": plan_document(plan, sensitive),
        "results": [
            {
                "name": r.name,
                "action": r.kind,
                "outcome": r.outcome.value,
                "remark": r.remark.value if r.remark else None,
                "detail": r.detail,
            }
            for r in results
        ],
        "summary": {**counts(results), "text": summary_text(counts(results))},
        "aborted": aborted,
        "exit_code": exit_code,
    }


def write_document(document: Mapping[str, Any], stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(indented_json(document) + "\n")


class Reporter:
    """Called with each finished session's result (the Applier's `on_result`)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.held: list[SessionResult] = []  # plain mode: failures, listed once at the end
        self._console: Console | None = None
        self._bar: tuple[Progress, TaskID] | None = None
        if self.terminal:
            from rich.console import Console

            self._console = Console(file=self.stream)

    def __call__(self, result: SessionResult) -> None:
        if self._console is None:
            if result.outcome is Outcome.FAILED:
                self.held.append(result)
            else:
                self._plain(result)
            return
        from rich.text import Text

        symbol, style = _symbol(result)
        # Text, not markup: a detail quoting the cloud ("[...]") is printed as it is.
        line = Text.assemble("  ", (symbol, style), " ", result_text(result))
        if self._bar is not None:
            progress, task = self._bar
            progress.advance(task)
            progress.console.print(line)
        else:
            self._console.print(line)

    def _plain(self, result: SessionResult) -> None:
        symbol, _ = _symbol(result)
        print(f"  {symbol} {result_text(result)}", file=self.stream, flush=True)

    @contextmanager
    def progress(self, total: int) -> Iterator[None]:
        """A progress bar below the result lines, on a terminal only; erased when done."""
        if self._console is None:
            yield
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(
            TextColumn("applying"),
            BarColumn(),
            MofNCompleteColumn(),
            console=self._console,
            transient=True,
        ) as progress:
            self._bar = (progress, progress.add_task("apply", total=total))
            try:
                yield
            finally:
                self._bar = None

    def finish(self, aborted: str | None) -> None:
        """The held failures (plain mode), then why the apply stopped, if it did. The summary
        itself goes to stdout, or into the JSON document."""
        for result in self.held:
            self._plain(result)
        self.held.clear()
        if aborted:
            print(f"Aborted: {aborted}", file=self.stream, flush=True)
