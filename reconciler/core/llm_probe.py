"""What `probe` sends to each CustomLLM endpoint of a desired set, and how it reports back. Pure.

A probe calls an endpoint the way the platform will for that session: POST to `Url` with
`Authorization: Bearer <APIKey>` and an OpenAI-style body — a short system and user turn of
the probe's own, `stream: true`, and the session's model, temperature, top_p, max tokens and
`Custom` pass-through. Sessions whose requests are identical (same URL, key and body) share
one call: an endpoint is probed once however many sessions use it, while sessions that send
it a different model or key are probed apart (the answer may differ).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.core.model import DesiredSession
from reconciler.core.providers import ProviderRules
from reconciler.core.secrets import lookup, substitute

SYSTEM_PROMPT = "You are a voice agent. Answer in one short sentence."
USER_PROMPT = "Hello, can you hear me? This is a connectivity check."
# The platform's defaults (the schema's) when a session leaves them out.
DEFAULT_TEMPERATURE = 0.5
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    url: str
    api_key: str | None
    body: bytes

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One session of the desired set: its request, or why it has none (`skipped`)."""

    name: str
    request: ProbeRequest | None
    # The URL as declared: a secret reference stays a reference in any output.
    shown_url: str = ""
    skipped: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """How one endpoint answered. `problem` is None for a good answer; the times are seconds
    from sending the request (None when that point was not reached)."""

    problem: str | None
    status: int | None = None
    first_byte: float | None = None
    done: float | None = None
    chunks: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


def probe_targets(
    sessions: Sequence[DesiredSession],
    secrets: Mapping[str, str],
    rules: Mapping[str, ProviderRules],
) -> list[ProbeTarget]:
    """Every session, in order, with the request that probes its CustomLLM endpoint."""
    return [_target(session, secrets, rules[session.provider]) for session in sessions]


def _target(
    session: DesiredSession, secrets: Mapping[str, str], rules: ProviderRules
) -> ProbeTarget:
    if rules.custom_llm_pointer is None:
        return ProbeTarget(session.name, None, skipped=f"{session.provider}: no CustomLLM endpoint")
    llm = lookup(session.spec, rules.custom_llm_pointer)
    if not isinstance(llm, Mapping) or llm.get("Mode") != "CustomLLM":
        mode = llm.get("Mode") if isinstance(llm, Mapping) else None
        return ProbeTarget(
            session.name, None, skipped=f"no CustomLLM endpoint (LLMConfig.Mode is {mode})"
        )
    resolved = substitute(llm, secrets)
    return ProbeTarget(session.name, probe_request(resolved), shown_url=str(llm.get("Url", "")))


def probe_request(llm: Mapping[str, Any]) -> ProbeRequest:
    """The request the platform makes to a (secret-resolved) CustomLLMConfig."""
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT},
        ],
        "stream": True,
        "temperature": llm.get("Temperature", DEFAULT_TEMPERATURE),
        "top_p": llm.get("TopP", DEFAULT_TOP_P),
        "max_tokens": llm.get("MaxTokens", DEFAULT_MAX_TOKENS),
    }
    if "ModelName" in llm:
        body["model"] = llm["ModelName"]
    if "Custom" in llm:
        # A JSON string, passed through to the request body as the platform does (key
        # `custom`; the exact spelling the platform uses is not published).
        body["custom"] = llm["Custom"]
    api_key = llm.get("APIKey")
    return ProbeRequest(
        url=str(llm["Url"]),
        api_key=str(api_key) if api_key else None,
        body=json.dumps(body, separators=(",", ":"), sort_keys=True).encode(),
    )


def distinct_requests(targets: Sequence[ProbeTarget]) -> list[ProbeRequest]:
    """Each request once, in first-use order."""
    return list(dict.fromkeys(t.request for t in targets if t.request is not None))


def result_line(target: ProbeTarget, result: ProbeResult | None) -> str:
    """One line per session: `✓ name: ok (...)`, `✗ name: URL: reason`, `- name: not probed`."""
    if target.request is None or result is None:
        return f"- {target.name}: not probed: {target.skipped}"
    if result.ok:
        return f"✓ {target.name}: ok ({target.shown_url}: {timing(result)})"
    return f"✗ {target.name}: {target.shown_url}: {result.problem}"


def timing(result: ProbeResult) -> str:
    parts = []
    if result.first_byte is not None:
        parts.append(f"first byte {_ms(result.first_byte)}")
    if result.done is not None:
        parts.append(f"[DONE] {_ms(result.done)}")
    parts.append(f"{result.chunks} chunk(s)")
    return ", ".join(parts)


def summary_line(
    targets: Sequence[ProbeTarget], results: Mapping[ProbeRequest, ProbeResult]
) -> str:
    probed = [t for t in targets if t.request is not None]
    bad = [t for t in probed if t.request is not None and not results[t.request].ok]
    skipped = len(targets) - len(probed)
    text = (
        f"Probe: {len(results)} endpoint call(s) for {len(probed)} session(s): "
        f"{len(probed) - len(bad)} good, {len(bad)} bad"
    )
    if skipped:
        text += f"; {skipped} session(s) without a CustomLLM endpoint"
    return text + "."


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
