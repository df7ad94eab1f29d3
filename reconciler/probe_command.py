"""`reconciler probe PATH...`, and `apply --probe`: call every CustomLLM endpoint of the desired
set as the platform will, before a session that depends on it is started.

A wrong CustomLLM answer is the commonest silent failure of a Volcengine voice agent: the agent
joins, listens and never speaks. `probe` reads the desired set as `plan` does, resolves the
secrets as `apply` does, probes each distinct endpoint once (concurrently) and prints one line
per session. `apply --probe` removes the starts (creates and restarts) of sessions whose
endpoint failed from the plan, reports each as failed naming the problem, and applies the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler import cli_help, exit_codes
from reconciler.option_types import non_negative_float

if TYPE_CHECKING:
    from reconciler.core.llm_probe import ProbeRequest, ProbeResult, ProbeTarget
    from reconciler.core.plan import Plan
    from reconciler.engine.results import SessionResult

DEFAULT_TIMEOUT = 10.0  # the platform's: it waits 10 s for the answer to start

_EPILOG = f"""\
{cli_help.PATHS}

Each CustomLLM endpoint (LLMConfig.Mode "CustomLLM") is POSTed an OpenAI-style streaming chat
request with the session's model, temperature, top_p, max_tokens, custom and its APIKey as a
Bearer token, once per distinct request however many sessions share it. An answer is good when
it is HTTP 200 within the timeout, Content-Type text/event-stream, every event one data: line
holding a chat.completion.chunk (same id and created on every chunk), ending with data: [DONE].
One line per session on stdout (✓ ok, ✗ the reason, - not probed), then a summary line.

exit codes:
  0    every endpoint answered by the contract (or there was none to probe)
  1    an endpoint failed, or the files are invalid, or a secret reference does not resolve
{cli_help.COMMON_EXITS}

settings read: none; every secret reference of the files must resolve (as for apply).
{cli_help.SETTINGS}"""


def add_parser(commands: Any) -> None:
    probe = commands.add_parser(
        "probe",
        help="check every CustomLLM endpoint of the desired set answers as the platform needs",
        description="Call every CustomLLM endpoint of the desired set the way the platform "
        "will, and judge each answer by the callback contract.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument("paths", nargs="+", metavar="PATH")
    _timeout_option(probe, "--timeout")


def add_apply_options(apply: argparse.ArgumentParser) -> None:
    apply.add_argument(
        "--probe",
        action="store_true",
        help="probe the CustomLLM endpoints first and do not start (or restart) the sessions "
        "whose endpoint fails; they are reported as failed, the rest is applied",
    )
    _timeout_option(apply, "--probe-timeout")


def _timeout_option(parser: argparse.ArgumentParser, flag: str) -> None:
    parser.add_argument(
        flag,
        type=_timeout,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT,
        help="how long an endpoint may take to start answering, and may stay quiet while "
        "streaming (default: %(default)s, the platform's)",
    )


def _timeout(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def probe(args: argparse.Namespace) -> int:
    import asyncio

    from reconciler.core.llm_probe import probe_targets, result_line, summary_line
    from reconciler.providers.registry import provider_rules
    from reconciler.workspace import load_desired, secrets_for

    desired = load_desired(args.paths)
    secrets = secrets_for(desired, strict=True)
    targets = probe_targets(desired, secrets, provider_rules())
    results = asyncio.run(_run(targets, secrets, args.timeout))
    for target in targets:
        result = results.get(target.request) if target.request is not None else None
        print(result_line(target, result))
    print(summary_line(targets, results))
    bad = any(not result.ok for result in results.values())
    return exit_codes.ERROR if bad else exit_codes.OK


async def _run(
    targets: Sequence[ProbeTarget], secrets: Mapping[str, str], timeout: float
) -> dict[ProbeRequest, ProbeResult]:
    from reconciler.core.llm_probe import distinct_requests
    from reconciler.probe import probe_all

    return await probe_all(distinct_requests(targets), timeout, hidden=secrets.values())


async def refuse_failing_endpoints(
    plan: Plan, secrets: Mapping[str, str], timeout: float
) -> tuple[Plan, list[SessionResult]]:
    """`apply --probe`: the plan without the starts whose endpoint failed, and a failed result
    for each of them. A refused restart is not stopped either: the running agent keeps its
    (working or not) endpoint rather than being cut and never coming back."""
    from reconciler.core.llm_probe import probe_targets, result_line
    from reconciler.core.plan import ActionKind
    from reconciler.engine.results import Outcome, SessionResult
    from reconciler.providers.registry import provider_rules

    starting = [
        action
        for action in plan.changes
        if action.kind in (ActionKind.CREATE, ActionKind.REPLACE) and action.desired is not None
    ]
    targets = probe_targets(
        [a.desired for a in starting if a.desired is not None], secrets, provider_rules()
    )
    if not any(target.request is not None for target in targets):
        return plan, []
    results = await _run(targets, secrets, timeout)
    failing: dict[str, str] = {}
    for target in targets:
        if target.request is None:
            continue
        result = results[target.request]
        print(result_line(target, result), file=sys.stderr)
        if not result.ok:
            failing[target.name] = f"{target.shown_url}: {result.problem}"
    refused = [
        SessionResult(
            action.name,
            action.kind.value,
            Outcome.FAILED,
            f"not started: its CustomLLM endpoint failed the probe: {failing[action.name]}",
        )
        for action in starting
        if action.name in failing
    ]
    kept = tuple(
        action for action in plan.actions if not (action.name in failing and action in starting)
    )
    return dataclasses.replace(plan, actions=kept), refused
