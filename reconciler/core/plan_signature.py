"""The MAC that binds a saved plan to the state it was made against.

`apply PLANFILE` sends what the plan says, so whoever can write the file could otherwise make
the reviewed diff say one thing and the actions do another. The MAC is HMAC-SHA256 over the
canonical JSON of the plan document without its `mac` field, keyed by a key derived from the
state's own secret key: only someone who can read the state can write a plan that this state
applies. The key is derived (HMAC(fingerprint_key, "saved-plan")) so that the plan MAC and the
fingerprints of sensitive values never share a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from reconciler.core.normalize import canonical_json

MAC_FIELD = "mac"
MAC_PREFIX = "hmac-sha256:"
_PURPOSE = b"saved-plan"


def _plan_key(state_key: bytes) -> bytes:
    return hmac.new(state_key, _PURPOSE, hashlib.sha256).digest()


def plan_mac(document: Mapping[str, Any], state_key: bytes) -> str:
    """The MAC of `document` (its own `mac` field, if any, left out)."""
    content = {key: value for key, value in document.items() if key != MAC_FIELD}
    digest = hmac.new(
        _plan_key(state_key), canonical_json(content).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return MAC_PREFIX + digest


def signed(document: Mapping[str, Any], state_key: bytes) -> dict[str, Any]:
    """The document with its MAC."""
    return {**document, MAC_FIELD: plan_mac(document, state_key)}


def has_valid_mac(document: Mapping[str, Any], state_key: bytes) -> bool:
    given = document.get(MAC_FIELD)
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given, plan_mac(document, state_key))
