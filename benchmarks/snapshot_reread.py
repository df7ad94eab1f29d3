"""The daemon's incremental re-read of the desired set (reconciler.daemon.snapshot).

Writes SESSIONS sessions over FILES manifests (plan_scale.py's generator), then measures with
process CPU time:
  1. the first, full read through DesiredReader (every file parsed and validated);
  2. a no-change re-read (every file read and hashed, none parsed): the part of a no-change
     resync pass that reads the files, target <= 50 ms CPU for 10,000 sessions in 100 files
     (the issue's budget for the whole pass without observe calls);
  3. a re-read after one file changed (one file parsed and validated again).
Prints figures beside targets; never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan_scale import verdict, write_manifests

from reconciler.daemon.snapshot import DesiredReader

NO_CHANGE_TARGET_MS = 50.0


def cpu_ms(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return (time.process_time() - start) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="500 sessions in 10 files")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.files, args.runs = 500, 10, 5
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "desired"
        written = write_manifests(root, args.sessions, args.files)
        print(f"{args.sessions} sessions in {args.files} files, {sum(written.values()):,} bytes")
        reader = DesiredReader([str(root)])
        first = cpu_ms(reader.read)
        print(f"first read (all parsed and validated): {first:.0f} ms CPU")
        unchanged = [cpu_ms(reader.read) for _ in range(args.runs)]
        p50 = statistics.median(unchanged)
        worst = max(unchanged)
        ok = p50 <= NO_CHANGE_TARGET_MS
        print(
            f"no-change re-read: p50 {p50:.1f} ms, max {worst:.1f} ms CPU over {args.runs} runs"
            f" (target <= {NO_CHANGE_TARGET_MS:.0f} ms: {verdict(ok)})"
        )
        victim = sorted(root.iterdir())[0]
        original = victim.read_text(encoding="utf-8")
        edits: list[float] = []
        for index in range(args.runs):
            edited = original.replace("How can I help?", f"How can I help ({index})?", 1)
            victim.write_text(edited, encoding="utf-8")
            start = time.process_time()
            changed = reader.read()
            edits.append((time.process_time() - start) * 1000)
            if changed.parsed != (str(victim),):
                print(f"expected exactly {victim.name} parsed again, got {changed.parsed}")
                return 1
        print(f"one file changed: p50 {statistics.median(edits):.1f} ms CPU")
        result = reader.read()
        if not result.valid:
            print(f"the generated set is invalid (a bug in the generator): {result.problems[0]}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
