"""The plan as a pull-request comment: counts first, then one line per action, then details in
collapsible blocks — never longer than GitHub's comment limit, however large the plan.

When the plan does not fit, the tail is cut at an action boundary and a last line says how many
actions are not shown and where the whole plan is (the JSON plan artifact).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from reconciler.core.normalize import SensitivePaths
from reconciler.core.plan import Action, Plan
from reconciler.core.render import (
    SYMBOLS,
    describe_change,
    not_played_line,
    spec_lines,
    summary_line,
)

GITHUB_COMMENT_LIMIT = 65_535
_ROOM_FOR_NOTE = 400  # kept free for the truncation note


def render_markdown(
    plan: Plan,
    sensitive: Mapping[str, SensitivePaths],
    artifact: str | None = None,
    limit: int = GITHUB_COMMENT_LIMIT,
) -> str:
    budget = limit - _ROOM_FOR_NOTE
    summary = plan.summary
    head = [f"### reconciler plan — {summary_line(plan)}", ""]
    head += [
        "| action | sessions |",
        "|---|---:|",
        f"| start | {summary.create} |",
        f"| restart (cuts the live conversation) | {summary.replace} |",
        f"| stop | {summary.delete} |",
        f"| update in place | {summary.update} |",
        f"| kept: protected (no longer declared) | {summary.keep} |",
        f"| unchanged | {summary.noop} |",
        "",
    ]
    if plan.violations:
        head.append("**Refused — this plan must not be applied:**")
        head += [f"- {violation}" for violation in plan.violations]
        head.append("")
    head += [f"> {note}" for note in plan.notes]
    text = "\n".join(head) + "\n"
    changes = plan.changes
    lines = [_action_line(action) for action in changes]
    # Kept sessions are listed (they are what the reader must not miss) but are not changes;
    # they may take at most half of the comment, so the changes are always shown too.
    if plan.kept:
        text += "#### Kept running\n\n"
        listed = 0
        for action in plan.kept:
            line = _action_line(action) + "\n"
            if len(text) + len(line) > budget // 2:
                break
            text += line
            listed += 1
        if listed < len(plan.kept):
            text += f"- _… {len(plan.kept) - listed} more kept sessions not shown._\n"
        text += "\n"
    shown = 0
    if changes:
        text += "#### Actions\n\n"
        for line in lines:
            if len(text) + len(line) + 1 > budget:
                break
            text += line + "\n"
            shown += 1
    details_shown = 0
    if shown == len(changes) and changes:
        text += "\n#### Details\n\n"
        for action in changes:
            block = _details(action, sensitive)
            if len(text) + len(block) > budget:
                break
            text += block
            details_shown += 1
    if shown < len(changes) or details_shown < len(changes):
        where = (
            f"the JSON plan artifact `{artifact}`"
            if artifact
            else "`reconciler plan --format json`"
        )
        missing = len(changes) - (shown if shown < len(changes) else details_shown)
        what = "actions" if shown < len(changes) else "action details"
        text += (
            f"\n_… {missing} more {what} not shown: the comment limit is {limit:,} characters. "
            f"The whole plan is in {where}._\n"
        )
    return text


def _action_line(action: Action) -> str:
    cut = " — **cuts the live conversation**" if action.cuts_conversation else ""
    return (
        f"- `{SYMBOLS[action.kind]}` **{action.kind.value}** `{action.name}` "
        f"({action.provider} `{action.identity}`): {_inline(action.reason)}{cut}"
    )


def _details(action: Action, sensitive: Mapping[str, SensitivePaths]) -> str:
    body = [f"{SYMBOLS[action.kind]} {action.kind.value} {action.name}", f"  {action.reason}"]
    body += [f"  ~ {change.path}: {describe_change(change)}" for change in action.field_changes]
    body += [
        f"  > announce {a.id} (interrupt_mode {a.interrupt_mode}): {a.message}"
        for a in action.announcements
    ]
    body += [f"  {not_played_line(action)}"] if action.not_played else []
    body += [f"  {line}" for line in spec_lines(action, sensitive)]
    content = "\n".join(body)
    fence = "`" * max(3, _longest_backtick_run(content) + 1)
    return (
        f"<details><summary>{SYMBOLS[action.kind]} {action.kind.value} {action.name}</summary>\n\n"
        f"{fence}\n{content}\n{fence}\n</details>\n\n"
    )


def _inline(text: str) -> str:
    return text.replace("`", "'").replace("\n", " ")


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)
