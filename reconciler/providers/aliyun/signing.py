"""Alibaba Cloud signature V3 (`ACS3-HMAC-SHA256`), for the client and for the emulator.

Canonical request = METHOD \\n path \\n sorted RFC 3986 query \\n `name:value\\n` per signed
header \\n signed header names \\n hex sha256 of the body; the string to sign is the algorithm
and the hex sha256 of that; the signature is hex HMAC-SHA256 with the raw secret (no key
derivation, unlike Volcengine's V4). `AcsAuth` signs on the way out, `verify_acs3` re-computes
on the way in over exactly the headers the request names (the official SDK signs accept and
user-agent too), so both ends share one canonicaliser and the published vector pins both.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import httpx

ALGORITHM = "ACS3-HMAC-SHA256"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# How far a request's x-acs-date may be from the server's clock.
VALIDITY = timedelta(minutes=15)
# A request whose signature does not cover these could be replayed against another host, at
# another time, or as another action.
REQUIRED_SIGNED = ("host", "x-acs-action", "x-acs-date", "x-acs-signature-nonce")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_acs_date(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("the signing clock must return an aware datetime")
    return moment.astimezone(UTC).strftime(DATE_FORMAT)


def parse_acs_date(value: str) -> datetime:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_nonce() -> str:
    """32 hex digits, the shape of the SDK's md5-hex nonce; one per attempt."""
    return hashlib.md5(secrets.token_bytes(16), usedforsecurity=False).hexdigest()


def rfc3986(value: str) -> str:
    """Only A-Za-z0-9-_.~ stay literal: space is %20, `*` is %2A, `~` is kept."""
    return quote(value, safe="-_.~")


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    """The canonical query string: pairs sorted by encoded key (stable), RFC 3986 both sides.
    The client sends exactly this string, so what it signs is what goes on the wire."""
    encoded = [(rfc3986(k), rfc3986(v)) for k, v in pairs]
    return "&".join(f"{k}={v}" for k, v in sorted(encoded, key=lambda pair: pair[0]))


def decode_query(raw: str) -> list[tuple[str, str]]:
    """Decoded pairs of a raw query; `+` is a space (the official SDK sends spaces as `+`)."""
    pairs = []
    for part in raw.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote(key.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body_hash: str,
) -> str:
    """`headers` keyed lowercase; each signed header's value trimmed."""
    header_block = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            path or "/",
            encode_query(query),
            header_block,
            ";".join(signed_headers),
            body_hash,
        ]
    )


def string_to_sign(canonical: str) -> str:
    return f"{ALGORITHM}\n{sha256_hex(canonical.encode('utf-8'))}"


def sign(secret: str, canonical: str) -> str:
    message = string_to_sign(canonical).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_header_names(names: Iterable[str]) -> list[str]:
    """What a client signs: host, content-type and every x-acs-* header, sorted."""
    lower = {n.lower() for n in names}
    return sorted(n for n in lower if n in ("host", "content-type") or n.startswith("x-acs-"))


def authorization(access_key_id: str, signed: Sequence[str], signature: str) -> str:
    return (
        f"{ALGORITHM} Credential={access_key_id},"
        f"SignedHeaders={';'.join(signed)},Signature={signature}"
    )


class AcsAuth(httpx.Auth):
    """Signs each attempt afresh: new x-acs-date and x-acs-signature-nonce every time."""

    requires_request_body = True

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        security_token: str | None = None,
        clock: Clock = utc_now,
        nonce: Callable[[], str] = new_nonce,
    ) -> None:
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self._security_token = security_token or None
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        sts = ", sts" if self._security_token else ""
        return f"AcsAuth({self.access_key_id!r}{sts})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        body = request.content
        request.headers["x-acs-date"] = format_acs_date(self._clock())
        request.headers["x-acs-signature-nonce"] = self._nonce()
        request.headers["x-acs-content-sha256"] = sha256_hex(body)
        if self._security_token is not None:
            request.headers["x-acs-security-token"] = self._security_token
        if "host" not in request.headers:
            request.headers["Host"] = request.url.netloc.decode("ascii")
        headers = {k.lower(): v for k, v in request.headers.items()}
        signed = signed_header_names(headers)
        raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
        canonical = canonical_request(
            request.method,
            unquote(raw_path) or "/",
            decode_query(raw_query),
            headers,
            signed,
            headers["x-acs-content-sha256"],
        )
        request.headers["Authorization"] = authorization(
            self.access_key_id, signed, sign(self._secret, canonical)
        )
        yield request


@dataclass(frozen=True, slots=True)
class AcsCredential:
    """One key pair the verifier accepts; an STS pair also names its security token."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Verified:
    """A request whose signature holds: who signed it, and the nonce to check for replay."""

    access_key_id: str
    nonce: str
    signed_at: datetime


@dataclass(frozen=True, slots=True)
class Refused:
    code: str
    message: str


def _parse_authorization(value: str) -> tuple[str, tuple[str, ...], str] | None:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        parts[key] = val
    if set(parts) != {"Credential", "SignedHeaders", "Signature"} or not parts["Credential"]:
        return None
    signed = tuple(parts["SignedHeaders"].split(";"))
    if not all(signed) or any(s != s.lower() for s in signed) or len(set(signed)) != len(signed):
        return None
    return parts["Credential"], signed, parts["Signature"]


def verify_acs3(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, AcsCredential],
    now: datetime,
) -> Verified | Refused:
    """Check one request as the ICE gateway does, except for nonce replay (which needs
    memory: the caller checks `Verified.nonce`). Codes as Alibaba Cloud's gateway names them."""
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    if "authorization" not in lower:
        return Refused("MissingAuthorization", "Authorization header is required.")
    parsed = _parse_authorization(lower["authorization"])
    if parsed is None:
        return Refused("IncompleteSignature", "The Authorization header is malformed.")
    access_key_id, signed, signature = parsed
    if any(name not in signed for name in REQUIRED_SIGNED) or any(
        name not in lower for name in signed
    ):
        return Refused(
            "IncompleteSignature",
            f"The request must sign {', '.join(REQUIRED_SIGNED)} and send every signed header.",
        )
    try:
        signed_at = parse_acs_date(lower["x-acs-date"])
    except ValueError:
        return Refused("InvalidTimeStamp.Format", "Specified x-acs-date is not valid.")
    if abs(now - signed_at) > VALIDITY:
        return Refused("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
    credential = credentials.get(access_key_id)
    if credential is None:
        return Refused("InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    token = lower.get("x-acs-security-token")
    if credential.security_token is not None and token is None:
        return Refused("MissingSecurityToken", "SecurityToken is mandatory for this key.")
    if token is not None and not hmac.compare_digest(
        token.encode(), (credential.security_token or "").encode()
    ):
        return Refused("InvalidSecurityToken.Mismatch", "Specified SecurityToken is invalid.")
    body_hash = sha256_hex(body)
    if lower.get("x-acs-content-sha256", body_hash) != body_hash:
        return Refused("ContentSHA256NotMatched", "The x-acs-content-sha256 does not match.")
    canonical = canonical_request(method, path, query, lower, signed, body_hash)
    if not hmac.compare_digest(sign(credential.access_key_secret, canonical), signature):
        return Refused(
            "SignatureDoesNotMatch",
            "The request signature does not conform to Aliyun standards.",
        )
    return Verified(access_key_id, lower["x-acs-signature-nonce"], signed_at)
