"""Benchmark: how long `reconciler plan` takes on a large desired set, against a parsing floor.

What it does (all in a temporary directory, removed at the end unless --keep):
  1. writes SESSIONS sessions spread over FILES manifests. Each file has file-level `defaults`
     holding the shared AppId/AgentConfig/Config (ASR, TTS, LLM; secrets only as ${env:...}
     references) and each session its own name, RoomId, TaskId, TargetUserId/UserId and a few
     overrides (WelcomeMessage, LLM prompt or temperature, a voice, sometimes protect or an
     announcement). All JSON by default; --mix makes every 5th file TOML and every 5th YAML
     (the floor then parses those with tomllib / yaml's C loader, so it stays apples to apples).
  2. builds the matching state: by default with a real `python -m reconciler apply
     --auto-approve` against the emulator running in this process (no QPS cap, no latency,
     RECONCILER_RATE_LIMIT=100000, RECONCILER_PARALLELISM=--apply-parallelism, default 8: with
     no latency 8 calls in flight saturate the client, and more only slows it, see README) into
     a SQLite file (~30 s for 10,000 sessions here); with --state api, in ~3 s, through the
     public Python API the apply uses (started_record + SqliteStateStore.put_record, then the
     settled files as an apply records them: make_plan + settled_files + record_settled).
  3. times, best of --runs, each as a subprocess `python -m reconciler plan --detailed-exitcode
     DIR` with its output to /dev/null (the exit code checks that cold = changes, no-change =
     none):
        cold       an empty state: every session is a create
        no-change  the matching state: every session is a noop (as an apply leaves the state,
                   with its settled files, so no file is parsed: see core/settled.py)
        files read the same state with its settled files forgotten: every file parsed,
                   validated and compared (the cost of a plan when every file changed)
        one file   the matching state after one file's bytes changed (a trailing newline):
                   that file is read, the others are not
        floor      `python -c` that only walks the directory and parses each file (json.loads)
        fixed      the same plan command on an empty directory (start-up, imports, schemas)
        json, out  the cold plan as `--format json` and as a saved plan (`--out`): no target
     and prints each ratio to the floor (target: at most 3x) and the plan's peak RSS. Each child
     is started by a bare `python -S` launcher that times it and reads its own ru_maxrss from
     os.wait4 (see _LAUNCHER for why not getrusage(RUSAGE_CHILDREN) of this script).

Prints figures, never asserts; exits 0 even when a target is missed.
    python benchmarks/plan_scale.py                 # 10,000 sessions / 100 files (~50 s)
    python benchmarks/plan_scale.py --quick         # 500 sessions / 10 files, seconds
    python benchmarks/plan_scale.py --sessions 2000 --files 20 --runs 2
    python benchmarks/plan_scale.py --profile       # also print a cProfile of each plan kind
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TARGET_RATIO = 3.0
TARGET_RSS_RATIO = 1.5  # peak RSS of a plan against a process that holds the parsed files
PYTHON = sys.executable

# The values the ${env:...} references resolve to (the plan and the apply both see them).
SECRET_ENV = {
    "VOICE_ASR_ACCESS_TOKEN": "bench-asr-token-0123456789",
    "VOICE_TTS_TOKEN": "bench-tts-token-0123456789",
    "VOICE_LLM_API_KEY": "bench-llm-key-0123456789",
    "VOICE_RTS_SIGNATURE": "bench-rts-signature-0123456789",
}
EMULATOR_KEY_ID = "AKLTbenchmark"
EMULATOR_SECRET = "benchmark-secret"

_FLOOR_SCRIPT = r"""
import json, os, sys
mix = sys.argv[2] == "1"
held = []  # with a third argument "hold": every parsed file is kept (the memory floor)
keep = held.append if sys.argv[3:] == ["hold"] else (lambda value: None)
if mix:
    import tomllib, yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
for directory, subdirs, names in os.walk(sys.argv[1]):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    for name in sorted(names):
        path = os.path.join(directory, name)
        if name.endswith(".json"):
            with open(path, "rb") as f:
                keep(json.loads(f.read()))
        elif mix and name.endswith(".toml"):
            with open(path, "rb") as f:
                keep(tomllib.loads(f.read().decode("utf-8")))
        elif mix and name.endswith((".yaml", ".yml")):
            with open(path, "rb") as f:
                keep(yaml.load(f.read().decode("utf-8"), Loader=loader))
