"""`reconciler watch PATH...`: the daemon (daemon/controller.py), built from the settings.

Flags: --resync SECONDS (60), --listen HOST:PORT (setting `listen`, 127.0.0.1:9430),
--lease SECONDS (15, PostgreSQL state), --grace SECONDS (20), --log-format text|json, the
guards (--max-stops, --allow-empty) and --probe, as for apply. Exit 0 after a clean
SIGTERM/SIGINT; 1 when it cannot start (bad settings, the SQLite state held by another).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from reconciler import cli_help
from reconciler.option_types import non_negative_float, positive_float
from reconciler.probe_command import add_apply_options


def add_parser(commands: Any, guard_options: Callable[[argparse.ArgumentParser], None]) -> None:
    watch = commands.add_parser(
        "watch",
        help="run as a daemon: reconcile on every change, on a timer, on SIGHUP and callbacks",
        description="Keep the declared sessions running: reconcile whenever a file changes, "
        "every --resync seconds (observing the cloud), on SIGHUP and on the clouds' event "
        "callbacks; serve /healthz, /readyz, /metrics, /status and the callbacks on --listen.",
        epilog=cli_help.WATCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("paths", nargs="+", metavar="PATH")
    watch.add_argument(
        "--resync",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between full passes that observe every record (default: 60)",
    )
    watch.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="the HTTP address (default: setting listen, 127.0.0.1:9430; port 0: any free one)",
    )
    watch.add_argument(
        "--lease",
        type=positive_float,
        default=15.0,
        metavar="SECONDS",
        help="PostgreSQL state: how soon a frozen or cut-off leader loses the lead (default: 15)",
    )
    watch.add_argument(
        "--grace",
        type=non_negative_float,
        default=20.0,
        metavar="SECONDS",
        help="on SIGTERM, how long the calls in flight may take to finish (default: 20)",
    )
    watch.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON objects (default: text)",
    )
    guard_options(watch)
    add_apply_options(watch)


def watch(args: argparse.Namespace) -> int:
    # The daemon's libraries (watchfiles, prometheus-client, structlog) load only for it.
    from reconciler.daemon.service import watch as run_watch

    return run_watch(args)
