"""The read-mostly commands: validate, plan, state, emulator."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

from reconciler import exit_codes
from reconciler.core.plan import Guards, Plan, make_plan
from reconciler.core.render import record_document, render_json, render_records, render_text
from reconciler.core.render_markdown import render_markdown
from reconciler.core.saved import literal_secrets
from reconciler.errors import ReconcilerError, StateError, ValidationFailed, os_reason
from reconciler.settings import Settings, load_settings
from reconciler.state.base import StateStore
from reconciler.state.open import open_state
from reconciler.workspace import load_desired, schema_set, secrets_for, utc_now


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
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def guards_from(args: argparse.Namespace, settings: Settings) -> Guards:
    max_stops = args.max_stops if args.max_stops is not None else settings.max_stops
    return Guards(allow_empty=args.allow_empty, max_stops=max_stops)


def _plan_from_files(paths: list[str], store: StateStore, guards: Guards) -> Plan:
    """Validate the files and diff them against the records. Secrets that cannot be resolved
    here (a pull-request job) are compared by name."""
    desired = load_desired(paths)
    secrets = secrets_for(desired, strict=False)
    return make_plan(
        desired,
        store.list_records(),
        store.meta(),
        schema_set().sensitive,
        secrets,
        guards,
        created_at=utc_now(),
    )


def plan(args: argparse.Namespace) -> int:
    settings = load_settings()
    store = open_state(settings.state)
    try:
        result = _plan_from_files(args.paths, store, guards_from(args, settings))
        pending = len(store.pending_intents())
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
    if args.format == "json":
        sys.stdout.write(render_json(result, sensitive))
    elif args.format == "markdown":
        sys.stdout.write(render_markdown(result, sensitive, artifact=args.out))
    else:
        sys.stdout.write(render_text(result, sensitive))
    if result.violations:
        if args.out:
            print(f"error: a refused plan is not saved to {args.out}", file=sys.stderr)
        return exit_codes.ERROR
    if args.out:
        problems = literal_secrets(result, sensitive)
        if problems:
            raise ValidationFailed(problems)
        _write_atomically(Path(args.out), render_json(result, sensitive))
        print(
            f"Saved the plan to {args.out}; apply it with: reconciler apply {args.out}",
            file=sys.stderr,
        )
    if args.detailed_exitcode and result.changes:
        return exit_codes.CHANGES
    return exit_codes.OK


def _write_atomically(path: Path, text: str) -> None:
    """Write next to the target, then rename: a reader never sees half a plan. Nothing is left
    behind when it fails: the target is refused before writing when it cannot be a plan file,
    and the temporary file is removed on any failure."""
    if path.is_dir():
        raise ReconcilerError(f"cannot write the plan to {path}: it is a directory")
    if path.exists() and not path.is_file():
        raise ReconcilerError(f"cannot write the plan to {path}: it is not a regular file")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    step = f"cannot create a file in {path.parent}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        step = f"cannot replace {path}"
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        reason = f"{step} ({os_reason(error)})"
        raise ReconcilerError(f"cannot write the plan to {path}: {reason}") from None


def state(args: argparse.Namespace) -> int:
    settings = load_settings()
    store = open_state(settings.state)
    try:
        return _state(args, store)
    finally:
        store.close()


def _state(args: argparse.Namespace, store: StateStore) -> int:
    if args.state_command == "list":
        records = store.list_records()
        if args.format == "json":
            listing = [record_document(record) for record in records]
            sys.stdout.write(json.dumps(listing, indent=2, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(render_records(records))
        return exit_codes.OK
    if args.state_command == "show":
        record = store.get_record(args.name)
        if record is None:
            raise StateError(f'no session named "{args.name}" is recorded')
        document = record_document(record)
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
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
        holder = store.lock_holder()
        unlock = getattr(store, "force_unlock", None)
        if unlock is None:
            who = f" (held now by {holder.describe()})" if holder else ""
            raise ReconcilerError(
                "this state's lock is released by the operating system when its holder dies, "
                f"so it cannot be left behind; there is nothing to unlock{who}"
            )
        unlock()
        return exit_codes.OK
    raise AssertionError(args.state_command)


def emulator(args: argparse.Namespace) -> int:
    from reconciler.emulator.server import run_emulator
    from reconciler.emulator.volcengine import Faults

    settings = load_settings()
    run_emulator(
        port=args.port if args.port is not None else settings.emulator.port,
        access_key_id=args.access_key_id or settings.emulator.access_key_id,
        secret_access_key=(
            args.secret_access_key or settings.emulator.secret_access_key.get_secret_value()
        ),
        region=args.region or settings.volcengine.region,
        api_version=args.api_version or settings.volcengine.api_version,
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
    )
    return exit_codes.OK