"""


# -- the desired set ---------------------------------------------------------------------------

_VOICES = ["BV001_streaming", "BV033_streaming", "BV700_streaming", "BV406_streaming"]
_LANGUAGES = ["en", "zh", "ja", "es", "de"]


def _defaults(file_index: int) -> dict[str, Any]:
    """The shared pipeline of one team: what every session in the file inherits."""
    return {
        "provider": "volcengine",
        "labels": {"team": f"team-{file_index:03d}", "cost-center": f"cc-{4000 + file_index}"},
        "spec": {
            # A few RTC applications shared by many teams.
            "AppId": f"661e4b8f2f1d3c01234567{file_index % 7:02d}",
            "AgentConfig": {
                "EnableConversationStateCallback": True,
                "ServerMessageURLForRTS": "https://hooks.example.com/voice/state",
                "ServerMessageSignatureForRTS": "${env:VOICE_RTS_SIGNATURE}",
                "IdleTimeout": 300,
                "AnsMode": 3,
            },
            "Config": {
                "ASRConfig": {
                    "Provider": "volcano",
                    "ProviderParams": {
                        "Mode": "bigmodel",
                        "AppId": "4120736521",
                        "AccessToken": "${env:VOICE_ASR_ACCESS_TOKEN}",
                        "ApiResourceId": "volc.bigasr.sauc.duration",
                    },
                    "VADConfig": {"SilenceTime": 800},
                    "VolumeGain": 0.5,
                    "InterruptConfig": {
                        "InterruptSpeechDuration": 400,
                        "InterruptKeywords": ["stop", "wait", "hold on"],
                    },
                },
                "TTSConfig": {
                    "Provider": "volcano",
                    "ProviderParams": {
                        "app": {
                            "appid": "4120736521",
                            "token": "${env:VOICE_TTS_TOKEN}",
                            "cluster": "volcano_tts",
                        },
                        "audio": {
                            "voice_type": _VOICES[file_index % len(_VOICES)],
                            "speed_ratio": 1.0,
                            "volume_ratio": 1.0,
                            "pitch_ratio": 1.0,
                        },
                    },
                    "IgnoreBracketText": [1, 2],
                },
                "LLMConfig": {
                    "Mode": "CustomLLM",
                    "Url": "https://llm.example.com/v1/chat-stream",
                    "APIKey": "${env:VOICE_LLM_API_KEY}",
                    "ModelName": f"assistant-{file_index % 5}",
                    "Temperature": 0.4,
                    "TopP": 0.9,
                    "MaxTokens": 256,
                    "HistoryLength": 15,
                    "EnableRoundId": True,
                    "SystemMessages": ["You are a friendly voice agent. Answer in two sentences."],
                },
                "InterruptMode": 0,
            },
        },
    }


def _session(file_index: int, index: int, rng: random.Random) -> dict[str, Any]:
    """One session: its own identity and a few overrides of the file's defaults."""
    team = f"team-{file_index:03d}"
    name = f"{team}-agent-{index:04d}"
    language = rng.choice(_LANGUAGES)
    session: dict[str, Any] = {
        "name": name,
        "provider": "volcengine",
        "labels": {"language": language, "shard": str(index % 8)},
        "spec": {
            "RoomId": f"{team}-room-{index:04d}",
            "TaskId": f"agent-{index:04d}",
            "AgentConfig": {
                "TargetUserId": [f"caller-{file_index:03d}-{index:04d}"],
                "UserId": f"bot-{file_index:03d}-{index:04d}",
                "WelcomeMessage": f"Hi, this is line {index} of {team}. How can I help?",
            },
            "Config": {},
        },
    }
    config = session["spec"]["Config"]
    roll = rng.random()
    if roll < 0.4:
        config["LLMConfig"] = {
            "SystemMessages": [f"You are agent {index} of {team}. Answer in {language}."]
        }
    elif roll < 0.6:
        config["LLMConfig"] = {"Temperature": round(rng.uniform(0.1, 0.9), 2), "MaxTokens": 384}
    if rng.random() < 0.25:
        config["TTSConfig"] = {"ProviderParams": {"audio": {"voice_type": rng.choice(_VOICES)}}}
    if not config:
        del session["spec"]["Config"]
    if rng.random() < 0.05:
        session["protect"] = True
    if rng.random() < 0.1:
        session["announcements"] = [
            {
                "id": f"notice-{index % 3}",
                "message": "Planned maintenance tonight from 23:00 to 23:30 UTC.",
                "interrupt_mode": 2,
            }
        ]
    return session


