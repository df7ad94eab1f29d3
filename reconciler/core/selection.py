"""Which sessions a plan considers: `-l/--selector` (kubectl's equality-based label selectors)
and `--target NAME` (Terraform's -target). Pure: parses text and matches names and labels.

Grammar of one selector (requirements joined by commas, all of which must hold):
    key=value  key==value   the label is present with that value
    key!=value              the label is absent or has another value (as in kubectl)
    key                     the label is present
    !key                    the label is absent
Keys follow the manifest's label-key syntax; values are any text without `,`, `=` or `!`
(surrounding blanks are ignored). Several `-l` flags must all hold too.

A session is in scope when its name is one of the targets (if any are given) and its labels
match every requirement (if any are given). Declared sessions are matched by their declared
labels, records no longer declared by their recorded labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.errors import InputError

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
_REQUIREMENT = re.compile(
    r"\s*(?P<negated>!)?\s*(?P<key>[^=!,\s]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^=!,]*?))?\s*"
)


class SelectorError(InputError):
    """A `-l` selector that cannot be parsed, or a `--target` that names nothing."""


class Operator(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    NOT_EXISTS = "!exists"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.EXISTS:
            return self.key in labels
        if self.operator is Operator.NOT_EXISTS:
            return self.key not in labels
        if self.operator is Operator.EQUALS:
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """The requirements of one `-l` value; SelectorError names the selector and the fault."""
    requirements = []
    for part in text.split(","):
        match = _REQUIREMENT.fullmatch(part)
        if match is None or not part.strip():
            what = "an empty requirement" if not part.strip() else f"{part.strip()!r}"
            raise SelectorError(
                f"invalid selector {text!r}: {what} is not key=value, key!=value, key or !key"
            )
        key, negated, op = match["key"], match["negated"], match["op"]
        if not _KEY.fullmatch(key):
            raise SelectorError(
                f"invalid selector {text!r}: {key!r} is not a label key (1 to 63 characters "
                "among A-Z a-z 0-9 . _ / -, starting with a letter or digit)"
            )
        if negated and op:
            raise SelectorError(
                f"invalid selector {text!r}: {part.strip()!r} negates a comparison; "
                "write key!=value"
            )
        if op is None:
            operator = Operator.NOT_EXISTS if negated else Operator.EXISTS
            requirements.append(Requirement(key, operator))
        else:
            operator = Operator.NOT_EQUALS if op == "!=" else Operator.EQUALS
            requirements.append(Requirement(key, operator, match["value"].strip()))
    return tuple(requirements)


@dataclass(frozen=True, slots=True)
class Selection:
    """The sessions a plan is limited to; the default selects every session."""

    requirements: tuple[Requirement, ...] = ()
    targets: frozenset[str] = frozenset()

    @property
    def limited(self) -> bool:
        return bool(self.requirements or self.targets)

    def includes(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.targets and name not in self.targets:
            return False
        return all(requirement.matches(labels) for requirement in self.requirements)

    def check_targets(self, known: Iterable[str]) -> None:
        """Every --target must name a declared or recorded session: a typo must not quietly
        plan nothing."""
        unknown = sorted(self.targets - set(known))
        if unknown:
            names = ", ".join(f'"{name}"' for name in unknown)
            raise SelectorError(f"--target {names}: no such session is declared or recorded")


EVERY_SESSION = Selection()


def selection_of(selectors: Sequence[Sequence[Requirement]], targets: Iterable[str]) -> Selection:
    """One selection from several parsed `-l` values (all must hold) and `--target` names."""
    return Selection(tuple(r for parsed in selectors for r in parsed), frozenset(targets))
