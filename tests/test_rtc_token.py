"""Volcengine RTC join tokens (version 001) and `reconciler token`.

The published vector is checked byte for byte; random tokens are read back by a decoder written
here from the layout alone (not the module's own reader), so a bug shared by the writer and its
reader cannot hide.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.providers.aliyun.auth_token import read_auth_token, token_is_genuine
from reconciler.providers.volcengine.rtc_token import (
    Privilege,
    RtcTokenError,
    make_rtc_token,
    privileges_for,
    read_rtc_token,
    rtc_token_is_genuine,
)

VECTOR = (
    "001123456781234567812345678QwBOYbwAAPFTZRD/U2UIAG5ldyByb29tCwBuZXcgdXNlciBpZAUAAAAQ/1NlAQAQ"
    "/1NlAgAQ/1NlAwAQ/1NlBAAAAAAAIACBb1UkubyLiQbgSE8mW0V1iap6eADRs2XDmO8kgOsmtQ=="
)
VECTOR_APP = "123456781234567812345678"
APP_KEY = "rtc-app-key-7f3c9d1e5b"
REPO = Path(__file__).resolve().parent.parent
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@._-"


def independent_decode(token: str) -> dict[str, Any]:
    """The layout of docs/rtc-tokens.md, read with struct and nothing else."""
    assert token[:3] == "001"
    app_id, content = token[3:27], base64.b64decode(token[27:], validate=True)
    (msg_len,) = struct.unpack_from("<H", content, 0)
    msg = content[2 : 2 + msg_len]
    (sig_len,) = struct.unpack_from("<H", content, 2 + msg_len)
    sig = content[4 + msg_len : 4 + msg_len + sig_len]
    assert len(content) == 4 + msg_len + sig_len
    nonce, issued, expire = struct.unpack_from("<III", msg, 0)
    at = 12
    texts = []
    for _ in range(2):
        (length,) = struct.unpack_from("<H", msg, at)
        texts.append(msg[at + 2 : at + 2 + length].decode())
        at += 2 + length
    (count,) = struct.unpack_from("<H", msg, at)
    at += 2
    privileges = []
    for _ in range(count):
        privileges.append(struct.unpack_from("<HI", msg, at))
        at += 6
    assert at == len(msg)
    return {
        "app_id": app_id,
        "nonce": nonce,
        "issued_at": issued,
        "expire_at": expire,
        "room": texts[0],
        "user": texts[1],
        "privileges": privileges,
        "msg": msg,
        "sig": sig,
    }


def test_the_published_vector_byte_for_byte() -> None:
    token = make_rtc_token(
        VECTOR_APP,
        "app key",
        "new room",
        "new user id",
        nonce=12345678,
        issued_at=1700000000,
        expire_at=1700003600,
        privileges=privileges_for(
            publish=True, publish_expire_at=1700003600, subscribe=True, subscribe_expire_at=0
        ),
    )
    assert token == VECTOR
    claims = read_rtc_token(VECTOR)
    assert rtc_token_is_genuine(claims, "app key")
    assert not rtc_token_is_genuine(claims, "app key ")
    assert claims.privileges == {0: 1700003600, 1: 1700003600, 2: 1700003600, 3: 1700003600, 4: 0}


ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=128)
u32 = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(
    app_id=st.text(alphabet=ID_CHARS[:62], min_size=24, max_size=24),
    key=st.text(min_size=1, max_size=64),
    room=ids,
    user=ids,
    nonce=u32,
    issued=u32,
    expire=u32,
    publish=st.booleans(),
    publish_at=u32,
    subscribe_at=u32,
)
def test_random_tokens_read_back_with_an_independent_decoder(
    app_id: str,
    key: str,
    room: str,
    user: str,
    nonce: int,
    issued: int,
    expire: int,
    publish: bool,
    publish_at: int,
    subscribe_at: int,
) -> None:
    table = privileges_for(
        publish=publish,
        publish_expire_at=publish_at,
        subscribe=True,
        subscribe_expire_at=subscribe_at,
    )
    token = make_rtc_token(
        app_id,
        key,
        room,
        user,
        nonce=nonce,
        issued_at=issued,
        expire_at=expire,
        privileges=table,
    )
    decoded = independent_decode(token)
    assert (decoded["app_id"], decoded["room"], decoded["user"]) == (app_id, room, user)
    assert (decoded["nonce"], decoded["issued_at"], decoded["expire_at"]) == (nonce, issued, expire)
    expected = [(4, subscribe_at)]
    if publish:
        expected = [(0, publish_at), (1, publish_at), (2, publish_at), (3, publish_at), *expected]
    assert decoded["privileges"] == expected  # sorted by id, publishing granting 1-3 too
    assert decoded["sig"] == hmac.new(key.encode(), decoded["msg"], hashlib.sha256).digest()
    claims = read_rtc_token(token)
    assert claims.privileges == dict(expected)
    assert rtc_token_is_genuine(claims, key)


def test_inputs_the_layout_cannot_hold_are_refused() -> None:
    table = privileges_for(publish=True, publish_expire_at=0, subscribe=True, subscribe_expire_at=0)
    common: dict[str, Any] = {"nonce": 1, "issued_at": 1, "expire_at": 2, "privileges": table}
    with pytest.raises(RtcTokenError, match="24 characters"):
        make_rtc_token("short", "k", "r", "u", **common)
    with pytest.raises(RtcTokenError, match="32 bits"):
        make_rtc_token(VECTOR_APP, "k", "r", "u", **{**common, "expire_at": 2**32})
    with pytest.raises(RtcTokenError, match="32 bits"):
        make_rtc_token(VECTOR_APP, "k", "r", "u", **{**common, "nonce": -1})


@pytest.mark.parametrize(
    "text",
    ["002" + VECTOR[3:], VECTOR[:40], VECTOR[:27] + "!!!!", VECTOR[:-4] + "AAA="],
)
def test_what_is_not_a_token_is_refused(text: str) -> None:
    with pytest.raises(RtcTokenError):
        read_rtc_token(text)


# -- the command ------------------------------------------------------------------------------


def run_token(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "VOLC_"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "token", *args],
        env=environ,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


VOLC = ("volcengine", "--app-id", VECTOR_APP, "--room", "room-1", "--user", "alice")


def test_cli_reproduces_a_token_and_puts_nothing_else_on_its_line() -> None:
    done = run_token(
        *VOLC,
        "--nonce",
        "12345678",
        "--issued-at",
        "1700000000",
        "--expire-at",
        "1700003600",
        RECONCILER_VOLCENGINE__APP_KEY=APP_KEY,
    )
    assert done.returncode == 0, done.stderr
    expected = make_rtc_token(
        VECTOR_APP,
        APP_KEY,
        "room-1",
        "alice",
        nonce=12345678,
        issued_at=1700000000,
        expire_at=1700003600,
        privileges=privileges_for(
            publish=True, publish_expire_at=1700003600, subscribe=True, subscribe_expire_at=0
        ),
    )
    assert done.stdout == expected + "\n"
    assert done.stdout.splitlines()[-1] == expected
    assert APP_KEY not in done.stdout + done.stderr
    assert "already expired" in done.stderr


def test_cli_defaults_are_now_plus_24_hours_publish_and_subscribe() -> None:
    before = int(time.time())
    done = run_token(*VOLC, RECONCILER_VOLCENGINE__APP_KEY=APP_KEY)
    after = int(time.time())
    assert done.returncode == 0, done.stderr
    decoded = independent_decode(done.stdout.splitlines()[-1])
    assert before <= decoded["issued_at"] <= after
    assert decoded["expire_at"] == decoded["issued_at"] + 24 * 3600
    assert dict(decoded["privileges"]) == {
        **dict.fromkeys((0, 1, 2, 3), decoded["expire_at"]),
        4: 0,
    }
    assert rtc_token_is_genuine(read_rtc_token(done.stdout.strip()), APP_KEY)


def test_cli_listen_only_with_its_own_expiries_in_json() -> None:
    done = run_token(
        *VOLC,
        "--no-publish",
        "--issued-at",
        "1800000000",
        "--expire",
        "600",
        "--subscribe-expire-at",
        "1800000300",
        "--format",
        "json",
        RECONCILER_VOLCENGINE__APP_KEY=APP_KEY,
    )
    assert done.returncode == 0, done.stderr
    assert APP_KEY not in done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document["expire_at"] == 1800000600
    assert document["privileges"] == {"SubscribeStream": 1800000300}
    assert (document["room_id"], document["user_id"], document["app_id"]) == (
        "room-1",
        "alice",
        VECTOR_APP,
    )
    decoded = independent_decode(document["token"])
    assert decoded["privileges"] == [(int(Privilege.SUBSCRIBE_STREAM), 1800000300)]


def test_cli_publish_expiry_is_its_own() -> None:
    done = run_token(
        *VOLC,
        "--publish-expire-at",
        "0",
        "--format",
        "json",
        RECONCILER_VOLCENGINE__APP_KEY=APP_KEY,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["privileges"]["PublishStream"] == 0


def test_cli_without_the_app_key_is_a_one_line_error() -> None:
    done = run_token(*VOLC)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "RECONCILER_VOLCENGINE__APP_KEY" in done.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--room", "room 1"), ("--user", "x" * 129), ("--room", ""), ("--app-id", "abc")],
)
def test_cli_refuses_ids_the_service_refuses(flag: str, value: str) -> None:
    args = list(VOLC)
    args[args.index(flag) + 1] = value
    done = run_token(*args, RECONCILER_VOLCENGINE__APP_KEY=APP_KEY)
    assert done.returncode == 2
    assert f"argument {flag}" in done.stderr
    assert done.stdout == ""


def test_cli_refuses_an_expiry_before_the_issue_time() -> None:
    done = run_token(
        *VOLC,
        "--issued-at",
        "1800000000",
        "--expire-at",
        "1700000000",
        RECONCILER_VOLCENGINE__APP_KEY=APP_KEY,
    )
    assert done.returncode == 1
    assert "not after the issue time" in done.stderr


def test_cli_expire_and_expire_at_exclude_each_other() -> None:
    done = run_token(
        *VOLC, "--expire", "60", "--expire-at", "1800000000", RECONCILER_VOLCENGINE__APP_KEY="k"
    )
    assert done.returncode == 2


# -- token aliyun -------------------------------------------------------------------------------

ARTC = {"RECONCILER_ALIYUN__ARTC_APP_ID": "artc-app-1", "RECONCILER_ALIYUN__ARTC_APP_KEY": APP_KEY}


def test_aliyun_token_is_genuine_for_the_same_key_and_decodes() -> None:
    done = run_token("aliyun", "--channel", "ch-front-desk", "--user", "caller-7", **ARTC)
    assert done.returncode == 0, done.stderr
    token = done.stdout.splitlines()[-1]
    assert done.stdout == token + "\n"
    assert APP_KEY not in done.stdout + done.stderr
    claims = read_auth_token(token)
    assert (claims.app_id, claims.channel_id, claims.user_id) == (
        "artc-app-1",
        "ch-front-desk",
        "caller-7",
    )
    assert abs(claims.expires_at - (time.time() + 24 * 3600)) < 120
    assert token_is_genuine(claims, APP_KEY)
    assert not token_is_genuine(claims, APP_KEY + "x")
    # Independently: base64 of JSON whose token is sha256(appId+appKey+channel+user+timestamp).
    body = json.loads(base64.b64decode(token))
    material = f"artc-app-1{APP_KEY}ch-front-deskcaller-7{body['timestamp']}"
    assert body["token"] == hashlib.sha256(material.encode()).hexdigest()


def test_aliyun_token_json_and_fixed_expiry() -> None:
    done = run_token(
        "aliyun",
        "--channel",
        "ch1",
        "--user",
        "u1",
        "--expire-at",
        "4000000000",
        "--nonce",
        "n-1",
        "--format",
        "json",
        **ARTC,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert APP_KEY not in done.stdout
    assert (document["expire_at"], document["nonce"]) == (4000000000, "n-1")
    assert token_is_genuine(read_auth_token(document["token"]), APP_KEY)


def test_aliyun_token_without_the_artc_app_names_what_is_missing() -> None:
    done = run_token(
        "aliyun", "--channel", "ch1", "--user", "u1", RECONCILER_ALIYUN__ARTC_APP_ID="a"
    )
    assert done.returncode == 1
    assert "RECONCILER_ALIYUN__ARTC_APP_KEY" in done.stderr
    assert "RECONCILER_ALIYUN__ARTC_APP_ID" not in done.stderr
