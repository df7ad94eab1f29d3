"""The exit codes of the user-facing contract (DESIGN.md), in one place."""

OK = 0  # success; `plan --detailed-exitcode`: no changes; `apply`: converged
ERROR = 1  # bad input, lock held, stale plan, guard tripped; `apply`: nothing done
USAGE = 2  # bad command-line usage (argparse's own exit code)
CHANGES = 2  # `plan --detailed-exitcode` only: the plan has changes
PARTIAL = 3  # `apply` only: some sessions applied, some failed
USAGE = 2  # argparse's usage error: unknown option, bad option value (nothing read or called)
INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report 128 + 2
