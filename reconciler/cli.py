"""The command line: parse arguments, call the shell, turn errors into messages and exit codes.

Exit codes: see exit_codes.py (DESIGN.md's contract).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reconciler import (
    __version__,
    cli_help,
    exit_codes,
    probe_command,
    token_command,
    watch_command,
)
from reconciler.core.selection import Requirement, SelectorError, parse_selector
from reconciler.errors import ReconcilerError, UsageError, ValidationFailed
from reconciler.option_types import boolean, non_negative_float, non_negative_int, port, rate

_HELP = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Make the running AI voice-agent sessions match the ones declared in files.",
        epilog=cli_help.TOP,
        formatter_class=_HELP,
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check manifests; every problem at once",
        description="Check manifests against the schemas and the cross-file rules.",
        epilog=cli_help.VALIDATE,
        formatter_class=_HELP,
    )
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one line per problem on stderr; json: one document on stdout "
        "(default: %(default)s)",
    )

    plan = commands.add_parser(
        "plan",
        help="show what apply would do",
        description="Diff the declared sessions against the records and print the plan.",
        epilog=cli_help.PLAN,
        formatter_class=_HELP,
    )
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
    _refresh_option(plan)

    apply = commands.add_parser(
        "apply",
        help="make the cloud match the files (or a saved plan)",
        description="Plan (or load a saved plan), confirm, and make the calls.",
        epilog=cli_help.APPLY,
        formatter_class=_HELP,
    )
    apply.add_argument("paths", nargs="+", metavar="PATH|PLANFILE")
    apply.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    apply.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one document on stdout at the end (the plan, each result, the counts, "
        "the exit code) and nothing else there; needs --auto-approve (default: %(default)s)",
    )
    apply.add_argument(
        "--adopt-running",
        action="store_true",
        help="a Start answered 'already started' takes over that running task as it is "
        "(after losing the state); by default it is an error for that session",
    )
    _guard_options(apply)
    _selection_options(apply)
    _refresh_option(apply)
    probe_command.add_apply_options(apply)

    state = commands.add_parser(
        "state",
        help="inspect and edit the records",
        description="Inspect and edit the records of what reconciler started.",
        epilog=cli_help.STATE,
        formatter_class=_HELP,
    )
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

    emulator = commands.add_parser(
        "emulator",
        help="run the local cloud stand-in",
        description="A local, signature-checking stand-in of the Volcengine and Alibaba Cloud "
        "APIs, both on one port.",
        epilog=cli_help.EMULATOR,
        formatter_class=_HELP,
    )
    emulator.add_argument(
        "--port",
        type=port,
        metavar="N",
        help="port on 127.0.0.1, 0 picks a free one "
        "(default: RECONCILER_EMULATOR__PORT, else 8790)",
    )
    emulator.add_argument(
        "--access-key-id",
        metavar="ID",
        help="the access key id it accepts, on both clouds "
        "(default: RECONCILER_EMULATOR__ACCESS_KEY_ID, else AKLTemulator)",
    )
    emulator.add_argument(
        "--secret-access-key",
        metavar="KEY",
        help="the secret key it checks signatures with, on both clouds "
        "(default: RECONCILER_EMULATOR__SECRET_ACCESS_KEY, else emulator-secret)",
    )
    emulator.add_argument(
        "--artc-app-id",
        metavar="ID",
        help="the ARTC app whose AuthTokens Alibaba Cloud agents must carry "
        "(default: RECONCILER_ALIYUN__ARTC_APP_ID, else artc-emulator-app)",
    )
    emulator.add_argument(
        "--artc-app-key",
        metavar="KEY",
        help="the key it checks those AuthTokens with "
        "(default: RECONCILER_ALIYUN__ARTC_APP_KEY, else artc-emulator-key)",
    )
    emulator.add_argument(
        "--aliyun-finish-after",
        type=non_negative_float,
        metavar="SECONDS",
        default=None,
        help="Alibaba Cloud agent instances finish by themselves this long after their Start, "
        "as an idle timeout would (default: %(default)s, never)",
    )
    emulator.add_argument(
        "--region",
        help="the signing region it expects (default: RECONCILER_VOLCENGINE__REGION, "
        "else cn-north-1)",
    )
    emulator.add_argument(
        "--api-version",
        help="the API version it serves (default: RECONCILER_VOLCENGINE__API_VERSION, "
        "else 2024-12-01)",
    )
    emulator.add_argument(
        "--qps",
        type=non_negative_float,
        metavar="Q",
        default=0.0,
        help="account-wide calls per second before 429 FlowLimitExceeded, 0 for no cap "
        "(default: %(default)s)",
    )
    emulator.add_argument(
        "--latency",
        type=non_negative_float,
        metavar="SECONDS",
        default=0.0,
        help="seconds added to each API call (default: %(default)s)",
    )
    emulator.add_argument(
        "--error-rate",
        type=rate,
        metavar="R",
        default=0.0,
        help="share of calls answered 500/502/503 without taking effect (default: %(default)s)",
    )
    emulator.add_argument(
        "--throttle-rate",
        type=rate,
        metavar="R",
        default=0.0,
        help="share of calls throttled without taking effect: Volcengine 429, Alibaba Cloud "
        "400 Throttling.User (default: %(default)s)",
    )
    emulator.add_argument(
        "--lost-response-rate",
        type=rate,
        metavar="R",
        default=0.0,
        help="share of calls that take effect, then lose the answer (connection closed) "
        "(default: %(default)s)",
    )
    emulator.add_argument(
        "--late-504-rate",
        type=rate,
        metavar="R",
        default=0.0,
        help="share of calls that take effect, then answer 504 (default: %(default)s)",
    )
    emulator.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=None,
        help="seed of the fault draws, for a repeatable run (default: %(default)s, random)",
    )
    emulator.add_argument(
        "--custom-llm",
        action="store_true",
        help="also serve a reference CustomLLM endpoint (contract-exact SSE) at "
        "/custom-llm/v1/chat/completions on the same port (default: off)",
    )
    emulator.add_argument(
        "--custom-llm-reply",
        metavar="TEXT",
        help="what the CustomLLM endpoint answers (default: an echo of the last user turn)",
    )
    emulator.add_argument(
        "--custom-llm-api-key",
        metavar="KEY",
        help="the Bearer token the CustomLLM endpoint requires (default: any)",
    )
    probe_command.add_parser(commands)
    token_command.add_parser(commands)
    watch_command.add_parser(commands, _guard_options)
    return parser


def _refresh_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="ask the providers that can see the cloud (Aliyun) what became of each record "
        "before planning; --refresh=false plans from the records alone (default: true)",
    )


def _guard_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="allow stopping every session when the desired set is empty",
    )
    parser.add_argument(
        "--max-stops",
        type=non_negative_int,
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


class _VersionAction(argparse.Action):
    """`--version`, looked up only when asked for: reading the installed metadata scans
    sys.path, which every other command would pay for at start-up."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        shown = "show program's version number and exit"
        super().__init__(option_strings, dest, nargs=0, help=shown)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"reconciler {_version()}")
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("reconciler")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return __version__


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Combinations of options that no single `type=` check can see."""
    if args.command == "apply" and args.format == "json" and not args.auto_approve:
        # As Terraform's `apply -json`: the plan is not shown, so there is nothing to confirm.
        return "apply: error: --format json needs --auto-approve"
    if args.command == "emulator":
        rates = (args.error_rate, args.throttle_rate, args.lost_response_rate, args.late_504_rate)
        if sum(rates) > 1.0 + 1e-9:  # the tolerance Faults allows for float sums
            return (
                "emulator: error: --error-rate, --throttle-rate, --lost-response-rate and "
                "--late-504-rate are shares of the same calls and must sum to at most 1"
            )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        misuse = _usage_problem(args)
        if misuse is not None:
            print(f"reconciler {misuse}", file=sys.stderr)
            return exit_codes.USAGE
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
        return exit_codes.INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    # Commands import their modules lazily: `validate` and `plan` stay quick to start.
    if args.command == "validate":
        from reconciler.commands import validate

        return validate(args.paths, args.format)
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
    if args.command == "probe":
        return probe_command.probe(args)
    if args.command == "token":
        return token_command.token(args)
    if args.command == "watch":
        return watch_command.watch(args)
    raise AssertionError(f"unhandled command {args.command}")
