"""The Volcengine RTC join token, version "001": what a person needs to enter an agent's room.

Pure (no I/O). Layout, all integers little-endian, base64 with the standard padded alphabet:

    token   = "001" + AppId (24 chars) + base64(content)
    content = u16 len(msg) + msg + u16 len(sig) + sig       sig = HMAC-SHA256(AppKey, msg)
    msg     = u32 nonce + u32 issuedAt + u32 expireAt
            + u16 len + RoomId + u16 len + UserId
            + u16 count + count × (u16 privilegeId + u32 expireAt)   sorted by id

Privileges: PublishStream 0, which also grants 1, 2, 3 (audio, video, data), and
SubscribeStream 4. A privilege expiry of 0 means "never" (the token's own expiry still holds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

VERSION = "001"
APP_ID_LENGTH = 24
DEFAULT_VALIDITY_SECONDS = 24 * 3600
U32_MAX = 2**32 - 1
# The room and user ids the RTC service accepts (StartVoiceChat's rule, too).
ID_PATTERN = re.compile(r"[A-Za-z0-9@._-]{1,128}")


class Privilege(IntEnum):
    PUBLISH_STREAM = 0
    PUBLISH_AUDIO_STREAM = 1
    PUBLISH_VIDEO_STREAM = 2
    PUBLISH_DATA_STREAM = 3
    SUBSCRIBE_STREAM = 4


# Granting PublishStream grants the three kinds of publishing with it, as the official SDKs do.
_PUBLISH_FAMILY = (
    Privilege.PUBLISH_STREAM,
    Privilege.PUBLISH_AUDIO_STREAM,
    Privilege.PUBLISH_VIDEO_STREAM,
    Privilege.PUBLISH_DATA_STREAM,
)


class RtcTokenError(ValueError):
    """A token cannot be made from these inputs, or a text is not a version-001 token."""


@dataclass(frozen=True, slots=True)
class RtcTokenClaims:
    """What a token says (everything but the key). `privileges` maps id → expiry (0 = never)."""

    app_id: str
    room_id: str
    user_id: str
    nonce: int
    issued_at: int
    expire_at: int
    privileges: Mapping[int, int]
    signature: bytes
    message: bytes


def privileges_for(
    *, publish: bool, publish_expire_at: int, subscribe: bool, subscribe_expire_at: int
) -> dict[int, int]:
    """The privilege table of a user who may publish and/or subscribe until the given times."""
    table: dict[int, int] = {}
    if publish:
        table.update(dict.fromkeys(_PUBLISH_FAMILY, publish_expire_at))
    if subscribe:
        table[Privilege.SUBSCRIBE_STREAM] = subscribe_expire_at
    return table


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a room or user id, or None."""
    if ID_PATTERN.fullmatch(value):
        return None
    return "must be 1 to 128 characters, each a letter, a digit or one of @ . _ -"


def app_id_problem(value: str) -> str | None:
    if len(value) == APP_ID_LENGTH and ID_PATTERN.fullmatch(value):
        return None
    return f"must be the {APP_ID_LENGTH}-character RTC AppId (letters and digits)"


def make_rtc_token(
    app_id: str,
    app_key: str,
    room_id: str,
    user_id: str,
    *,
    nonce: int,
    issued_at: int,
    expire_at: int,
    privileges: Mapping[int, int],
) -> str:
    """The version-001 token for `user_id` in `room_id`. Raises RtcTokenError on inputs the
    layout cannot hold (an AppId that is not 24 characters, an id longer than 65535 bytes, a
    number outside u32). Whether the ids are ones the RTC service accepts (`id_problem`) is the
    caller's to check: the layout itself holds any text (the published vector's room is
    "new room")."""
    if len(app_id) != APP_ID_LENGTH:
        raise RtcTokenError(f"app id {app_id!r} must be {APP_ID_LENGTH} characters")
    for label, value in (("room id", room_id), ("user id", user_id)):
        if len(value.encode()) > 0xFFFF:
            raise RtcTokenError(f"{label} is longer than 65535 bytes")
    numbers = {"nonce": nonce, "issued_at": issued_at, "expire_at": expire_at}
    numbers.update({f"privilege {pid} expiry": at for pid, at in privileges.items()})
    for label, number in numbers.items():
        if not 0 <= number <= U32_MAX:
            raise RtcTokenError(f"{label} {number} does not fit in 32 bits (0 to {U32_MAX})")
    message = _message(nonce, issued_at, expire_at, room_id, user_id, privileges)
    signature = hmac.new(app_key.encode(), message, hashlib.sha256).digest()
    content = _with_length(message) + _with_length(signature)
    return VERSION + app_id + base64.b64encode(content).decode("ascii")


def _message(
    nonce: int,
    issued_at: int,
    expire_at: int,
    room_id: str,
    user_id: str,
    privileges: Mapping[int, int],
) -> bytes:
    parts = [
        struct.pack("<III", nonce, issued_at, expire_at),
        _with_length(room_id.encode()),
        _with_length(user_id.encode()),
        struct.pack("<H", len(privileges)),
    ]
    parts += [struct.pack("<HI", pid, privileges[pid]) for pid in sorted(privileges)]
    return b"".join(parts)


def _with_length(data: bytes) -> bytes:
    return struct.pack("<H", len(data)) + data


def read_rtc_token(token: str) -> RtcTokenClaims:
    """Decode a token without checking its signature."""
    if not token.startswith(VERSION) or len(token) <= len(VERSION) + APP_ID_LENGTH:
        raise RtcTokenError(f'not a version-{VERSION} token: it must start with "{VERSION}"')
    app_id = token[len(VERSION) : len(VERSION) + APP_ID_LENGTH]
    try:
        content = base64.b64decode(token[len(VERSION) + APP_ID_LENGTH :], validate=True)
    except binascii.Error:
        raise RtcTokenError("the part after the AppId is not base64") from None
    reader = _Reader(content)
    message = reader.sized()
    signature = reader.sized()
    reader.end()
    fields = _Reader(message)
    nonce, issued_at, expire_at = fields.take("<III")
    room_id, user_id = fields.text(), fields.text()
    (count,) = fields.take("<H")
    privileges = {}
    for _ in range(count):
        pid, at = fields.take("<HI")
        privileges[pid] = at
    fields.end()
    return RtcTokenClaims(
        app_id, room_id, user_id, nonce, issued_at, expire_at, privileges, signature, message
    )


def rtc_token_is_genuine(claims: RtcTokenClaims, app_key: str) -> bool:
    expected = hmac.new(app_key.encode(), claims.message, hashlib.sha256).digest()
    return hmac.compare_digest(expected, claims.signature)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, layout: str) -> tuple[int, ...]:
        size = struct.calcsize(layout)
        if self.at + size > len(self.data):
            raise RtcTokenError("the token is truncated")
        values = struct.unpack_from(layout, self.data, self.at)
        self.at += size
        return tuple(int(v) for v in values)

    def sized(self) -> bytes:
        (length,) = self.take("<H")
        if self.at + length > len(self.data):
            raise RtcTokenError("the token is truncated")
        chunk = self.data[self.at : self.at + length]
        self.at += length
        return chunk

    def text(self) -> str:
        try:
            return self.sized().decode()
        except UnicodeDecodeError:
            raise RtcTokenError("a room or user id is not UTF-8") from None

    def end(self) -> None:
        if self.at != len(self.data):
            raise RtcTokenError("the token has trailing bytes")
