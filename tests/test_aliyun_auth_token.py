"""The agent's ARTC AuthToken: format, digest and decoding."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from reconciler.providers.aliyun.auth_token import (
    AuthTokenInvalid,
    make_auth_token,
    read_auth_token,
    token_is_genuine,
)


def test_token_is_base64_json_with_the_sha256_digest() -> None:
    encoded = make_auth_token("app-1", "key-1", "ch-1", "agent-1", 1700086400, nonce="n0")
    body = json.loads(base64.b64decode(encoded))
    digest = hashlib.sha256(b"app-1key-1ch-1agent-11700086400").hexdigest()
    assert body == {
        "appid": "app-1",
        "channelid": "ch-1",
        "userid": "agent-1",
        "nonce": "n0",
        "timestamp": 1700086400,
        "token": digest,
    }
    assert "key-1" not in base64.b64decode(encoded).decode()


def test_a_fresh_nonce_per_token() -> None:
    first = read_auth_token(make_auth_token("a", "k", "c", "u", 1))
    second = read_auth_token(make_auth_token("a", "k", "c", "u", 1))
    assert first.nonce != second.nonce
    assert len(first.nonce) == 32


def test_genuine_only_with_the_right_key() -> None:
    claims = read_auth_token(make_auth_token("a", "k", "c", "u", 99))
    assert token_is_genuine(claims, "k")
    assert not token_is_genuine(claims, "other")


@pytest.mark.parametrize(
    "encoded",
    [
        "not base64!",
        base64.b64encode(b"[1]").decode(),
        base64.b64encode(b'{"appid": "a"}').decode(),
        base64.b64encode(
            json.dumps(
                {
                    "appid": "a",
                    "channelid": "c",
                    "userid": "u",
                    "nonce": "n",
                    "token": "t",
                    "timestamp": "1",
                }
            ).encode()
        ).decode(),
    ],
)
def test_malformed_tokens_are_refused(encoded: str) -> None:
    with pytest.raises(AuthTokenInvalid):
        read_auth_token(encoded)
