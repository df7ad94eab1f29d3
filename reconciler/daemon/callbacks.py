"""Cloud event callbacks: verify them, and turn each into a "look again" hint.

A callback never acts by itself. Deliveries repeat (Volcengine retries a failed one twice),
arrive late or out of order, and may be lost, so a hint only says which session is worth a
look; the next reconcile, level-triggered, decides from the record and the journal — an ended
task the reconciler did not stop itself ended by itself and is started again; one it did stop
is not. Pure functions: bytes and headers in, a hint or a CallbackRejected out.

Volcengine (console-configured RTC event callbacks, EventType "VoiceChat"). The envelope is
JSON: EventType, EventData (a JSON *string*), EventTime, EventId, AppId, Version, Nonce (older
documents spell it Noce), Signature. The signature is the lowercase hex SHA-256 of the values of
those seven fields and the callback secret, sorted byte-wise and joined with no separator; it
is compared case-insensitively. EventData carries AppId, RoomId, TaskId, EventType (0 status
change, 1 error), RunStage and ErrorInfo; EventType 0 with RunStage "taskStop" is the end of
the task, whatever ended it.

Alibaba Cloud (IMS AI agent callbacks). The only authentication is the configured token in the
Authorization header, bare or as `Bearer <token>`, compared in constant time. The body is JSON:
aiAgentId, instanceId, event, data, code, message, timestamp, userData, extendData; `agent_stop`
is the instance closing, whatever the cause. userData is the UserData the reconciler started the
instance with, so its owner tag (under the key "reconciler") names the session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.timestamps import utc_timestamp
from reconciler.errors import ReconcilerError
from reconciler.providers.base import OWNER_TAG_KEY, Owner
from reconciler.providers.registry import VOLCENGINE as VOLCENGINE_SPEC

# The envelope fields the Volcengine signature covers, with the callback secret.
VOLCENGINE_SIGNED_FIELDS = ("EventType", "EventData", "EventTime", "EventId", "AppId", "Version")
VOLCENGINE_TASK_STOP = "taskStop"
ALIYUN_AGENT_STOP = "agent_stop"
# A callback is a small JSON document; anything far larger is not one.
MAX_CALLBACK_BYTES = 1024 * 1024
VOLCENGINE = VOLCENGINE_SPEC.rules


class CallbackRejected(ReconcilerError):
    """The request is not a callback to act on: `status` is the HTTP answer (401: not
    authenticated, 400: not a well-formed callback, 413: too large)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class CallbackHint:
    """ "Look again" at one session. `ids` are what the event names (Volcengine AppId, RoomId,
    TaskId; Aliyun AIAgentId and InstanceId); `identity` is the records' identity string where
    the event carries every identity field (Volcengine), `session` the session's name where the
    event carries our owner tag (Aliyun). `ended`: the event says the task or instance ended,
    whatever the cause; whether it ended by itself is for the engine to tell from its journal."""

    provider: str
    event: str
    ids: Mapping[str, str]
    ended: bool
    identity: str | None = None
    session: str | None = None
    event_id: str = ""  # Volcengine's EventId (for logs; the docs do not promise it is unique)
    # When the event happened (ISO 8601 UTC), where the event says: Volcengine's EventData
    # EventTime (Unix ms). A task stop older than the record's Start is an earlier task's.
    at: str | None = None
    detail: str = ""  # the cloud's error code and reason, when the event reports an error


# -- Volcengine ---------------------------------------------------------------------------


def volcengine_signature(envelope: Mapping[str, Any], secret: str) -> str:
    """The signature a genuine envelope carries (lowercase hex)."""
    values = [_text(envelope.get(name)) for name in VOLCENGINE_SIGNED_FIELDS]
    values.append(_text(envelope.get("Nonce", envelope.get("Noce"))))
    values.append(secret)
    joined = b"".join(sorted(value.encode("utf-8") for value in values))
    return hashlib.sha256(joined).hexdigest()


