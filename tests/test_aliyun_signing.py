"""ACS3-HMAC-SHA256: the published vector, the httpx.Auth that produces it, the verifier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from reconciler.providers.aliyun.signing import (
    EMPTY_BODY_SHA256,
    AcsAuth,
    AcsCredential,
    Refused,
    Verified,
    canonical_request,
    decode_query,
    encode_query,
    sha256_hex,
    sign,
    verify_acs3,
)

# The vector Alibaba Cloud publishes for signature V3.
VECTOR_QUERY = [
    ("ImageId", "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"),
    ("RegionId", "cn-shanghai"),
]
VECTOR_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-version": "2014-05-26",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-content-sha256": EMPTY_BODY_SHA256,
}
VECTOR_HASHED_CANONICAL = "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
VECTOR_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
VECTOR_AT = datetime(2023, 10, 26, 10, 22, 32, tzinfo=UTC)
CREDENTIALS = {"YourAccessKeyId": AcsCredential("YourAccessKeyId", "YourAccessKeySecret")}


def test_the_published_vector() -> None:
    canonical = canonical_request(
        "POST", "/", VECTOR_QUERY, VECTOR_HEADERS, sorted(VECTOR_HEADERS), EMPTY_BODY_SHA256
    )
    assert sha256_hex(canonical.encode()) == VECTOR_HASHED_CANONICAL
    assert sign("YourAccessKeySecret", canonical) == VECTOR_SIGNATURE
    assert sha256_hex(b"") == EMPTY_BODY_SHA256


def signed_vector_request(**auth_kw: object) -> httpx.Request:
    query = encode_query(VECTOR_QUERY)
    request = httpx.Request(
        "POST",
        f"https://ecs.cn-shanghai.aliyuncs.com/?{query}",
        headers={"x-acs-action": "RunInstances", "x-acs-version": "2014-05-26"},
    )
    auth = AcsAuth(
        "YourAccessKeyId",
        "YourAccessKeySecret",
        clock=lambda: VECTOR_AT,
        nonce=lambda: "3156853299f313e23d1673dc12e1703d",
        **auth_kw,  # type: ignore[arg-type]
    )
    return next(auth.auth_flow(request))


def test_the_auth_signs_the_vector_request_as_published() -> None:
    request = signed_vector_request()
    assert request.headers["Authorization"] == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        f"Signature={VECTOR_SIGNATURE}"
    )
    assert request.headers["x-acs-content-sha256"] == EMPTY_BODY_SHA256


def verify(request: httpx.Request, now: datetime = VECTOR_AT) -> Verified | Refused:
    path, _, query = request.url.raw_path.decode().partition("?")
    return verify_acs3(
        method=request.method,
        path=path,
        query=decode_query(query),
        headers=dict(request.headers),
        body=request.content,
        credentials=CREDENTIALS,
        now=now,
    )


def test_the_verifier_accepts_what_the_auth_signs_and_names_the_nonce() -> None:
    verified = verify(signed_vector_request())
    assert verified == Verified("YourAccessKeyId", "3156853299f313e23d1673dc12e1703d", VECTOR_AT)


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (
            lambda r: r.headers.__setitem__("x-acs-action", "DeleteInstances"),
            "SignatureDoesNotMatch",
        ),
        (
            lambda r: r.headers.__setitem__("x-acs-content-sha256", "0" * 64),
            "ContentSHA256NotMatched",
        ),
        (lambda r: r.headers.pop("Authorization"), "MissingAuthorization"),
        (lambda r: r.headers.__setitem__("Authorization", "HMAC x"), "IncompleteSignature"),
        (lambda r: r.headers.__setitem__("x-acs-date", "yesterday"), "InvalidTimeStamp.Format"),
    ],
)
def test_the_verifier_refuses_a_changed_request(tamper: object, code: str) -> None:
    request = signed_vector_request()
    tamper(request)  # type: ignore[operator]
    refused = verify(request)
    assert isinstance(refused, Refused) and refused.code == code


def test_the_query_is_part_of_the_signature() -> None:
    request = signed_vector_request()
    request.url = request.url.copy_with(query=b"ImageId=other&RegionId=cn-shanghai")
    assert verify(request) == Refused(
        "SignatureDoesNotMatch", "The request signature does not conform to Aliyun standards."
    )


def test_dates_beyond_fifteen_minutes_are_expired_either_way() -> None:
    request = signed_vector_request()
    assert isinstance(verify(request, VECTOR_AT + timedelta(minutes=14)), Verified)
    for skew in (timedelta(minutes=16), -timedelta(minutes=16)):
        refused = verify(request, VECTOR_AT + skew)
        assert isinstance(refused, Refused) and refused.code == "InvalidTimeStamp.Expired"


def test_an_unknown_key_and_a_wrong_secret_are_told_apart() -> None:
    request = signed_vector_request()
    path, _, query = request.url.raw_path.decode().partition("?")
    common = {
        "method": "POST",
        "path": path,
        "query": decode_query(query),
        "headers": dict(request.headers),
        "body": b"",
        "now": VECTOR_AT,
    }
    unknown = verify_acs3(credentials={}, **common)  # type: ignore[arg-type]
    wrong = verify_acs3(
        credentials={"YourAccessKeyId": AcsCredential("YourAccessKeyId", "other")},
        **common,  # type: ignore[arg-type]
    )
    assert isinstance(unknown, Refused) and unknown.code == "InvalidAccessKeyId.NotFound"
    assert isinstance(wrong, Refused) and wrong.code == "SignatureDoesNotMatch"


def test_sts_tokens_are_signed_and_must_match() -> None:
    request = signed_vector_request(security_token="sts-token")
    assert "x-acs-security-token" in request.headers["Authorization"]
    sts = {"YourAccessKeyId": AcsCredential("YourAccessKeyId", "YourAccessKeySecret", "sts-token")}
    path, _, query = request.url.raw_path.decode().partition("?")
    common = {"method": "POST", "path": path, "query": decode_query(query), "body": b""}
    ok = verify_acs3(headers=dict(request.headers), credentials=sts, now=VECTOR_AT, **common)  # type: ignore[arg-type]
    assert isinstance(ok, Verified)
    plain = signed_vector_request()
    missing = verify_acs3(headers=dict(plain.headers), credentials=sts, now=VECTOR_AT, **common)  # type: ignore[arg-type]
    assert isinstance(missing, Refused) and missing.code == "MissingSecurityToken"


def test_every_attempt_gets_a_fresh_nonce() -> None:
    auth = AcsAuth("AK", "secret")
    nonces = set()
    for _ in range(3):
        request = httpx.Request("POST", "https://ice.cn-shanghai.aliyuncs.com/")
        nonces.add(next(auth.auth_flow(request)).headers["x-acs-signature-nonce"])
    assert len(nonces) == 3 and all(len(n) == 32 for n in nonces)


def test_rfc3986_query_encoding() -> None:
    encoded = encode_query([("b", "a b*c~d+e"), ("A", "中")])
    assert encoded == "A=%E4%B8%AD&b=a%20b%2Ac~d%2Be"
    assert decode_query("b=a+b%2Ac~d%2Be&A=%E4%B8%AD") == [("b", "a b*c~d+e"), ("A", "中")]
