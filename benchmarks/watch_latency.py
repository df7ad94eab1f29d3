"""The daemon's reaction time, the cost of a pass that changes nothing, and its memory.

Declares SESSIONS Volcengine sessions over FILES manifests (plan_scale.py's generator), starts
the emulator in this process and `reconciler watch` in its own, waits for it to start them all,
then measures:
  1. latency: EDITS times, one session is added to an existing manifest by an atomic write
     (write a temporary file, rename it over the manifest); the time from the rename to the
     emulator receiving that session's StartVoiceChat. p50 / p95; target p95 <= 150 ms.
  2. no-change pass CPU: SIGHUP passes (level-triggered: read every file, every record, plan;
     Volcengine has nothing to observe, so no call), the daemon's own CPU time (utime+stime
     from /proc) per pass; target <= 50 ms.
  3. memory: the daemon's RSS after 100 and after PASSES passes; target <= 200 MB and not
     growing after the first 100.
Prints figures beside targets; never asserts. Stops the daemon (by its pid) and the emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan_scale import EMULATOR_KEY_ID, EMULATOR_SECRET, base_env, verdict, write_manifests

from reconciler.emulator.api import ApiRequest
from reconciler.emulator.server import EmulatorServer

LATENCY_P95_TARGET_MS = 150.0
PASS_CPU_TARGET_MS = 50.0
RSS_TARGET_MB = 200.0
RSS_GROWTH_ALLOWED = 1.05  # "not growing": within 5% of the figure after 100 passes


class Arrivals:
    """When the emulator received each StartVoiceChat, by TaskId (the same clock as ours)."""

    def __init__(self, server: EmulatorServer) -> None:
        self.seen: dict[str, float] = {}
        self.starts = 0
        self._lock = threading.Lock()
        api = server.api
        original = api.handle

        def handle(request: ApiRequest) -> Any:
            if ("Action", "StartVoiceChat") in request.query:
                arrived = time.monotonic()
                task = json.loads(request.body).get("TaskId", "")
                with self._lock:
                    self.starts += 1
                    self.seen.setdefault(task, arrived)
            return original(request)

        api.handle = handle  # type: ignore[method-assign]  # a probe on the wire, nothing else

    def wait_for(self, task: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if task in self.seen:
                    return self.seen[task]
            time.sleep(0.001)
        raise TimeoutError(f"no StartVoiceChat for {task} within {timeout} s")


class Daemon:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.passes = 0
        self.port: int | None = None
        self.tail: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.tail = [*self.tail[-50:], line]
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "listening":
                    self.port = int(event["port"])
                if event.get("event") == "pass":
                    self.passes += 1
                self._changed.notify_all()

    def wait_passes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.passes < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise RuntimeError("the daemon did not pass:\n" + "".join(self.tail))
                self._changed.wait(min(left, 0.5))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def add_session(path: Path, document: dict[str, Any], index: int) -> str:
    """Append one session to the manifest by an atomic write; its TaskId."""
    task = f"edit-{index:04d}"
    template = document["sessions"][0]
    added = json.loads(json.dumps(template))
    added["name"] = f"edit-session-{index:04d}"
    added["spec"]["RoomId"] = f"edit-room-{index:04d}"
    added["spec"]["TaskId"] = task
    added.pop("announcements", None)
    document["sessions"].append(added)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return task


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--passes", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="500 sessions, 10 files, fewer runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.files, args.edits, args.passes = 500, 10, 5, 120
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with (
        tempfile.TemporaryDirectory() as directory,
        EmulatorServer(access_key_id=EMULATOR_KEY_ID, secret_access_key=EMULATOR_SECRET) as server,
    ):
        work = Path(directory)
        root = work / "desired"
        written = write_manifests(root, args.sessions, args.files)
        print(f"{args.sessions} sessions in {args.files} files, {sum(written.values()):,} bytes")
        arrivals = Arrivals(server)
        env = base_env(
            work / "state.db",
            RECONCILER_VOLCENGINE__ENDPOINT=server.url,
            RECONCILER_VOLCENGINE__ACCESS_KEY_ID=EMULATOR_KEY_ID,
            RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY=EMULATOR_SECRET,
            RECONCILER_RATE_LIMIT="100000",
            RECONCILER_PARALLELISM="8",
            RECONCILER_MAX_STOPS="100000",
        )
        argv_ = [
            sys.executable,
            "-m",
            "reconciler",
            "watch",
            str(root),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--resync",
            "86400",
        ]
        started = time.monotonic()
        daemon = Daemon(argv_, env, work)
        try:
            daemon.wait_passes(1, timeout=max(120.0, args.sessions / 50))
            print(
                f"first pass (starts every session): {time.monotonic() - started:.1f} s, "
                f"{arrivals.starts} StartVoiceChat"
            )
            target = root / "team-000.json"
            document = json.loads(target.read_text(encoding="utf-8"))
            latencies: list[float] = []
            for index in range(args.edits):
                passes = daemon.passes
                task = add_session(target, document, index)
                written_at = time.monotonic()
                os.replace(target.with_name(f".{target.name}.tmp"), target)
                arrived = arrivals.wait_for(task, timeout=30)
                latencies.append((arrived - written_at) * 1000)
                daemon.wait_passes(passes + 1, timeout=30)
            p50 = statistics.median(latencies)
            p95 = sorted(latencies)[max(0, round(0.95 * len(latencies)) - 1)]
            print(
                f"file write -> first StartVoiceChat over {len(latencies)} edits: "
                f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(latencies):.0f} ms "
                f"(target p95 <= {LATENCY_P95_TARGET_MS:.0f} ms: "
                f"{verdict(p95 <= LATENCY_P95_TARGET_MS)})"
            )

            def sighup_passes(count: int) -> float:
                """CPU seconds the daemon spent on `count` more SIGHUP passes."""
                cpu = daemon.cpu_seconds()
                for _ in range(count):
                    passes = daemon.passes
                    daemon.process.send_signal(signal.SIGHUP)
                    daemon.wait_passes(passes + 1, timeout=60)
                return daemon.cpu_seconds() - cpu

            first_hundred = min(100, args.passes)
            cpu = sighup_passes(first_hundred)
            per_pass = cpu / first_hundred * 1000
            rss_100 = daemon.rss_mb()
            print(
                f"no-change pass (SIGHUP, no observe calls): {per_pass:.1f} ms CPU per pass "
                f"over {first_hundred} (target <= {PASS_CPU_TARGET_MS:.0f} ms: "
                f"{verdict(per_pass <= PASS_CPU_TARGET_MS)})"
            )
            series = [rss_100]
            for _ in range(max(0, args.passes - first_hundred) // 100):
                sighup_passes(100)
                series.append(daemon.rss_mb())
            sighup_passes(max(0, args.passes - first_hundred) % 100)
            rss_end = daemon.rss_mb()
            print("RSS every 100 passes: " + ", ".join(f"{mb:.0f}" for mb in series) + " MB")
            steady = rss_end <= rss_100 * RSS_GROWTH_ALLOWED
            print(
                f"RSS after {first_hundred} passes {rss_100:.0f} MB, after {args.passes} "
                f"{rss_end:.0f} MB (target <= {RSS_TARGET_MB:.0f} MB and not growing: "
                f"{verdict(rss_end <= RSS_TARGET_MB and steady)})"
            )
        finally:
            code = daemon.stop()
        print(f"daemon exit {code} after SIGTERM")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
