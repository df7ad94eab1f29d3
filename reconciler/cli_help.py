"""What each subcommand's `--help` says beyond its options: PATH, exit codes, settings read.

Kept apart from cli.py so the parser stays readable; README.md's tables say the same things.
"""

from __future__ import annotations

PATHS = """\
PATH: manifest files (.json, .toml, .yaml, .yml) or directories. Directories are walked
recursively in a stable (sorted) order; hidden files and directories, and what a
.reconcilerignore at a directory's top excludes, are skipped. A file named explicitly is read
whatever its suffix."""

SETTINGS = """\
Settings come from the environment (prefix RECONCILER_, nested with __) or from a
reconciler.toml in the working directory."""

COMMON_EXITS = """\
  2    usage error (unknown option, bad option value): nothing was read or called
  130  interrupted (Ctrl-C)"""

TOP = f"""\
exit codes (every command):
  0    success
  1    error: bad input, unusable settings or state, lock held, refused plan
{COMMON_EXITS}
  plan --detailed-exitcode uses 2 for "there are changes"; apply uses 3 for "partly applied".

{SETTINGS}
Run `reconciler COMMAND --help` for what each command reads and how it exits."""

VALIDATE = f"""\
{PATHS}

Every problem is reported at once, one line each on stderr, as
  FILE[:LINE]: /json/pointer: message
(--format json prints them as one JSON document on stdout instead).

exit codes:
  0    every file is valid
  1    a problem was found (or a PATH cannot be read)
{COMMON_EXITS}

settings read: none; validate reads only the files (no state, no credentials, no secrets)."""

PLAN = f"""\
{PATHS}

The plan and its notes go to stdout; messages about files written go to stderr.

exit codes:
  0    success (with --detailed-exitcode: no changes)
  1    error: invalid files, unreadable state, a guard tripped, the plan could not be saved
  2    with --detailed-exitcode: the plan has changes (also argparse's usage error)
{COMMON_EXITS.splitlines()[1]}

settings read: RECONCILER_STATE, RECONCILER_MAX_STOPS; the ${{env:...}} and ${{file:...}}
references of the files where they resolve here (they are compared by name where not).
No cloud credential is needed: plan makes no call.
{SETTINGS}"""

APPLY = f"""\
{PATHS}
PLANFILE: a plan saved by `reconciler plan --out FILE`; it is applied exactly as reviewed,
without reading any manifest, and refused when stale.

exit codes:
  0    converged (also: nothing to do)
  1    nothing done: invalid files, lock held, stale plan, guard tripped, every call failed
  3    partly applied: some sessions applied, some failed
{COMMON_EXITS}

settings read: RECONCILER_STATE, RECONCILER_VOLCENGINE__ENDPOINT, __REGION, __API_VERSION,
__ACCESS_KEY_ID, __SECRET_ACCESS_KEY, __SESSION_TOKEN (or VOLC_ACCESSKEY / VOLC_SECRETKEY),
__TIMEOUT, RECONCILER_PARALLELISM, RECONCILER_RATE_LIMIT, RECONCILER_MAX_STOPS,
RECONCILER_MAX_ATTEMPTS, RECONCILER_MAX_RETRY_SECONDS, RECONCILER_PLAN_MAX_AGE; every secret
reference of the files must resolve.
{SETTINGS}"""

WATCH = f"""\
{PATHS}

Runs until SIGTERM or SIGINT; SIGHUP reconciles at once. While any file is invalid nothing at
all is done (the last good set stays the truth). With PostgreSQL state any number of replicas
may run: one leads, the others stand by. With SQLite state exactly one daemon runs.

exit codes:
  0    stopped by SIGTERM/SIGINT after the calls in flight finished (within --grace)
  1    cannot start: unusable settings, the --listen address taken, a SQLite state held by
       another daemon or apply (the holder is named)
  2    usage error (unknown option, bad option value): nothing was read or called
  130  a second signal: stopped at once (the journal is safe; the next run finishes it)

settings read: everything apply reads, and RECONCILER_LISTEN,
RECONCILER_VOLCENGINE__CALLBACK_SECRET and RECONCILER_ALIYUN__CALLBACK_TOKEN (without them,
that cloud's callbacks are refused with 401).
{SETTINGS}"""

STATE = f"""\
exit codes:
  0    done
  1    error: no such record, unreadable state, lock held
{COMMON_EXITS}

settings read: RECONCILER_STATE (a SQLite file path or a postgresql:// URL).
{SETTINGS}"""

EMULATOR = f"""\
Serves the Volcengine and the Alibaba Cloud (ICE AI agent) APIs on one port of 127.0.0.1
until SIGINT or SIGTERM; a request with an x-acs-action header is Alibaba Cloud's. The first
stdout line says where ("emulator listening on http://127.0.0.1:PORT"). GET /_emulator/tasks
and /_emulator/calls show Volcengine's tasks and calls; GET /_emulator/aliyun/instances and
/_emulator/aliyun/calls show Alibaba Cloud's.

exit codes:
  0    stopped by SIGINT or SIGTERM
  1    cannot listen (the port is in use)
  2    usage error (bad option value, fault rates summing over 1)

settings read: RECONCILER_EMULATOR__PORT, RECONCILER_EMULATOR__ACCESS_KEY_ID,
RECONCILER_EMULATOR__SECRET_ACCESS_KEY, RECONCILER_VOLCENGINE__REGION,
RECONCILER_VOLCENGINE__API_VERSION, RECONCILER_ALIYUN__ARTC_APP_ID,
RECONCILER_ALIYUN__ARTC_APP_KEY (each overridden by its option).
{SETTINGS}"""
