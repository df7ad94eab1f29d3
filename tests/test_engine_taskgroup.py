"""A failing journal write ends the whole run: no sibling call of that run goes on writing.

With `asyncio.gather`, one session's failure was raised while its siblings kept running,
calling the cloud and journaling — harmless when `asyncio.run` tore everything down, an
overlapping second run in the daemon. The engine's TaskGroup cancels them first. Everything is
real: a SQLite state file, the emulator on 127.0.0.1, the settings a user would set.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_env, emulator_server, session, write_manifest

from reconciler.emulator.volcengine import Faults
from reconciler.engine.reconcile import Engine, RunOptions
from reconciler.errors import StateError
from reconciler.provider_pool import ProviderPool
from reconciler.providers.registry import PROVIDERS
from reconciler.settings import load_settings
from reconciler.state.base import RecordChange
from reconciler.state.sqlite import SqliteStateStore
from reconciler.workspace import load_desired, schema_set, secrets_for, utc_now

FAILING = "s-00"


class JournalThatFailsOnce(SqliteStateStore):
    """A real SQLite store whose disk 'fills up' when one session's outcome is written."""

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        names = {entry.name for entry in self.pending_intents() if entry.id == entry_id}
        if FAILING in names:
            raise StateError("database or disk is full")
        super().finish_intent(entry_id, outcome, change)


class SiblingWriteInFlight(JournalThatFailsOnce):
    """The failing session's write fails while a sibling's write is already in its thread,
    and that one takes a while to land (a slow fsync)."""

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        names = {entry.name for entry in self.pending_intents() if entry.id == entry_id}
        if FAILING in names:
            time.sleep(0.05)  # the sibling's write is in its thread by now
        else:
            time.sleep(0.4)
        super().finish_intent(entry_id, outcome, change)


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("RECONCILER_"):
            monkeypatch.delenv(key)
    # Every call takes a while, so siblings are still in flight when the first one fails.
    with emulator_server(Faults(latency=0.15)) as emulator:
        env = cli_env(emulator.url, tmp_path / "state.db", parallelism="2")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        env["url"] = emulator.url
        yield env
        emulator.calls()  # still answering: the emulator outlived every call of the run


@pytest.mark.parametrize("store_class", [JournalThatFailsOnce, SiblingWriteInFlight])
def test_a_failing_journal_write_cancels_the_sibling_calls(
    tmp_path: Path, environ: dict[str, str], store_class: type[JournalThatFailsOnce]
) -> None:
    manifest = write_manifest(tmp_path / "desired.json", [session(f"s-{i:02}") for i in range(8)])
    desired = load_desired([str(manifest)])
    secrets = secrets_for(desired, strict=True)
    settings = load_settings()
    store = store_class(tmp_path / "state.db")

    async def run() -> tuple[tuple[int, int], tuple[int, int]]:
        pool = ProviderPool(settings)
        try:
            with store.lock("test") as held:
                engine = Engine(
                    store=store,
                    lock=held,
                    providers=pool,
                    registry=PROVIDERS,
                    sensitive=schema_set().sensitive,
                    now=utc_now,
                    buckets=pool.buckets,
                    parallelism=settings.parallelism,
                )
                with pytest.raises(StateError, match="disk is full"):
                    await engine.reconcile_once(desired, secrets, RunOptions(refresh=False))
                after_failure = _journal_size(store)
                # Long enough for every remaining start to be sent and journaled, had the
                # siblings been left running (8 sessions, 2 at a time, 0.15 s a call).
                await asyncio.sleep(1.2)
                return after_failure, _journal_size(store)
        finally:
            await pool.aclose()

    try:
        after_failure, later = asyncio.run(run())
    finally:
        store.close()
    assert later == after_failure, "a sibling call kept journaling after the run had failed"
    # The failure came early: most sessions were never begun.
    assert after_failure[0] < 8


def _journal_size(store: SqliteStateStore) -> tuple[int, int]:
    """(intents written, outcomes written): every journal write a run makes moves one."""
    entries = store.recent_journal(1000)
    return len(entries), sum(entry.outcome is not None for entry in entries)