def parse_volcengine(body: bytes, secret: str | None) -> CallbackHint | None:
    """The hint a verified VoiceChat event gives; None for a verified event of another kind
    (other RTC events share the callback URL). Raises CallbackRejected otherwise."""
    envelope = _json_object(body, "the callback body")
    if not secret:
        raise CallbackRejected(401, "no Volcengine callback secret is configured")
    given = envelope.get("Signature")
    if not isinstance(given, str) or not given:
        raise CallbackRejected(401, "the callback carries no Signature")
    expected = volcengine_signature(envelope, secret)
    if not hmac.compare_digest(given.lower().encode("utf-8"), expected.encode("utf-8")):
        raise CallbackRejected(401, "the callback's Signature does not match")
    if envelope.get("EventType") != "VoiceChat":
        return None
    raw = envelope.get("EventData")
    data = _json_object(
        raw.encode("utf-8") if isinstance(raw, str) else b"", "the callback's EventData"
    )
    ids = VOLCENGINE.identity_ids(data)
    if not ids["AppId"]:
        ids["AppId"] = _text(envelope.get("AppId"))
    stage = _text(data.get("RunStage"))
    error = data.get("ErrorInfo")
    detail = ""
    if isinstance(error, Mapping):
        detail = f"{_text(error.get('Errorcode'))} {_text(error.get('Reason'))}".strip()
    return CallbackHint(
        provider=VOLCENGINE.name,
        event=stage,
        ids=ids,
        ended=data.get("EventType") == 0 and stage == VOLCENGINE_TASK_STOP,
        identity=VOLCENGINE.identity(ids) if all(ids.values()) else None,
        event_id=_text(envelope.get("EventId")),
        detail=detail,
        at=_unix_ms(data.get("EventTime")),
    )


# -- Alibaba Cloud ------------------------------------------------------------------------


def aliyun_token_matches(authorization: str | None, token: str | None) -> bool:
    """Whether the Authorization header carries the configured token (bare or Bearer)."""
    if not token or authorization is None:
        return False
    given = authorization.strip()
    scheme, _, rest = given.partition(" ")
    if scheme.lower() == "bearer" and rest:
        given = rest.strip()
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def parse_aliyun(body: bytes, authorization: str | None, token: str | None) -> CallbackHint:
    """The hint a verified agent event gives. Raises CallbackRejected otherwise."""
    if not token:
        raise CallbackRejected(401, "no Alibaba Cloud callback token is configured")
    if not aliyun_token_matches(authorization, token):
        raise CallbackRejected(401, "the Authorization header does not carry the callback token")
    event = _json_object(body, "the callback body")
    name = _text(event.get("event"))
    if not name:
        raise CallbackRejected(400, 'the callback has no "event"')
    ids = {"AIAgentId": _text(event.get("aiAgentId")), "InstanceId": _text(event.get("instanceId"))}
    owner = _owner(event.get("userData"))
    code, message = _text(event.get("code")), _text(event.get("message"))
    return CallbackHint(
        provider="aliyun",
        event=name,
        ids={key: value for key, value in ids.items() if value},
        ended=name == ALIYUN_AGENT_STOP,
        session=owner.session if owner is not None else None,
        detail=f"{code} {message}".strip() if name == "error" else "",
    )


def _owner(user_data: Any) -> Owner | None:
    """Our owner tag in the instance's UserData, sent as a JSON string (or, leniently, an
    object); anything else is someone else's data."""
    if isinstance(user_data, str):
        try:
            user_data = json.loads(user_data)
        except ValueError:
            return None
    if not isinstance(user_data, Mapping):
        return None
    return Owner.from_tag(user_data.get(OWNER_TAG_KEY))


# -- shared -------------------------------------------------------------------------------


def _unix_ms(value: Any) -> str | None:
    """Unix milliseconds (a number, or leniently its text) as ISO 8601 UTC; None otherwise."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return utc_timestamp(value / 1000)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_CALLBACK_BYTES:
        raise CallbackRejected(413, f"{what} is larger than {MAX_CALLBACK_BYTES} bytes")
    try:
        value = json.loads(body)
    except ValueError:
        raise CallbackRejected(400, f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise CallbackRejected(400, f"{what} is not a JSON object")
    return value


def _text(value: Any) -> str:
    """A field's value as the text that was signed: strings as they are, numbers as JSON
    writes them, absent as nothing."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)
