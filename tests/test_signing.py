"""Volcengine V4 signing: every vector of reference/volcengine.md, the verifier, a round trip."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from reconciler.providers.volcengine.signing import (
    Credential,
    VolcengineAuth,
    canonical_query,
    canonical_request,
    compute_signature,
    default_signed_headers,
    format_x_date,
    normalize_host,
    parse_query,
    parse_x_date,
    percent_encode,
    sha256_hex,
    signing_key,
    verify_signature,
)

AK = "AKLTtestaccesskey"
SK = "testsecretkey=="
REGION = "cn-north-1"
X_DATE = "20250102T030405Z"
SIGNED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
BODY = b'{"AppId":"661e4b8f2f1d3c0123456789","RoomId":"room1","TaskId":"task1"}'
QUERY = [("Action", "StartVoiceChat"), ("Version", "2024-12-01")]
BODY_HASH = "0356cd79c6d68613f24b4e952395cf381837802c19e13b3444d0d51457027405"
CANONICAL_HASH = "aedbc12b1c9b8cc2ab1dc0f57c11004d33bda55724e73b5ce1dde82798eb8ae4"
SIG_PYTHON = "a85221836c7462e61233d889e0e2be036eea6b73bee1bbf4095a80fc59cbb150"
SIG_STS = "fd5043c608d0d56049d0f510bea34526fe5e1d5d18f07d8cc90ff4256f2adaaa"
SIG_NODE = "66efc46301ca97dff45290fda591ef5c92a94842dca36c74a59673f9550f530a"
TOKEN = "STSsessiontoken123"

PORT_BODY = '{"AppId":"661e4b8f2f1d3c0123456789","RoomId":"room 1","TaskId":"té"}'.encode()
PORT_QUERY = [("Version", "2024-12-01"), ("Action", "StopVoiceChat"), ("Foo", "a b/c~*")]
PORT_CANONICAL_QUERY = "Action=StopVoiceChat&Foo=a%20b%2Fc~%2A&Version=2024-12-01"
PORT_BODY_HASH = "05af53cc4087cbd8602ce66d30d0a069b1cef1ba9c4f3e30b4ec17228934d0bd"
PORT_SIG = "d63d790a3164305cee391e164ea1e3e60da4fd8de0202516cedeb4fb3932fdc3"


def vector_headers(host: str = "rtc.volcengineapi.com", body: bytes = BODY) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "host": host,
        "x-date": X_DATE,
        "x-content-sha256": sha256_hex(body),
    }


def sign(headers: dict[str, str], signed: list[str], **overrides: Any) -> str:
    args: dict[str, Any] = {
        "secret_access_key": SK,
        "region": REGION,
        "service": "rtc",
        "method": "POST",
        "path": "/",
        "query": QUERY,
        "headers": headers,
        "signed_headers": signed,
        "body": BODY,
    }
    args.update(overrides)
    return compute_signature(**args)


# -- the documented vectors ------------------------------------------------------------------------


def test_body_hash_vector() -> None:
    assert sha256_hex(BODY) == BODY_HASH


def test_canonical_request_vector() -> None:
    headers = vector_headers()
    signed = default_signed_headers(headers)
    assert signed == ["content-type", "host", "x-content-sha256", "x-date"]
    canonical = canonical_request("POST", "/", QUERY, headers, signed, BODY_HASH)
    lines = canonical.split("\n")
    assert lines[:3] == ["POST", "/", "Action=StartVoiceChat&Version=2024-12-01"]
    assert lines[7] == ""  # canonical headers end with their own newline
    assert lines[8] == "content-type;host;x-content-sha256;x-date"
    assert lines[9] == BODY_HASH
    assert sha256_hex(canonical.encode()) == CANONICAL_HASH


def test_python_sdk_signature_vector() -> None:
    headers = vector_headers()
    assert sign(headers, default_signed_headers(headers)) == SIG_PYTHON


def test_sts_signature_vector() -> None:
    headers = {**vector_headers(), "x-security-token": TOKEN}
    signed = default_signed_headers(headers)
    assert signed == ["content-type", "host", "x-content-sha256", "x-date", "x-security-token"]
    assert sign(headers, signed) == SIG_STS


def test_node_style_signed_headers_vector() -> None:
    assert sign(vector_headers(), ["host", "x-content-sha256", "x-date"]) == SIG_NODE


def test_port_query_and_utf8_body_vector() -> None:
    assert canonical_query(PORT_QUERY) == PORT_CANONICAL_QUERY
    assert sha256_hex(PORT_BODY) == PORT_BODY_HASH
    headers = vector_headers(host="127.0.0.1:8080", body=PORT_BODY)
    signed = default_signed_headers(headers)
    assert sign(headers, signed, query=PORT_QUERY, body=PORT_BODY) == PORT_SIG


def fixed_clock() -> datetime:
    return SIGNED_AT


def signed_request(
    url: str, params: list[tuple[str, str]], body: bytes, token: str | None = None
) -> httpx.Request:
    auth = VolcengineAuth(AK, SK, REGION, session_token=token, clock=fixed_clock)
    request = httpx.Request(
        "POST",
        url,
        params=tuple(params),
        content=body,
        headers={"Content-Type": "application/json"},
    )
    return next(auth.sync_auth_flow(request))


def expected_authorization(signed: str, sig: str) -> str:
    return (
        f"HMAC-SHA256 Credential={AK}/20250102/{REGION}/rtc/request, "
        f"SignedHeaders={signed}, Signature={sig}"
    )


def test_auth_reproduces_the_python_sdk_vector() -> None:
    request = signed_request("https://rtc.volcengineapi.com/", QUERY, BODY)
    assert request.headers["X-Date"] == X_DATE
    assert request.headers["X-Content-Sha256"] == BODY_HASH
    assert "X-Security-Token" not in request.headers
    assert request.headers["Authorization"] == expected_authorization(
        "content-type;host;x-content-sha256;x-date", SIG_PYTHON
    )


def test_auth_reproduces_the_sts_vector() -> None:
    request = signed_request("https://rtc.volcengineapi.com/", QUERY, BODY, token=TOKEN)
    assert request.headers["X-Security-Token"] == TOKEN
    assert request.headers["Authorization"] == expected_authorization(
        "content-type;host;x-content-sha256;x-date;x-security-token", SIG_STS
    )


def test_auth_drops_default_port_and_keeps_others() -> None:
    on_443 = signed_request("https://rtc.volcengineapi.com:443/", QUERY, BODY)
    assert on_443.headers["Authorization"].endswith(SIG_PYTHON)
    on_8080 = signed_request("http://127.0.0.1:8080/", PORT_QUERY, PORT_BODY)
    assert on_8080.headers["X-Content-Sha256"] == PORT_BODY_HASH
    assert on_8080.headers["Authorization"].endswith(f"Signature={PORT_SIG}")


# -- the building blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("AZaz09-_.~", "AZaz09-_.~"),
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("/*=&", "%2F%2A%3D%26"),
        ("é", "%C3%A9"),
        ("\x7f", "%7F"),
    ],
)
def test_percent_encode_keeps_only_unreserved(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded


def test_query_sorted_bytewise_by_key() -> None:
    assert canonical_query([("b", "1"), ("B", "2"), ("a", "x y")]) == "B=2&a=x%20y&b=1"


def test_parse_query_reads_plus_and_percent_twenty_as_space() -> None:
    assert parse_query("Foo=a+b%2Fc~%2A&Bar=x%20y&Empty=") == [
        ("Foo", "a b/c~*"),
        ("Bar", "x y"),
        ("Empty", ""),
    ]


@pytest.mark.parametrize(
    ("host", "normalized"),
    [
        ("rtc.volcengineapi.com:443", "rtc.volcengineapi.com"),
        ("rtc.volcengineapi.com:80", "rtc.volcengineapi.com"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("127.0.0.1:4430", "127.0.0.1:4430"),
    ],
)
def test_host_drops_only_default_ports(host: str, normalized: str) -> None:
    assert normalize_host(host) == normalized


def test_x_date_round_trip_and_naive_clock_refused() -> None:
    assert format_x_date(SIGNED_AT) == X_DATE
    assert parse_x_date(X_DATE) == SIGNED_AT
    with pytest.raises(ValueError):
        format_x_date(datetime(2025, 1, 2, 3, 4, 5))


def test_signing_key_uses_the_raw_secret() -> None:
    assert signing_key(SK, "20250102", REGION, "rtc") != signing_key(
        "AK" + SK, "20250102", REGION, "rtc"
    )


def test_auth_repr_hides_secret_and_token() -> None:
    auth = VolcengineAuth(AK, SK, REGION, session_token=TOKEN)
    assert SK not in repr(auth) and TOKEN not in repr(auth)
    assert SK not in repr(Credential(AK, SK, TOKEN)) and TOKEN not in repr(
        Credential(AK, SK, TOKEN)
    )


# -- the verifier ----------------------------------------------------------------------------------

CREDENTIALS = {AK: Credential(AK, SK)}


def verify(
    headers: dict[str, str],
    *,
    body: bytes = BODY,
    credentials: dict[str, Credential] | None = None,
    now: datetime = SIGNED_AT,
    region: str = REGION,
) -> str | None:
    return verify_signature(
        method="POST",
        path="/",
        query=QUERY,
        headers=headers,
        body=body,
        credentials=CREDENTIALS if credentials is None else credentials,
        region=region,
        now=now,
    )


def authorized(
    signed: str = "content-type;host;x-content-sha256;x-date",
    sig: str = SIG_PYTHON,
    token: str | None = None,
) -> dict[str, str]:
    headers = {k.title(): v for k, v in vector_headers().items()}
    if token is not None:
        headers["X-Security-Token"] = token
    headers["Authorization"] = expected_authorization(signed, sig)
    return headers


def test_verifier_accepts_python_and_node_style_signed_header_lists() -> None:
    assert verify(authorized()) is None
    assert verify(authorized("host;x-content-sha256;x-date", SIG_NODE)) is None


def test_verifier_follows_the_order_the_client_named() -> None:
    order = ["x-date", "host", "x-content-sha256"]
    sig = sign(vector_headers(), order)
    assert sig not in (SIG_NODE, SIG_PYTHON)
    assert verify(authorized(";".join(order), sig)) is None


def test_verifier_accepts_sts_token_only_for_its_credential() -> None:
    sts = {AK: Credential(AK, SK, TOKEN)}
    signed = "content-type;host;x-content-sha256;x-date;x-security-token"
    assert verify(authorized(signed, SIG_STS, TOKEN), credentials=sts) is None
    assert verify(authorized(), credentials=sts) == "InvalidSecretToken"
    assert verify(authorized(signed, SIG_STS, TOKEN)) == "InvalidSecretToken"
    wrong = authorized(signed, SIG_STS, "STSothertoken")
    assert verify(wrong, credentials=sts) == "InvalidSecretToken"


def test_verifier_rejects_a_wrong_secret() -> None:
    assert verify(authorized(), credentials={AK: Credential(AK, "other")}) == (
        "SignatureDoesNotMatch"
    )


def test_verifier_rejects_a_tampered_body() -> None:
    assert verify(authorized(), body=BODY.replace(b"task1", b"task2")) == "SignatureDoesNotMatch"


def test_verifier_rejects_an_unknown_access_key() -> None:
    assert verify(authorized(), credentials={"AKLTother": Credential("AKLTother", SK)}) == (
        "InvalidAccessKey"
    )


@pytest.mark.parametrize("skew", [timedelta(seconds=901), timedelta(seconds=-901)])
def test_verifier_enforces_the_x_date_window(skew: timedelta) -> None:
    assert verify(authorized(), now=SIGNED_AT + skew) == "InvalidTimestamp"
    assert verify(authorized(), now=SIGNED_AT + skew / 901 * 899) is None


def test_verifier_rejects_a_malformed_x_date() -> None:
    headers = authorized()
    headers["X-Date"] = "2025-01-02T03:04:05Z"
    assert verify(headers) == "InvalidTimestamp"


def test_verifier_checks_the_credential_scope() -> None:
    assert verify(authorized(), region="ap-singapore-1") == "InvalidCredential"
    headers = authorized()
    headers["Authorization"] = headers["Authorization"].replace("/rtc/", "/iam/")
    assert verify(headers) == "InvalidCredential"
    headers = authorized()
    headers["Authorization"] = headers["Authorization"].replace("20250102/", "20250103/")
    assert verify(headers) == "InvalidCredential"
    headers = authorized()
    headers["Authorization"] = headers["Authorization"].replace(f"{AK}/", "")
    assert verify(headers) == "InvalidCredential"


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host;x-date, Signature=00",
        f"HMAC-SHA256 Credential={AK}/20250102/{REGION}/rtc/request, Signature=00",
        f"HMAC-SHA256 Credential={AK}/20250102/{REGION}/rtc/request SignedHeaders=host",
        # names must be lowercase and unique
        f"HMAC-SHA256 Credential={AK}/20250102/{REGION}/rtc/request, "
        "SignedHeaders=Host;x-date, Signature=00",
        f"HMAC-SHA256 Credential={AK}/20250102/{REGION}/rtc/request, "
        "SignedHeaders=host;x-date;x-date, Signature=00",
        # x-date must be signed, or a captured request could be replayed forever
        f"HMAC-SHA256 Credential={AK}/20250102/{REGION}/rtc/request, "
        "SignedHeaders=content-type;host, Signature=00",
    ],
)
def test_verifier_rejects_a_malformed_authorization(authorization: str) -> None:
    headers = authorized()
    headers["Authorization"] = authorization
    assert verify(headers) == "InvalidAuthorization"


def test_verifier_reports_missing_request_info() -> None:
    headers = authorized()
    del headers["Authorization"]
    assert verify(headers) == "MissingRequestInfo"
    headers = authorized()
    del headers["X-Date"]
    assert verify(headers) == "MissingRequestInfo"
    headers = authorized()
    del headers["Content-Type"]  # named in SignedHeaders but not sent
    assert verify(headers) == "MissingRequestInfo"


# -- round trip over a real socket -----------------------------------------------------------------


class _VerifyingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    credentials: dict[str, Credential] = {}  # noqa: RUF012 - set per server below

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        url = urlsplit(self.path)
        code = verify_signature(
            method=self.command,
            path=url.path,
            query=parse_query(url.query),
            headers=dict(self.headers.items()),
            body=body,
            credentials=self.credentials,
            region=REGION,
        )
        answer = json.dumps({"code": code}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def verifying_server() -> Iterator[str]:
    handler = type(
        "Handler", (_VerifyingHandler,), {"credentials": {AK: Credential(AK, SK, TOKEN)}}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_round_trip_through_httpx(verifying_server: str) -> None:
    body = '{"AppId":"661e4b8f2f1d3c0123456789","RoomId":"room 1","TaskId":"té"}'.encode()
    params = {"Action": "StopVoiceChat", "Version": "2024-12-01", "Foo": "a b/c~*+é"}
    good = VolcengineAuth(AK, SK, REGION, session_token=TOKEN)
    bad = VolcengineAuth(AK, "wrong", REGION, session_token=TOKEN)
    with httpx.Client() as client:
        for auth, expected in ((good, None), (bad, "SignatureDoesNotMatch")):
            response = client.post(f"{verifying_server}/", params=params, content=body, auth=auth)
            assert response.json() == {"code": expected}
