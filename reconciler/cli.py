"""The command line: parse arguments, call the shell, turn errors into messages and exit codes.

Exit codes: see exit_codes.py (DESIGN.md's contract).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reconciler import exit_codes
from reconciler.core.selection import Requirement, SelectorError, parse_selector
from reconciler.errors import ReconcilerError, UsageError, ValidationFailed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Make the running AI voice-agent sessions match the ones declared in files.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check manifests; every problem at once")
    validate.add_argument("paths", nargs="+", metavar="PATH")

    plan = commands.add_parser("plan", help="show what apply would do")
    plan.add_argument("paths", nargs="+", metavar="PATH")
    plan.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    plan.add_argument("--out", metavar="FILE", help="save the plan for `apply FILE`")
    plan.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on error",
    )
    _guard_options(plan)
    _selection_options(plan)

    apply = commands.add_parser("apply", help="make the cloud match the files (or a saved plan)")
    apply.add_argument("paths", nargs="+", metavar="PATH|PLANFILE")
    apply.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    apply.add_argument(
        "--adopt-running",
        action="store_true",
        help="a Start answered 'already started' takes over that running task as it is "
        "(after losing the state); by default it is an error for that session",
    )
    _guard_options(apply)
    _selection_options(apply)

    state = commands.add_parser("state", help="inspect and edit the records")
    state_commands = state.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    state_list = state_commands.add_parser("list", help="every recorded session")
    state_list.add_argument("--format", choices=("text", "json"), default="text")
    state_show = state_commands.add_parser("show", help="one record in full")
    state_show.add_argument("name")
    state_rm = state_commands.add_parser(
        "rm", help="forget a record WITHOUT stopping its session (it keeps running, untracked)"
    )
    state_rm.add_argument("name")
    state_mv = state_commands.add_parser(
        "mv", help="rename a record WITHOUT touching its session (no stop, no start)"
    )
    state_mv.add_argument("old", metavar="OLD")
    state_mv.add_argument("new", metavar="NEW")
    state_commands.add_parser(
        "unlock", help="take the writer lock from a hung holder (PostgreSQL); it stops at once"
    )

    emulator = commands.add_parser("emulator", help="run the local cloud stand-in")
    emulator.add_argument("--port", type=int, help="port on 127.0.0.1 (0 picks a free one)")
    emulator.add_argument("--access-key-id")
    emulator.add_argument("--secret-access-key")
    emulator.add_argument("--region")
    emulator.add_argument("--api-version")
    emulator.add_argument("--qps", type=float, default=0.0, help="account QPS cap (0: none)")
    emulator.add_argument("--latency", type=float, default=0.0, help="seconds added to each call")
    emulator.add_argument("--error-rate", type=float, default=0.0, help="share of 5xx answers")
    emulator.add_argument("--throttle-rate", type=float, default=0.0, help="share of 429 answers")
    emulator.add_argument("--lost-response-rate", type=float, default=0.0)
    emulator.add_argument("--late-504-rate", type=float, default=0.0)
    emulator.add_argument("--seed", type=int, default=None)
    return parser


def _guard_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="allow stopping every session when the desired set is empty",
    )
    parser.add_argument(
        "--max-stops",
        type=int,
        metavar="N",
        help="refuse a plan that stops more than N running sessions (default: setting max_stops)",
    )


def _selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-l",
        "--selector",
        action="append",
        default=[],
        type=_selector,
        metavar="SELECTOR",
        help="only sessions whose labels match (k=v, k==v, k!=v, k, !k; comma or repeat = AND)",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        help="only this session (repeatable); others are left untouched",
    )


def _selector(text: str) -> tuple[Requirement, ...]:
    try:
        return parse_selector(text)
    except SelectorError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except UsageError as error:
        print(f"reconciler {args.command}: error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except ValidationFailed as failed:
        for problem in failed.problems:
            print(problem, file=sys.stderr)
        count = len(failed.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found.", file=sys.stderr)
        return exit_codes.ERROR
    except ReconcilerError as error:
        # One "error:" per problem; an indented line continues the problem above it.
        for line in str(error).splitlines() or [type(error).__name__]:
            print(line if line[:1].isspace() else f"error: {line}", file=sys.stderr)
        return exit_codes.ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exit_codes.ERROR


def _dispatch(args: argparse.Namespace) -> int:
    # Commands import their modules lazily: `validate` and `plan` stay quick to start.
    if args.command == "validate":
        from reconciler.commands import validate

        return validate(args.paths)
    if args.command == "plan":
        from reconciler.commands import plan

        return plan(args)
    if args.command == "apply":
        from reconciler.apply_command import apply

        return apply(args)
    if args.command == "state":
        from reconciler.commands import state

        return state(args)
    if args.command == "emulator":
        from reconciler.commands import emulator

        return emulator(args)
    raise AssertionError(f"unhandled command {args.command}")
