"""The read-mostly commands: validate, plan, state, emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import exit_codes
from reconciler.collector import collection_paused
from reconciler.core.json_text import indented_json_bytes
from reconciler.core.model import (
    DesiredSession,
    JournalEntry,
    LiveSession,
    SessionRecord,
    StateMeta,
)
from reconciler.core.normalize import SensitivePaths
from reconciler.core.plan import Guards, Plan, make_plan
from reconciler.core.render import plan_document
from reconciler.core.selection import Selection, selection_of
from reconciler.core.settled import SettledFile, records_agree, usable
from reconciler.errors import (
    ReconcilerError,
    StateError,
    StateMissing,
    ValidationFailed,
    os_reason,
)
from reconciler.providers.registry import PROVIDERS, provider_rules
from reconciler.secret_store import resolve
from reconciler.settings import Settings, load_settings
from reconciler.state.base import StateStore
from reconciler.state.empty import EmptyState
from reconciler.state.open import open_state
from reconciler.workspace import (
    code_digest,
    load_desired,
    load_manifests,
    path_forms,
    resolve_secrets,
    schema_set,
    utc_now,
)

if TYPE_CHECKING:
    from reconciler.refresh import Refreshed

# What only some runs need is imported where it is used, so that `validate` and a plan with
# nothing to refresh start quickly: the providers' pool and the retry machinery (a refresh),
# the saved-plan helpers (--out), the Markdown renderer and the state listing.


def validate(paths: list[str], output_format: str = "text") -> int:
    if output_format != "json":
        sessions = load_desired(paths)
        print(f"Valid: {len(sessions)} session(s) declared.")
        return exit_codes.OK
    try:
        sessions = load_desired(paths)
    except ValidationFailed as failed:
        problems = [
            {"file": p.file, "line": p.line, "pointer": p.pointer or "/", "message": p.message}
            for p in failed.problems
        ]
        _print_json({"valid": False, "problems": problems})
        return exit_codes.ERROR
    _print_json({"valid": True, "sessions": len(sessions)})
    return exit_codes.OK


def _print_json(document: object) -> None:
    """The document as indented JSON on stdout: its UTF-8 bytes written as they are where
    stdout has a byte buffer (a JSON plan of 10,000 creates is 34 MB, and its decoded text and
    that text encoded again were two more copies at the peak)."""
    data = indented_json_bytes(document)
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode("utf-8") + "\n")
        return
    sys.stdout.flush()
    buffer.write(data)
    buffer.write(b"\n")
    buffer.flush()


def guards_from(args: argparse.Namespace, settings: Settings) -> Guards:
    max_stops = args.max_stops if args.max_stops is not None else settings.max_stops
    return Guards(allow_empty=args.allow_empty, max_stops=max_stops)


def selection_from(args: argparse.Namespace) -> Selection:
    return selection_of(args.selector, args.target)


def _plan_from_files(
    paths: list[str],
    store: StateStore,
    guards: Guards,
    selection: Selection,
    refresh: Settings | None = None,
) -> Plan:
    """Validate the files and diff them against the records, refreshed first from the
    providers that can observe (`refresh`: the settings to reach them with; None skips it,
    as --refresh=false does). Secrets that cannot be resolved here (a pull-request job) are
    compared by name. The plan writes nothing: what it observed is kept by `apply`.

    A file the last apply left settled, unchanged since, is not read (core/settled.py): its
    sessions are noops, as reading it would find. Whether it may be skipped is decided from
    the state's serial before and after the records are listed, so the records are those the
    apply left; otherwise every file is read."""
    before = store.meta()
    reusable = {} if selection.limited else reusable_settled(store, before, refresh is not None)
    manifests = load_manifests(paths, reusable)
    reused: tuple[SettledFile, ...] = manifests.reused
    with collection_paused():  # (see collector.py; not over the refresh's event loop)
        records = _records_besides(store, reused) if reused else None
        meta = store.meta()
        if records is None or meta.serial != before.serial:
            if reused:
                manifests, reused = load_manifests(paths), ()
            records, meta = store.list_records(), store.meta()
    desired = manifests.sessions
    secrets = resolve_secrets(desired)
    live: list[LiveSession] = []
    observing = any(PROVIDERS[r.provider].observes for r in records if r.provider in PROVIDERS)
    observing |= any(PROVIDERS[s.provider].observes for s in desired)
    if refresh is not None and observing:
        refreshed = asyncio.run(_refreshed(refresh, records, desired, store.pending_intents()))
        records, live = refreshed.records, refreshed.live
    with collection_paused():
        return make_plan(
            desired,
            records,
            meta,
            schema_set().sensitive,
            secrets.values,
            guards,
            created_at=utc_now(),
            selection=selection,
            given_paths=path_forms(paths),
            empty_references=secrets.empty,
            rules=provider_rules(),
            live=live,
            settled=reused,
        )


# Past this many records outside the settled files, one full listing costs less than reading
# them one by one.
_RECORDS_READ_ONE_BY_ONE = 1_000


def _records_besides(
    store: StateStore, reused: Sequence[SettledFile]
) -> list[SessionRecord] | None:
    """The records of every session but those of the reused files (whose noops need only
    their heads), ordered by name; None when a reused session's head does not agree with
    what the apply saw (`records_agree`) or a record vanished meanwhile: read every file."""
    heads = store.record_heads()
    if not records_agree(reused, heads):
        return None
    settled = {session.name for file in reused for session in file.sessions}
    others = [head.name for head in heads if head.name not in settled]
    if len(others) > _RECORDS_READ_ONE_BY_ONE:
        return [record for record in store.list_records() if record.name not in settled]
    records = [store.get_record(name) for name in others]
    found = [record for record in records if record is not None]
    return found if len(found) == len(others) else None


def reusable_settled(
    store: StateStore, meta: StateMeta, refreshing: bool
) -> dict[str, SettledFile]:
    """The settled files whose verdict still stands before their bytes are compared: at this
    serial, for this build and these secret values, and none of whose sessions this plan
    asks the cloud about (a refresh of an observing provider's records)."""
    known = store.settled_files()
    if not known:
        return {}
    references = {reference for file in known for reference in file.references}
    return usable(
        known,
        serial=meta.serial,
        code=code_digest(),
        secrets=resolve(references).values,
        key=meta.fingerprint_key,
        reusable_provider={
            name: not (refreshing and spec.observes) for name, spec in PROVIDERS.items()
        },
    )


def _write_plan(
    result: Plan, sensitive: Mapping[str, SensitivePaths], output_format: str, out: str | None
) -> None:
    if output_format == "json":
        _print_json(plan_document(result, sensitive))
    elif output_format == "markdown":
        from reconciler.core.render_markdown import render_markdown

        sys.stdout.write(render_markdown(result, sensitive, artifact=out))
    else:
        from reconciler.text_output import write_text_plan

        write_text_plan(result, sensitive, sys.stdout)


async def _refreshed(
    settings: Settings,
    records: list[SessionRecord],
    desired: tuple[DesiredSession, ...],
    pending: list[JournalEntry],
) -> Refreshed:
    from reconciler.provider_pool import ProviderPool
    from reconciler.refresh import Refresher
    from reconciler.retrying import RetryPolicy

    pool = ProviderPool(settings)
    try:
        refresher = Refresher(
            providers=pool,
            registry=PROVIDERS,
            now=utc_now,
            policy=RetryPolicy(settings.max_attempts, settings.max_retry_seconds),
            buckets=pool.buckets,
            parallelism=settings.parallelism,
        )
        return await refresher.refresh(records, desired, pending)
    finally:
        await pool.aclose()


def _open_for_plan(args: argparse.Namespace, settings: Settings) -> StateStore:
    """The state as it is; where there is none yet, an empty one (creating nothing), unless
    the plan is saved: a saved plan is bound to its state's lineage and key, so that state is
    created first, and only once the plan is known to be savable (valid files, no literal
    secret: against an empty state every declared session is a create, so the trial plan
    holds every literal the saved one would)."""
    url = settings.state
    try:
        return open_state(url, create=False)
    except StateMissing as missing:
        empty = EmptyState(missing.location)
        if not args.out:
            print(f"no state at {missing.location} yet: everything is new", file=sys.stderr)
            return empty
        if _target_problem(Path(args.out)) is not None:
            return empty  # the plan cannot be saved there (said when it is written): no state
        trial = _plan_from_files(
            args.paths, empty, guards_from(args, settings), selection_from(args)
        )
    from reconciler.core.saved import literal_secrets

    problems = literal_secrets(trial, schema_set().sensitive)
    if problems:
        raise ValidationFailed(problems)
    store = open_state(url)
    print(
        f"created a new, empty state at {store.location} to bind the saved plan to",
        file=sys.stderr,
    )
    return store


def plan(args: argparse.Namespace) -> int:
    settings = load_settings()
    store = _open_for_plan(args, settings)
    try:
        result = _plan_from_files(
            args.paths,
            store,
            guards_from(args, settings),
            selection_from(args),
            refresh=settings if args.refresh else None,
        )
        pending = len(store.pending_intents())
        # The key that binds a saved plan to this state (see plan_signature.py).
        plan_key = store.meta().fingerprint_key
    finally:
        store.close()
    if pending:
        # A note of the plan (stdout, with it, in every format), not a status message.
        note = (
            f"{pending} call(s) of an earlier apply have an unknown outcome; the next "
            "`reconciler apply PATH...` finishes them before anything else, and a saved plan "
            "is refused as stale until then."
        )
        result = dataclasses.replace(result, notes=(*result.notes, note))
    sensitive = schema_set().sensitive
    with collection_paused():
        _write_plan(result, sensitive, args.format, args.out)
    if result.violations:
        if args.out:
            print(f"error: a refused plan is not saved to {args.out}", file=sys.stderr)
        return exit_codes.ERROR
    if args.out:
        from reconciler.core.plan_signature import signed
        from reconciler.core.saved import literal_secrets

        problems = literal_secrets(result, sensitive)
        if problems:
            raise ValidationFailed(problems)
        # The verifier hashes the canonical JSON of the file as it reads it back; the document
        # is plain JSON data, whose canonical text is the same before and after the round trip
        # (tests/test_json_text.py), so it is signed as it is, without a parsed copy.
        document = signed(plan_document(result, sensitive), plan_key)
        _write_atomically(Path(args.out), (indented_json_bytes(document), b"\n"))
        print(
            f"Saved the plan to {args.out}; apply it with: reconciler apply {args.out}",
            file=sys.stderr,
        )
    if args.detailed_exitcode and result.changes:
        return exit_codes.CHANGES
    return exit_codes.OK


def _target_problem(path: Path) -> str | None:
    """Why a plan cannot be saved at `path` whatever its content, or None."""
    if path.is_dir():
        return "it is a directory"
    if path.exists() and not path.is_file():
        return "it is not a regular file"
    return None


def _write_atomically(path: Path, parts: Sequence[bytes]) -> None:
    """Write next to the target, then rename: a reader never sees half a plan. Nothing is left
    behind when it fails: the target is refused before writing when it cannot be a plan file,
    and the temporary file is removed on any failure."""
    problem = _target_problem(path)
    if problem is not None:
        raise ReconcilerError(f"cannot write the plan to {path}: {problem}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    step = f"cannot create a file in {path.parent}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as file:
            file.writelines(parts)
        step = f"cannot replace {path}"
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        reason = f"{step} ({os_reason(error)})"
        raise ReconcilerError(f"cannot write the plan to {path}: {reason}") from None


def state(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        # Never created here: reading or editing a state that does not exist creates nothing.
        store = open_state(settings.state, create=False)
    except StateMissing as missing:
        return _no_state(args, missing.location)
    try:
        return _state(args, store)
    finally:
        store.close()


def _no_state(args: argparse.Namespace, location: str) -> int:
    note = f"no state at {location} yet"
    if args.state_command == "list":
        print(f"{note}: nothing is recorded", file=sys.stderr)
        return _state(args, EmptyState(location))
    if args.state_command == "unlock":
        print(f"Nothing to unlock: {note}.")
        return exit_codes.OK
    name = args.old if args.state_command == "mv" else args.name
    raise StateError(f'no session named "{name}" is recorded ({note})')


def _state(args: argparse.Namespace, store: StateStore) -> int:
    from reconciler.core.state_listing import listing_documents, render_listing, session_document

    if args.state_command == "list":
        records, pending = store.list_records(), store.pending_intents()
        if args.format == "json":
            listing = listing_documents(records, pending)
            _print_json(listing)
        else:
            sys.stdout.write(render_listing(records, pending))
        return exit_codes.OK
    if args.state_command == "show":
        record, pending = store.get_record(args.name), store.pending_intents()
        if record is None and all(entry.name != args.name for entry in pending):
            raise StateError(f'no session named "{args.name}" is recorded')
        document = session_document(args.name, record, pending)
        _print_json(document)
        return exit_codes.OK
    if args.state_command == "mv":
        with store.lock(f"state mv {args.old} {args.new}"):
            store.rename_record(args.old, args.new)
        print(
            f'Renamed "{args.old}" to "{args.new}" in the state; its task was not touched and '
            "keeps running. Rename it in the manifests too before the next apply: while they "
            f'still declare "{args.old}", the plan stops "{args.new}" (cutting its call) and '
            f'starts "{args.old}" afresh.'
        )
        return exit_codes.OK
    if args.state_command == "rm":
        with store.lock(f"state rm {args.name}"):
            if not store.delete_record(args.name):
                raise StateError(f'no session named "{args.name}" is recorded')
        print(
            f'Forgot "{args.name}". Its task was NOT stopped: it keeps running in the cloud, '
            "untracked, until it ends by itself or is declared again."
        )
        return exit_codes.OK
    if args.state_command == "unlock":
        return _unlock(store)
    raise AssertionError(args.state_command)


def _unlock(store: StateStore) -> int:
    unlock = getattr(store, "force_unlock", None)
    if unlock is None:
        holder = store.lock_holder()
        if holder is None:
            print(f"Nothing to unlock: the state at {store.location} is not locked.")
            return exit_codes.OK
        raise ReconcilerError(
            "this state's lock is released by the operating system when its holder dies, "
            f"so it cannot be left behind; it is held now by {holder.describe()}, a live "
            "process: stop that process to release it"
        )
    displaced = unlock()
    if displaced is None:
        print(f"Nothing to unlock: the state at {store.location} is not locked.")
        return exit_codes.OK
    print(f"Unlocked: {displaced.describe()}; that process stops at its next call.")
    return exit_codes.OK


def _artc_key(settings: Settings) -> str | None:
    key = settings.aliyun.artc_app_key
    return key.get_secret_value() if key is not None else None


def emulator(args: argparse.Namespace) -> int:
    from reconciler.emulator.custom_llm import CustomLlm
    from reconciler.emulator.server import DEFAULT_ARTC_APP_ID, DEFAULT_ARTC_APP_KEY, run_emulator
    from reconciler.emulator.volcengine import Faults

    settings = load_settings()
    custom_llm = (
        CustomLlm(api_key=args.custom_llm_api_key, reply=args.custom_llm_reply)
        if args.custom_llm
        else None
    )
    run_emulator(
        port=args.port if args.port is not None else settings.emulator.port,
        access_key_id=args.access_key_id or settings.emulator.access_key_id,
        secret_access_key=(
            args.secret_access_key or settings.emulator.secret_access_key.get_secret_value()
        ),
        region=args.region or settings.volcengine.region,
        api_version=args.api_version or settings.volcengine.api_version,
        artc_app_id=args.artc_app_id or settings.aliyun.artc_app_id or DEFAULT_ARTC_APP_ID,
        artc_app_key=args.artc_app_key or _artc_key(settings) or DEFAULT_ARTC_APP_KEY,
        aliyun_finish_after=args.aliyun_finish_after,
        faults=Faults(
            qps=args.qps or None,
            latency=args.latency,
            error_500_rate=args.error_rate / 3,
            error_502_rate=args.error_rate / 3,
            error_503_rate=args.error_rate / 3,
            error_429_rate=args.throttle_rate,
            lost_response_rate=args.lost_response_rate,
            late_504_rate=args.late_504_rate,
            seed=args.seed,
        ),
        custom_llm=custom_llm,
    )
    return exit_codes.OK