def _merged(base: Any, override: Any) -> Any:
    """What the file's defaults and a session declare together (objects merge key by key),
    as a copy: the inline shape writes every session out in full."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = json.loads(json.dumps(base))
        for key, value in override.items():
            merged[key] = _merged(base[key], value) if key in base else value
        return merged
    return override


def _file_format(file_index: int, mix: bool) -> str:
    if not mix:
        return "json"
    return {1: "toml", 2: "yaml"}.get(file_index % 5, "json")


def write_manifests(
    root: Path,
    sessions: int,
    files: int,
    *,
    mix: bool = False,
    inline: bool = False,
    seed: int = 1121,
) -> dict[str, int]:
    """Write `sessions` sessions over `files` manifests; returns the bytes written per format.
    `inline`: no file `defaults`, every session spelled out whole (the same effective specs)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    per_file, extra = divmod(sessions, files)
    written: dict[str, int] = {}
    for file_index in range(files):
        count = per_file + (1 if file_index < extra else 0)
        defaults = _defaults(file_index)
        declared = [_session(file_index, i, rng) for i in range(count)]
        manifest: dict[str, Any] = (
            {"sessions": [_merged(defaults, session) for session in declared]}
            if inline
            else {"defaults": defaults, "sessions": declared}
        )
        kind = _file_format(file_index, mix)
        text = _dump(manifest, kind)
        path = root / f"team-{file_index:03d}.{kind}"
        path.write_text(text, encoding="utf-8")
        written[kind] = written.get(kind, 0) + len(text.encode("utf-8"))
    return written


def _dump(manifest: Mapping[str, Any], kind: str) -> str:
    if kind == "json":
        return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    if kind == "yaml":
        import yaml

        return str(yaml.safe_dump(dict(manifest), sort_keys=False, allow_unicode=True))
    return _toml(manifest)


def _toml(manifest: Mapping[str, Any]) -> str:
    """A small TOML writer for this benchmark's manifests (tables, arrays of tables, scalars)."""
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{_key(k)} = {scalar(v)}" for k, v in value.items()) + "}"
        raise TypeError(type(value))

    def table(prefix: str, node: Mapping[str, Any], header: str) -> None:
        simple = {k: v for k, v in node.items() if not _is_table(v)}
        nested = {k: v for k, v in node.items() if _is_table(v)}
        lines.append(header)
        lines.extend(f"{_key(k)} = {scalar(v)}" for k, v in simple.items())
        lines.append("")
        for key, value in nested.items():
            path = f"{prefix}.{_key(key)}" if prefix else _key(key)
            if isinstance(value, list):
                for item in value:
                    table(path, item, f"[[{path}]]")
            else:
                table(path, value, f"[{path}]")

    table("defaults", manifest["defaults"], "[defaults]")
    for session in manifest["sessions"]:
        table("sessions", session, "[[sessions]]")
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


# -- running children --------------------------------------------------------------------------


