"""What the core needs to know about a provider: how a session is identified, which spec fields a
running session can change in place (everything else needs a stop and a start), and how to name
both in messages. Each provider declares its own rules (reconciler/providers/<name>/rules.py);
the shell collects them in the registry and passes them into the core, which holds none itself.

Identity fields are JSON pointers into the spec ("/AppId", "/RuntimeConfig/ChannelId"); a
record keeps each one's value under the pointer's last segment ("ChannelId"), the name the
provider's own calls use for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.secrets import pointer_tokens, split_pointer


@dataclass(frozen=True, slots=True)
class ProviderRules:
    name: str
    identity_fields: tuple[str, ...]
    # JSON-pointer prefixes of spec fields a running session accepts in place.
    in_place_prefixes: tuple[str, ...] = ()
    # What one running session is called in the cloud's own words: "task", "instance".
    noun: str = "session"
    # Where the spec holds a CustomLLM configuration the platform calls back (`probe` calls it
    # the same way); None when the cloud has no such callback contract.
    custom_llm_pointer: str | None = None
    # The longest announcement the cloud speaks (characters); None when it states no limit.
    max_announcement_chars: int | None = None
    # (the agent's own user id, the list of users it talks to): the two must not overlap;
    # None when the spec names no such pair.
    agent_and_targets: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        pairs = self.agent_and_targets or ()
        for pointer in (*self.identity_fields, *self.in_place_prefixes, *pairs):
            if not pointer.startswith("/") or pointer == "/":
                raise ValueError(f"{self.name}: {pointer!r} is not a JSON pointer to a field")

    def identity_values(self, spec: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """Each identity pointer with the value the spec holds there (None when absent)."""
        return tuple((pointer, _value_at(spec, pointer)) for pointer in self.identity_fields)

    def identity(self, spec: Mapping[str, Any]) -> str:
        return identity_text(self.identity_values(spec))

    def identity_ids(self, spec: Mapping[str, Any]) -> dict[str, str]:
        return {_last(pointer): _text(value) for pointer, value in self.identity_values(spec)}

    def spec_of(self, ids: Mapping[str, str]) -> dict[str, Any]:
        """The least spec that names an identity (what `identity_ids` recorded), nested as
        the pointers say: enough to start a bare session under it."""
        spec: dict[str, Any] = {}
        for pointer in self.identity_fields:
            *parents, last = split_pointer(pointer)
            node = spec
            for token in parents:
                node = node.setdefault(token, {})
            node[last] = ids.get(last, "")
        return spec

    @property
    def identity_label(self) -> str:
        """The identity as messages name it: each pointer's last segment, joined by "/"."""
        return "/".join(_last(pointer) for pointer in self.identity_fields)

    def updatable_in_place(self, pointer: str) -> bool:
        return any(
            pointer == prefix or pointer.startswith(prefix + "/")
            for prefix in self.in_place_prefixes
        )


def _value_at(spec: Mapping[str, Any], pointer: str) -> Any:
    node: Any = spec
    for token in pointer_tokens(pointer):
        if not (type(node) is dict or isinstance(node, Mapping)) or token not in node:
            return None
        node = node[token]
    return node


def identity_text(values: tuple[tuple[str, Any], ...]) -> str:
    """The identity `identity_values` gave, as records and messages spell it."""
    return "/".join(_text(value) for _, value in values)


def _last(pointer: str) -> str:
    return split_pointer(pointer)[-1]


def _text(value: Any) -> str:
    return "" if value is None else str(value)
