"""Benchmark: does `reconciler apply` use the account's rate limit well, with and without faults?

Two runs, each with a fresh emulator (in this process) and a fresh SQLite state:
  clean    SESSIONS starts against an emulator capped at CAP requests/s (its `qps` knob: a token
           bucket with one second of burst) with LATENCY seconds added to every call, applied by a
           real `python -m reconciler apply --auto-approve` subprocess with
           RECONCILER_RATE_LIMIT=CAP and RECONCILER_PARALLELISM=PARALLELISM.
  faulted  the same, with 10% injected 5xx (500/502/503 in thirds) and 5% injected 429 on top.

Every call the emulator answers is timestamped here (a wrapper around the emulator's
`VolcengineApi.handle`), so the calls phase is measured from the first call to the last, without
the apply's start-up (imports, file validation, planning) or its shutdown. Printed:
  clean    achieved rate = (accepted calls - 1) / calls-phase span, as a fraction of CAP
           (target >= 0.9); throttled share = 429s / all calls (target <= 2%)
  faulted  calls-phase time relative to the clean run (target <= 1.3), calls per session
Prints figures, never asserts; exits 0 even when a target is missed.

    python benchmarks/apply_throughput.py              # 2,000 sessions at 200/s (~30 s)
    python benchmarks/apply_throughput.py --quick      # 200 sessions, seconds
    python benchmarks/apply_throughput.py --sessions 500 --parallelism 16
    python benchmarks/apply_throughput.py --provider aliyun   # Alibaba Cloud AI agents
    python benchmarks/apply_throughput.py --provider mixed    # half and half, one apply

With --provider mixed each cloud has its own cap (the emulator keeps one bucket per API) and the
apply its own bucket per provider, so the figures are against twice the cap.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plan_scale import (
    EMULATOR_KEY_ID,
    EMULATOR_SECRET,
    PYTHON,
    base_env,
    write_manifests,
)

from reconciler.emulator.faults import Faults
from reconciler.emulator.server import DEFAULT_ARTC_APP_ID, DEFAULT_ARTC_APP_KEY, EmulatorServer

# What each cloud's emulator answers when its rate limit refuses a call.
THROTTLED_OUTCOMES = frozenset({"FlowLimitExceeded", "Throttling.User"})
AGENT = "39f8e0bc005e4f309379701645f4a1b2"

TARGET_RATE_FRACTION = 0.9
TARGET_THROTTLED_SHARE = 0.02
TARGET_FAULTED_RATIO = 1.3


@dataclass
class RunResult:
    label: str
    sessions: int
    wall: float  # the apply subprocess, start to exit
    exit_code: int
    summary: str
    calls: list[tuple[float, str, str]]  # (monotonic time answered, action, outcome)
    started: float  # monotonic time the subprocess was launched
    counters: dict[str, Any]
    apply_cpu: float  # user + system seconds of the apply subprocess
    emulator_cpu: float  # user + system seconds of this process (the emulator) meanwhile

    @property
    def total(self) -> int:
        return len(self.calls)

    @property
    def accepted(self) -> int:
        return sum(1 for _, _, outcome in self.calls if outcome == "ok")

    @property
    def throttled(self) -> int:
        return sum(1 for _, _, outcome in self.calls if outcome in THROTTLED_OUTCOMES)

    @property
    def span(self) -> float:
        """From the first call answered to the last: the calls phase."""
        if len(self.calls) < 2:
            return float("nan")
        return self.calls[-1][0] - self.calls[0][0]

    @property
    def startup(self) -> float:
        return self.calls[0][0] - self.started if self.calls else float("nan")

    @property
    def shutdown(self) -> float:
        return self.started + self.wall - self.calls[-1][0] if self.calls else float("nan")

    def rate(self) -> float:
        """Accepted calls per second over the whole calls phase."""
        return (self.accepted - 1) / self.span if self.span > 0 else float("nan")

    def steady_rate(self, warmup: float = 0.05) -> float:
        """Accepted calls per second after the first `warmup` share of the calls.

        The apply reserves its rate-limit slots before its first connections are open; those
        first answers come late and the ones queued behind them in a bunch, so the whole-phase
        figure starts its clock late and reads a few percent above the true rate.
        """
        skip = max(1, int(len(self.calls) * warmup))
        if len(self.calls) - skip < 2:
            return self.rate()
        rest = self.calls[skip:]
        accepted = sum(1 for _, _, outcome in rest if outcome == "ok")
        return (accepted - 1) / (rest[-1][0] - rest[0][0])

    def time_to_share(self, share: float) -> float:
        """Seconds from the first call until `share` of the sessions had been started."""
        needed = max(1, round(self.sessions * share))
        seen = 0
        for moment, _, outcome in self.calls:
            if outcome == "ok":
                seen += 1
                if seen >= needed:
                    return moment - self.calls[0][0]
        return float("nan")

    def busiest_second(self) -> int:
        """The most calls answered in any one-second window (the burst the emulator saw)."""
        times = [moment for moment, _, _ in self.calls]
        best = start = 0
        for end, moment in enumerate(times):
            while moment - times[start] > 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best


def run_apply(
    label: str,
    manifests: Path,
    sessions: int,
    work: Path,
    faults: Faults,
    rate_limit: float,
    parallelism: int,
) -> RunResult:
    """One apply against a fresh emulator and a fresh state."""
    run_dir = work / label
    run_dir.mkdir()
    calls: list[tuple[float, str, str]] = []
    calls_lock = threading.Lock()
    with EmulatorServer(
        access_key_id=EMULATOR_KEY_ID, secret_access_key=EMULATOR_SECRET, faults=faults
    ) as server:
        for api in (server.api, server.aliyun):
            handle = api.handle

            def timed_handle(request: Any, handle: Any = handle) -> Any:
                reply = handle(request)
                moment = time.monotonic()
                action = dict(request.query).get("Action") or request.header("x-acs-action")
                with calls_lock:
                    calls.append((moment, action or "", reply.outcome))
                return reply

            api.handle = timed_handle  # type: ignore[method-assign]  # instance attribute wins
        env = base_env(
            run_dir / "state.db",
            RECONCILER_VOLCENGINE__ENDPOINT=server.url,
            RECONCILER_VOLCENGINE__ACCESS_KEY_ID=EMULATOR_KEY_ID,
            RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY=EMULATOR_SECRET,
            RECONCILER_ALIYUN__ENDPOINT=server.url,
            RECONCILER_ALIYUN__ACCESS_KEY_ID=EMULATOR_KEY_ID,
            RECONCILER_ALIYUN__ACCESS_KEY_SECRET=EMULATOR_SECRET,
            RECONCILER_ALIYUN__ARTC_APP_ID=DEFAULT_ARTC_APP_ID,
            RECONCILER_ALIYUN__ARTC_APP_KEY=DEFAULT_ARTC_APP_KEY,
            RECONCILER_RATE_LIMIT=f"{rate_limit:g}",
            RECONCILER_PARALLELISM=str(parallelism),
        )
        log = run_dir / "apply.log"
        children_before = _cpu(resource.RUSAGE_CHILDREN)
        self_before = _cpu(resource.RUSAGE_SELF)
        with open(log, "wb") as out:
            started = time.monotonic()
            done = subprocess.run(
                [PYTHON, "-m", "reconciler", "apply", "--auto-approve", str(manifests)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=run_dir,
                check=False,
            )
            wall = time.monotonic() - started
        apply_cpu = _cpu(resource.RUSAGE_CHILDREN) - children_before
        emulator_cpu = _cpu(resource.RUSAGE_SELF) - self_before
        counters = _merged(server.calls(), server.aliyun.calls())
    lines = log.read_text("utf-8", errors="replace").splitlines()
    summary = next((line for line in reversed(lines) if line.startswith("Apply:")), "")
    if not summary:
        summary = "no summary line; last output: " + " | ".join(lines[-3:])
    calls.sort()
    return RunResult(
        label,
        sessions,
        wall,
        done.returncode,
        summary,
        calls,
        started,
        counters,
        apply_cpu,
        emulator_cpu,
    )


def _merged(*counters: dict[str, Any]) -> dict[str, Any]:
    return {"total": sum(int(c["total"]) for c in counters)}


def write_aliyun_manifests(root: Path, sessions: int, start: int = 0) -> None:
    """`sessions` Alibaba Cloud AI-agent sessions in one JSON manifest."""
    root.mkdir(parents=True, exist_ok=True)
    entries = [
        {
            "name": f"agent-{i:05d}",
            "provider": "aliyun",
            "spec": {
                "AIAgentId": AGENT,
                "RuntimeConfig": {"ChannelId": f"ch-{i:05d}", "AgentUserId": f"agent-{i:05d}"},
                "AgentConfig": {"Greeting": "Hello!", "TtsConfig": {"VoiceId": "zhixiaoxia"}},
            },
        }
        for i in range(start, start + sessions)
    ]
    (root / "aliyun.json").write_text(json.dumps({"sessions": entries}), encoding="utf-8")


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def describe(result: RunResult, cap: float) -> None:
    by_outcome: dict[str, int] = {}
    for _, _, outcome in result.calls:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    print(f"\n[{result.label}] exit {result.exit_code}: {result.summary}")
    print(
        f"  apply wall {result.wall:.2f} s = start-up {result.startup:.2f} s + calls phase "
        f"{result.span:.2f} s + shutdown {result.shutdown:.2f} s"
    )
    print(
        f"  calls {result.total} ({result.total / result.sessions:.3f} per session): "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_outcome.items(), key=lambda kv: -kv[1]))
    )
    print(
        f"  sessions started: 50% after {result.time_to_share(0.5):.2f} s, 99% after "
        f"{result.time_to_share(0.99):.2f} s, all after {result.time_to_share(1.0):.2f} s;"
        f" busiest second {result.busiest_second()} calls (cap {cap:g}/s with 1 s of burst)"
    )
    print(
        f"  CPU: apply {result.apply_cpu:.2f} s ({result.apply_cpu / result.wall:.0%} of a core"
        f" over its wall, {result.apply_cpu / max(1, result.total) * 1000:.2f} ms per call"
        " incl. start-up),"
        f" emulator {result.emulator_cpu:.2f} s"
    )
    if result.counters.get("total") != result.total:
        print(f"  (the emulator's own counters disagree: {result.counters})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--cap", type=float, default=200.0, help="emulator QPS cap")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added per call")
    parser.add_argument("--parallelism", type=int, default=32)
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="RECONCILER_RATE_LIMIT (default: the cap)"
    )
    parser.add_argument("--error-rate", type=float, default=0.10, help="faulted run: 5xx share")
    parser.add_argument("--throttle-rate", type=float, default=0.05, help="faulted run: 429 share")
    parser.add_argument("--seed", type=int, default=1121, help="the emulator's fault draws")
    parser.add_argument("--quick", action="store_true", help="200 sessions")
    parser.add_argument(
        "--provider",
        choices=("volcengine", "aliyun", "mixed"),
        default="volcengine",
        help="whose sessions to start (mixed: half each, in one apply)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions = min(args.sessions, 200)
    rate_limit = args.rate_limit if args.rate_limit is not None else args.cap

    work = Path(tempfile.mkdtemp(prefix="reconciler-apply-throughput-"))
    try:
        manifests = work / "desired"
        aliyun_share = {"volcengine": 0, "aliyun": args.sessions, "mixed": args.sessions // 2}
        aliyun_count = aliyun_share[args.provider]
        volcengine_count = args.sessions - aliyun_count
        if volcengine_count:
            files = max(1, min(20, volcengine_count // 100))
            write_manifests(manifests, volcengine_count, files)
        if aliyun_count:
            write_aliyun_manifests(manifests, aliyun_count)
        cap = args.cap * (2 if args.provider == "mixed" else 1)
        print(
            f"apply_throughput  {time.strftime('%Y-%m-%d %H:%M')}  python {sys.version.split()[0]}"
        )
        print(
            f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
            f"{os.cpu_count()} CPUs"
        )
        print(
            f"{args.sessions} starts ({args.provider}: {volcengine_count} volcengine, "
            f"{aliyun_count} aliyun); emulator cap {args.cap:g}/s per cloud, "
            f"latency {args.latency * 1000:g} ms;"
            f" RECONCILER_RATE_LIMIT={rate_limit:g} RECONCILER_PARALLELISM={args.parallelism}"
        )
        clean = run_apply(
            "clean",
            manifests,
            args.sessions,
            work,
            Faults(qps=args.cap, latency=args.latency, seed=args.seed),
            rate_limit,
            args.parallelism,
        )
        describe(clean, cap)
        third = args.error_rate / 3
        faulted = run_apply(
            "faulted",
            manifests,
            args.sessions,
            work,
            Faults(
                qps=args.cap,
                latency=args.latency,
                error_500_rate=third,
                error_502_rate=third,
                error_503_rate=third,
                error_429_rate=args.throttle_rate,
                seed=args.seed,
            ),
            rate_limit,
            args.parallelism,
        )
        describe(faulted, cap)

        fraction = clean.steady_rate() / cap
        throttled = clean.throttled / clean.total if clean.total else float("nan")
        ratio = faulted.span / clean.span
        wall_ratio = faulted.wall / clean.wall
        print("\nfigures")
        print(
            f"  clean achieved rate     {clean.steady_rate():7.1f}/s = {fraction:.3f} of the cap"
            f" after the first 5% of calls   (>= {TARGET_RATE_FRACTION}: "
            f"{verdict(fraction >= TARGET_RATE_FRACTION)})"
        )
        print(
            f"{'':26}{clean.rate():7.1f}/s = {clean.rate() / cap:.3f} of the cap"
            " over the whole calls phase (reads high: see steady_rate)"
        )
        print(
            f"  clean throttled share   {throttled:7.2%} ({clean.throttled} of {clean.total} calls)"
            f"   (<= {TARGET_THROTTLED_SHARE:.0%}: {verdict(throttled <= TARGET_THROTTLED_SHARE)})"
        )
        print(
            f"  faulted / clean time    {ratio:7.3f} (calls phase {faulted.span:.2f} s / "
            f"{clean.span:.2f} s)   (<= {TARGET_FAULTED_RATIO}: "
            f"{verdict(ratio <= TARGET_FAULTED_RATIO)})"
        )
        print(
            f"  faulted / clean wall    {wall_ratio:7.3f} ({faulted.wall:.2f} s / "
            f"{clean.wall:.2f} s, start-up included; for information)"
        )
        print(
            f"  calls per session       clean {clean.total / args.sessions:.3f}, faulted "
            f"{faulted.total / args.sessions:.3f} (ideal with these faults: "
            f"{1 / (1 - args.error_rate - args.throttle_rate):.3f})"
        )
        print(
            f"  faulted accepted rate   {faulted.rate():7.1f}/s = {faulted.rate() / cap:.3f}"
            " of the cap (every injected failure also spends a token of the cap)"
        )
        converged = clean.exit_code == 0 and faulted.exit_code == 0
        print(
            f"  sanity: both applies exit 0: {'ok' if converged else 'NO, the figures are suspect'}"
        )
    finally:
        if args.keep:
            print(f"\n(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
