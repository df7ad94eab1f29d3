"""The daemon assembled from the settings: state and leadership, providers, engine, logging.

`reconciler watch` (watch_command.py) parses the flags; this builds what daemon/controller.py
runs. PostgreSQL state: the leader lease, on a session whose TCP keepalives follow the lease.
SQLite state: the file lock, held for the daemon's life.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.commands import guards_from
from reconciler.core.model import DesiredSession
from reconciler.core.plan import Plan
from reconciler.daemon.controller import (
    Daemon,
    Leadership,
    LeaseLeadership,
    SoleWriter,
    WatchConfig,
)
from reconciler.daemon.http import parse_listen
from reconciler.daemon.logging import Redactor, configure_logging
from reconciler.engine.calls import CallEvent
from reconciler.engine.reconcile import Engine
from reconciler.engine.results import SessionResult
from reconciler.errors import UsageError
from reconciler.probe_command import refuse_failing_endpoints
from reconciler.provider_pool import ProviderPool
from reconciler.providers.registry import PROVIDERS
from reconciler.retrying import RetryPolicy
from reconciler.settings import Settings, load_settings
from reconciler.state.base import LockHandle, StateStore
from reconciler.state.open import open_state
from reconciler.workspace import path_forms, schema_set, secrets_for, utc_now


def watch(args: argparse.Namespace) -> int:
    settings = load_settings()
    host, port = parse_listen(args.listen or settings.listen)
    if args.lease < 1:
        raise UsageError("--lease must be at least 1 second: a shorter lease cannot be kept")
    logging_setup = configure_logging(
        "json" if args.log_format == "json" else "console", secrets=_setting_secrets(settings)
    )
    try:
        store, leadership = _state(settings, args.lease, "watch " + " ".join(args.paths))
        try:
            config = WatchConfig(
                paths=tuple(args.paths),
                host=host,
                port=port,
                resync=args.resync,
                lease=args.lease,
                grace=args.grace,
                guards=guards_from(args, settings),
                given_paths=path_forms(args.paths),
                probe=args.probe,
                probe_timeout=args.probe_timeout,
                volcengine_callback_secret=_plain(settings.volcengine.callback_secret),
                aliyun_callback_token=_plain(settings.aliyun.callback_token),
            )
            return asyncio.run(_run(config, settings, store, leadership, logging_setup.redactor))
        finally:
            store.close()
    finally:
        logging_setup.close()


async def _run(
    config: WatchConfig,
    settings: Settings,
    store: StateStore,
    leadership: Leadership,
    redactor: Redactor,
) -> int:
    pool = ProviderPool(settings)
    sensitive = schema_set().sensitive

    def make_engine(
        lock: LockHandle,
        on_result: Callable[[SessionResult], None],
        on_call: Callable[[CallEvent], None],
    ) -> Engine:
        return Engine(
            store=store,
            lock=lock,
            providers=pool,
            registry=PROVIDERS,
            sensitive=sensitive,
            now=utc_now,
            policy=RetryPolicy(settings.max_attempts, settings.max_retry_seconds),
            buckets=pool.buckets,
            parallelism=settings.parallelism,
            on_result=on_result,
            on_call=on_call,
        )

    def strict_secrets(sessions: Sequence[DesiredSession]) -> dict[str, str]:
        return secrets_for(sessions, strict=True)

    async def probe(
        plan: Plan, secrets: Mapping[str, str], timeout: float
    ) -> tuple[Plan, list[SessionResult]]:
        return await refuse_failing_endpoints(plan, secrets, timeout)

    daemon = Daemon(
        config,
        leadership,
        make_engine,
        secrets_for=strict_secrets,
        on_secrets=redactor.add,
        probe=probe if config.probe else None,
    )
    try:
        return await daemon.run()
    finally:
        await pool.aclose()


def _state(settings: Settings, lease: float, command: str) -> tuple[StateStore, Leadership]:
    """The store and who may write to it: the leader lease on PostgreSQL (its session bounded
    by keepalives scaled to the lease), the file lock on SQLite."""
    url = settings.state
    if url.lower().startswith(("postgresql://", "postgres://")):
        from reconciler.daemon.lease import LeaderLease, with_keepalives
        from reconciler.state.postgres import PostgresStateStore

        store = open_state(with_keepalives(url, lease))
        assert isinstance(store, PostgresStateStore)
        return store, LeaseLeadership(LeaderLease(store, lease=lease, command=command))
    store = open_state(url)
    return store, SoleWriter(store, command)


def _plain(secret: Any) -> str | None:
    return None if secret is None else str(secret.get_secret_value()) or None


def _setting_secrets(settings: Settings) -> list[str]:
    """Every secret among the settings, for the log redactor."""
    values = [
        settings.volcengine.secret_access_key,
        settings.volcengine.session_token,
        settings.volcengine.app_key,
        settings.volcengine.callback_secret,
        settings.aliyun.access_key_secret,
        settings.aliyun.security_token,
        settings.aliyun.artc_app_key,
        settings.aliyun.callback_token,
    ]
    return [plain for value in values if (plain := _plain(value))]