def base_env(state: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without any RECONCILER_* setting, plus the secrets and state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    # As a user's interpreter does: cache bytecode. Without it (this variable is set on some
    # development machines) every child compiles the reconciler's sources again, ~25 ms.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(SECRET_ENV)
    env["RECONCILER_STATE"] = str(state)
    env.update(extra)
    return env


# Runs one command and reports its wall time and peak RSS. It is a separate small process on
# purpose: Linux charges a child's ru_maxrss with the high-water mark of the memory it had
# before exec, i.e. of the parent it was forked from; forked from this (large) script, every
# child would report at least this script's RSS. Forked from a bare `python -S`, the floor of the
# measurement is that launcher's ~10 MB.
_LAUNCHER = r"""
import os, sys, time
devnull = os.open(os.devnull, os.O_WRONLY)
actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
print(wall, os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_measured(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> tuple[float, int, int]:
    """Run one child with its output to /dev/null: (wall seconds, exit code, peak RSS in KiB).

    The wall time is taken by the launcher around the child alone (its own start-up is not
    counted); the RSS is that child's own ru_maxrss from os.wait4.
    """
    done = subprocess.run(
        [PYTHON, "-S", "-c", _LAUNCHER, *argv],
        stdout=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        check=True,
        text=True,
    )
    wall, code, rss = done.stdout.split()
    return float(wall), int(code), int(rss)


def best_of(
    runs: int, argv: Sequence[str], env: Mapping[str, str], cwd: Path
) -> tuple[float, list[float], int, int]:
    """(best wall, every wall, exit code of the last run, peak RSS of the largest run)."""
    walls: list[float] = []
    rss = code = 0
    for _ in range(runs):
        wall, code, peak = run_measured(argv, env, cwd)
        walls.append(wall)
        rss = max(rss, peak)
    return min(walls), walls, code, rss


# -- the matching state ------------------------------------------------------------------------


def state_via_apply(
    manifests: Path, state: Path, work: Path, parallelism: int
) -> tuple[float, str]:
    """A real `reconciler apply --auto-approve` against the in-process emulator.

    With no latency a handful of calls in flight saturate the client's CPU; more only adds
    connection-pool bookkeeping (httpcore 1.0's pool scans its connections quadratically).
    """
    from reconciler.emulator.server import EmulatorServer
    from reconciler.emulator.volcengine import Faults

    with EmulatorServer(
        access_key_id=EMULATOR_KEY_ID,
        secret_access_key=EMULATOR_SECRET,
        faults=Faults(qps=None, latency=0.0),
    ) as server:
        env = base_env(
            state,
            RECONCILER_VOLCENGINE__ENDPOINT=server.url,
            RECONCILER_VOLCENGINE__ACCESS_KEY_ID=EMULATOR_KEY_ID,
            RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY=EMULATOR_SECRET,
            RECONCILER_RATE_LIMIT="100000",
            RECONCILER_PARALLELISM=str(parallelism),
        )
        log = work / "apply.log"
        started = time.perf_counter()
        with open(log, "wb") as out:
            done = subprocess.run(
                [PYTHON, "-m", "reconciler", "apply", "--auto-approve", str(manifests)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=work,
                check=False,
            )
        wall = time.perf_counter() - started
        calls = server.calls()
    summary = [line for line in log.read_text("utf-8").splitlines() if line.startswith("Apply:")]
    note = f"exit {done.returncode}; {summary[-1] if summary else 'no summary line'}; "
    note += f"emulator saw {calls['total']} calls {calls['by_outcome']}"
    return wall, note


def state_via_api(manifests: Path, state: Path) -> tuple[float, str]:
    """The records an apply would write, and the files it would find settled, through the
    same public functions it calls."""
    os.environ.update(SECRET_ENV)
    from reconciler.core.outcome import started_record
    from reconciler.core.plan import ActionKind, make_plan
    from reconciler.core.settled import settled_files
    from reconciler.providers.registry import provider_rules
    from reconciler.state.sqlite import SqliteStateStore
    from reconciler.workspace import code_digest, load_manifests, schema_set, secrets_for, utc_now

    started = time.perf_counter()
    # From the directory the plans run in, as an apply there would: a file is settled under
    # its path relative to the working directory.
    with contextlib.chdir(manifests.parent):
        read = load_manifests([str(manifests)])
    desired = read.sessions
    secrets = secrets_for(desired, strict=True)
    store = SqliteStateStore(state)
    try:
        key = store.meta().fingerprint_key
        sensitive = schema_set().sensitive
        now = utc_now()
        rules = provider_rules()
        for session in desired:
            ids = rules[session.provider].identity_ids(session.spec)
            store.put_record(started_record(session, ids, key, sensitive, secrets, now))
        meta = store.meta()
        plan = make_plan(desired, store.list_records(), meta, sensitive, secrets, rules=rules)
        noops = [action.name for action in plan.actions if action.kind is ActionKind.NOOP]
        found = settled_files(
            noops,
            read.files,
            desired,
            serial=meta.serial,
            code=code_digest(),
            secrets=secrets,
            key=meta.fingerprint_key,
        )
        store.record_settled(found, meta.serial)
    finally:
        store.close()
    note = f"{len(desired)} records written with put_record, {len(found)} files settled"
    return time.perf_counter() - started, note


def forget_settled(source: Path, target: Path) -> int:
    """A copy of the state without its settled files (a cache: the records are untouched),
    so that a plan reads every file; how many were forgotten."""
    import sqlite3

    shutil.copyfile(source, target)
    with sqlite3.connect(target) as conn:
        return conn.execute("DELETE FROM settled_files").rowcount


# -- profiling ---------------------------------------------------------------------------------


def profile_plan(manifests: Path, state: Path, cwd: Path, label: str, top: int) -> None:
    """cProfile of one `plan` in a child (same process shape as the timed runs)."""
    out = cwd / f"plan-{label}.prof"
    env = base_env(state)
    subprocess.run(
        [PYTHON, "-m", "cProfile", "-o", str(out), "-m", "reconciler", "plan", str(manifests)],
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        check=False,
    )
    import io
    import pstats

    for order in ("tottime", "cumulative"):
        buffer = io.StringIO()
        stats = pstats.Stats(str(out), stream=buffer)
        stats.sort_stats(order).print_stats(top)
        text = buffer.getvalue()
        body = text[text.find("   ncalls") :] if "   ncalls" in text else text
        print(f"\n--- cProfile of the {label} plan, top {top} by {order} ---")
        print(body.rstrip())


# -- main --------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="plan runs per kind (best is kept)")
    parser.add_argument("--floor-runs", type=int, default=7)
    parser.add_argument(
        "--state",
        choices=("apply", "api"),
        default="apply",
        help="build the matching state with a real apply (default) or the Python API",
    )
    parser.add_argument(
        "--apply-parallelism",
        type=int,
        default=8,
        help="RECONCILER_PARALLELISM of the state-building apply (default 8)",
    )
    parser.add_argument("--mix", action="store_true", help="make 2 files in 5 TOML / YAML")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="no file defaults: every session spelled out whole (~3x the bytes)",
    )
    parser.add_argument("--quick", action="store_true", help="500 sessions in 10 files, 1 run")
    parser.add_argument("--profile", action="store_true", help="print cProfile top entries")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.files = min(args.sessions, 500), min(args.files, 10)
        args.runs, args.floor_runs = 1, 2
    args.files = max(1, min(args.files, args.sessions))

    work = Path(tempfile.mkdtemp(prefix="reconciler-plan-scale-"))
    try:
        return _run(args, work)
    finally:
        if args.keep:
            print(f"\n(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    manifests = work / "desired"
    written = write_manifests(
        manifests, args.sessions, args.files, mix=args.mix, inline=args.inline
    )
    total_bytes = sum(written.values())
    formats = ", ".join(f"{kind} {size / 1e6:.2f} MB" for kind, size in sorted(written.items()))
    print(f"plan_scale  {time.strftime('%Y-%m-%d %H:%M')}  python {sys.version.split()[0]}")
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{os.cpu_count()} CPUs"
    )
    shape = "every session spelled out whole" if args.inline else "file defaults"
    print(
        f"desired set: {args.sessions} sessions in {args.files} files ({formats}; {shape}), {work}"
    )

    empty_state = work / "empty.db"
    full_state = work / "full.db"
    if args.state == "apply":
        took, note = state_via_apply(manifests, full_state, work, args.apply_parallelism)
        how = "real apply against the emulator"
    else:
        took, note = state_via_api(manifests, full_state)
        how = "Python API (started_record + put_record)"
    print(f"matching state: {how} in {took:.1f} s ({note})")

    # Create the empty state before timing, so that no cold run pays for the migration.
    from reconciler.state.sqlite import SqliteStateStore

    SqliteStateStore(empty_state).close()
    plan = [PYTHON, "-m", "reconciler", "plan", "--detailed-exitcode", str(manifests)]
    floor_argv = [PYTHON, "-c", _FLOOR_SCRIPT, str(manifests), "1" if args.mix else "0"]

    floor, floor_all, _, floor_rss = best_of(
        args.floor_runs, floor_argv, base_env(empty_state), work
    )
    _, _, _, held_rss = best_of(1, [*floor_argv, "hold"], base_env(empty_state), work)
    cold, cold_all, cold_code, cold_rss = best_of(args.runs, plan, base_env(empty_state), work)
    same, same_all, same_code, same_rss = best_of(args.runs, plan, base_env(full_state), work)
    read_state = work / "read.db"
    forgotten = forget_settled(full_state, read_state)
    read, read_all, read_code, read_rss = best_of(args.runs, plan, base_env(read_state), work)
    touched = min(manifests.rglob("*.*"))
    with touched.open("a", encoding="utf-8") as appended:
        appended.write("\n")  # new bytes, the same sessions: this file is read again
    one, one_all, one_code, one_rss = best_of(args.runs, plan, base_env(full_state), work)
    # The fixed cost: the same command on an empty directory (imports, schemas, state open).
    nothing = work / "nothing"
    nothing.mkdir()
    fixed_argv = [*plan[:-1], str(nothing)]
    fixed, fixed_all, _, fixed_rss = best_of(args.runs, fixed_argv, base_env(empty_state), work)
    # The machine-readable forms of the cold plan (no target of their own): JSON on stdout, and
    # a saved plan (signed, written to a file; it binds to the empty state).
    json_argv = [*plan[:-1], "--format", "json", str(manifests)]
    saved_argv = [*plan[:-1], "--out", str(work / "saved-plan.json"), str(manifests)]
    as_json, json_all, json_code, json_rss = best_of(
        args.runs, json_argv, base_env(empty_state), work
    )
    saved, saved_all, saved_code, saved_rss = best_of(
        args.runs, saved_argv, base_env(empty_state), work
    )

    def runs(walls: list[float]) -> str:
        return ", ".join(f"{w:.2f}" for w in walls)

    print()
    print(f"{'run':<22}{'best s':>8}{'x floor':>9}{'peak RSS':>11}   all runs (s)")
    print(
        f"{'floor (parse only)':<22}{floor:>8.3f}{1.0:>9.2f}{floor_rss / 1024:>8.0f} MB   "
        f"{runs(floor_all)}"
    )
    for label, best, walls, rss in (
        ("cold plan", cold, cold_all, cold_rss),
        ("no-change plan", same, same_all, same_rss),
        ("no-change, files read", read, read_all, read_rss),
        ("one file re-read", one, one_all, one_rss),
    ):
        ratio = best / floor
        print(
            f"{label:<22}{best:>8.3f}{ratio:>9.2f}{rss / 1024:>8.0f} MB   {runs(walls)}"
            f"   <= {TARGET_RATIO:g}x floor: {verdict(ratio <= TARGET_RATIO)}"
        )
    print(
        f"{'floor, files held':<22}{'':>8}{'':>9}{held_rss / 1024:>8.0f} MB"
        "   (the memory floor: a process that keeps every parsed file)"
    )
    for label, rss in (
        ("cold plan", cold_rss),
        ("no-change plan", same_rss),
        ("no-change plan, files read", read_rss),
    ):
        ratio = rss / held_rss
        print(
            f"peak RSS of the {label}: {ratio:.2f}x the memory floor   "
            f"<= {TARGET_RSS_RATIO:g}x: {verdict(ratio <= TARGET_RSS_RATIO)}"
        )
    print(
        f"{'plan of an empty dir':<22}{fixed:>8.3f}{fixed / floor:>9.2f}{fixed_rss / 1024:>8.0f} MB"
        f"   {runs(fixed_all)}   (the fixed cost: start-up, imports, schemas, state)"
    )
    for label, best, walls, rss in (
        ("cold, --format json", as_json, json_all, json_rss),
        ("cold, saved (--out)", saved, saved_all, saved_rss),
    ):
        print(
            f"{label:<22}{best:>8.3f}{best / floor:>9.2f}{rss / 1024:>8.0f} MB   {runs(walls)}"
            "   (no target: the cold plan's other outputs)"
        )
    print(
        "per-session cost above the fixed cost: "
        f"cold {(cold - fixed) / args.sessions * 1e6:.0f} us,"
        f" no-change {(same - fixed) / args.sessions * 1e6:.0f} us,"
        f" files read {(read - fixed) / args.sessions * 1e6:.0f} us; floor"
        f" {floor / args.sessions * 1e6:.1f} us per session including its start-up"
    )
    print(
        f"\nthroughput: cold {args.sessions / cold:,.0f} sessions/s, "
        f"no-change {args.sessions / same:,.0f} sessions/s, "
        f"floor {total_bytes / floor / 1e6:.0f} MB/s"
    )
    # --detailed-exitcode: 2 means changes (cold must be 2), 0 none (no-change must be 0).
    sane = cold_code == 2 and same_code == 0 and read_code == 0 and one_code == 0
    sane = sane and forgotten > 0 and json_code == 2 and saved_code == 2
    print(
        f"sanity: cold plan exit {cold_code} (2 expected), no-change plan exit {same_code}, "
        f"files read {read_code}, one file re-read {one_code} (0 expected), json {json_code} and"
        f" saved {saved_code} (2 expected), {forgotten} settled"
        f" files forgotten for 'files read' (> 0 expected; one file re-read: {touched.name}): "
        f"{'ok' if sane else 'UNEXPECTED, the figures above are suspect'}"
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        "(for comparison, getrusage(RUSAGE_CHILDREN) of this script: "
        f"{children.ru_maxrss / 1024:.0f} MB: the largest child of any kind, charged with this"
        " script's own memory at fork)"
    )

    if args.profile:
        profile_plan(manifests, empty_state, work, "cold", 25)
        profile_plan(manifests, full_state, work, "no-change", 25)
        profile_plan(manifests, read_state, work, "files-read", 25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
