"""The ARTC join token an AI agent enters its channel with (`RuntimeConfig.AuthToken`).

The caller makes it, not the cloud: base64 of the JSON object
`{appid, channelid, userid, nonce, timestamp, token}` where `timestamp` is the expiry (epoch
seconds) and `token = hex(sha256(appId + appKey + channelId + userId + timestamp))`. Made at
every Start (24 h validity by default), never declared, never stored: the app key is a secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass

DEFAULT_VALIDITY_SECONDS = 24 * 3600


def token_digest(app_id: str, app_key: str, channel_id: str, user_id: str, expires_at: int) -> str:
    material = f"{app_id}{app_key}{channel_id}{user_id}{expires_at}"
    return hashlib.sha256(material.encode()).hexdigest()


def make_auth_token(
    app_id: str,
    app_key: str,
    channel_id: str,
    user_id: str,
    expires_at: int,
    nonce: str | None = None,
) -> str:
    """The AuthToken for `user_id` in `channel_id`, valid until `expires_at` (epoch seconds)."""
    body = {
        "appid": app_id,
        "channelid": channel_id,
        "userid": user_id,
        "nonce": secrets.token_hex(16) if nonce is None else nonce,
        "timestamp": expires_at,
        "token": token_digest(app_id, app_key, channel_id, user_id, expires_at),
    }
    compact = json.dumps(body, separators=(",", ":"))
    return base64.b64encode(compact.encode()).decode()


@dataclass(frozen=True, slots=True)
class AuthTokenClaims:
    app_id: str
    channel_id: str
    user_id: str
    nonce: str
    expires_at: int
    token: str


class AuthTokenInvalid(ValueError):
    """The token cannot be decoded, or its fields are missing or of the wrong type."""


def read_auth_token(encoded: str) -> AuthTokenClaims:
    """Decode a token without checking it: what the emulator (and `token --decode`) read."""
    try:
        raw = json.loads(base64.b64decode(encoded, validate=True))
    except (ValueError, TypeError) as error:
        raise AuthTokenInvalid(f"not base64 of a JSON object: {error}") from None
    if not isinstance(raw, dict):
        raise AuthTokenInvalid("not base64 of a JSON object")
    try:
        expires_at = raw["timestamp"]
        fields = [raw[k] for k in ("appid", "channelid", "userid", "nonce", "token")]
    except KeyError as missing:
        raise AuthTokenInvalid(f"field {missing} is missing") from None
    if not isinstance(expires_at, int) or isinstance(expires_at, bool):
        raise AuthTokenInvalid("timestamp is not an integer")
    if not all(isinstance(value, str) for value in fields):
        raise AuthTokenInvalid("appid, channelid, userid, nonce and token must be strings")
    app_id, channel_id, user_id, nonce, token = fields
    return AuthTokenClaims(app_id, channel_id, user_id, nonce, expires_at, token)


def token_is_genuine(claims: AuthTokenClaims, app_key: str) -> bool:
    expected = token_digest(
        claims.app_id, app_key, claims.channel_id, claims.user_id, claims.expires_at
    )
    return secrets.compare_digest(expected, claims.token)
