"""Benchmark: start-up of `reconciler plan` and `validate` on a small directory, against a floor.

What it does (in a temporary directory, removed at the end unless --keep):
  1. writes 3 sessions in one JSON manifest (the same generator as plan_scale.py: file-level
     defaults, secrets as ${env:...} references) and creates an empty SQLite state;
  2. runs, as fresh processes with their output to /dev/null, interleaved round by round so
     that a change of load hits every command alike:
        floor     `python -c "import pydantic_settings"`: the settings library the project must
                  use, so no command can start faster than this
        plan      `python -m reconciler plan --detailed-exitcode DIR` (SQLite state)
        validate  `python -m reconciler validate DIR`
     Each child is started by the same bare `python -S` launcher as plan_scale.py, which times
     the child alone and reads its own peak RSS from os.wait4;
  3. prints the best and the median of --runs for each, each ratio to the floor beside the
     target (at most 1.5x) and `target met` / `target MISSED`. The verdict is on the best
     runs (as in plan_scale.py); the median ratio is printed beside it.

Prints figures, never asserts; exits 0 even when a target is missed.
    python benchmarks/startup.py              # 21 runs of each (~25 s)
    python benchmarks/startup.py --quick      # 5 runs of each, for CI
    python benchmarks/startup.py --profile    # also the slowest imports of a plan (-X importtime)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plan_scale import PYTHON, base_env, run_measured, write_manifests

TARGET_RATIO = 1.5
SESSIONS = 3


def verdict(ratio: float) -> str:
    return "target met" if ratio <= TARGET_RATIO else "target MISSED"


def import_profile(argv: list[str], env: dict[str, str], cwd: Path, top: int) -> None:
    """The imports of one run with the largest cumulative time (`python -X importtime`)."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", *argv[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        text=True,
        check=False,
    )
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        rows.append((int(cumulative), int(own), name.rstrip()))
    print(f"\n--- -X importtime of `{' '.join(argv[3:5])}`, top {top} by cumulative time ---")
    print(f"{'cumulative ms':>14}{'own ms':>9}  module")
    for cumulative, own, name in sorted(rows, reverse=True)[:top]:
        print(f"{cumulative / 1000:>14.1f}{own / 1000:>9.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command (default 21)")
    parser.add_argument("--quick", action="store_true", help="5 runs of each")
    parser.add_argument("--profile", action="store_true", help="print the slowest imports")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 5)
    work = Path(tempfile.mkdtemp(prefix="reconciler-startup-"))
    try:
        return _run(args, work)
    finally:
        if args.keep:
            print(f"\n(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    manifests = work / "desired"
    written = write_manifests(manifests, SESSIONS, 1)
    state = work / "state.db"
    from reconciler.state.sqlite import SqliteStateStore

    SqliteStateStore(state).close()  # migrated before timing, as a user's state would be
    env = base_env(state)
    print(f"startup  {time.strftime('%Y-%m-%d %H:%M')}  python {sys.version.split()[0]}")
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"desired set: {SESSIONS} sessions in 1 file ({sum(written.values())} bytes), {work}")
    print("bytecode cached as a user's interpreter does (PYTHONDONTWRITEBYTECODE cleared)")

    commands = {
        "floor": [PYTHON, "-c", "import pydantic_settings"],
        "plan": [PYTHON, "-m", "reconciler", "plan", "--detailed-exitcode", str(manifests)],
        "validate": [PYTHON, "-m", "reconciler", "validate", str(manifests)],
    }
    expected = {"floor": 0, "plan": 2, "validate": 0}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, int] = dict.fromkeys(commands, 0)
    codes: dict[str, set[int]] = {name: set() for name in commands}
    for argv in commands.values():  # one unmeasured run each: warm the page cache
        run_measured(argv, env, work)
    for _ in range(args.runs):
        for name, argv in commands.items():
            wall, code, peak = run_measured(argv, env, work)
            walls[name].append(wall)
            rss[name] = max(rss[name], peak)
            codes[name].add(code)

    best = {name: min(values) for name, values in walls.items()}
    median = {name: statistics.median(values) for name, values in walls.items()}
    header = f"{'run':<10}{'best s':>9}{'median s':>10}{'x floor':>9}{'(median)':>10}"
    print(f"\n{header}{'peak RSS':>10}")
    for name in commands:
        ratio = best[name] / best["floor"]
        line = (
            f"{name:<10}{best[name]:>9.3f}{median[name]:>10.3f}{ratio:>9.2f}"
            f"{median[name] / median['floor']:>10.2f}{rss[name] / 1024:>7.0f} MB"
        )
        if name != "floor":
            line += f"   <= {TARGET_RATIO:g}x floor: {verdict(ratio)}"
        print(line)
    print(f"({args.runs} runs of each, interleaved; verdict on the best runs)")
    sane = all(codes[name] == {code} for name, code in expected.items())
    seen = ", ".join(f"{name} {sorted(codes[name])}" for name in commands)
    print(
        f"sanity: exit codes {seen} (expected floor 0, plan 2, validate 0): "
        f"{'ok' if sane else 'UNEXPECTED, the figures above are suspect'}"
    )
    if args.profile:
        import_profile(commands["plan"], env, work, 25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
