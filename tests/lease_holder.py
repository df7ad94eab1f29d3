"""A leader for the lease tests, in a process of its own (so a test can SIGSTOP it).

    python tests/lease_holder.py URL SCHEMA LEASE_SECONDS

Prints `leading <backend pid>` once it holds the lease, then `ok <monotonic time>` after each
verify() that succeeded, and `lost <monotonic time> <reason>` (exit 3) at the first that failed.
CLOCK_MONOTONIC is system-wide on Linux, so the test can compare these times with its own.
"""

from __future__ import annotations

import sys
import time

from reconciler.daemon.lease import LeaderLease
from reconciler.errors import LockLost
from reconciler.state.postgres import PostgresStateStore


def main() -> int:
    url, schema, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = PostgresStateStore(url, schema=schema)
    leader = LeaderLease(store, lease=lease, command="lease-holder")
    while not leader.try_acquire():
        time.sleep(0.1)
    print(f"leading {leader.backend_pid}", flush=True)
    try:
        while True:
            leader.verify()
            print(f"ok {time.monotonic()}", flush=True)
            time.sleep(0.05)
    except LockLost as lost:
        print(f"lost {time.monotonic()} {lost}", flush=True)
        return 3
    finally:
        leader.release()
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
