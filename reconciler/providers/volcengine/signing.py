"""Volcengine "V4" request signing (HMAC-SHA256), for the client and for the emulator.

The steps follow reference/volcengine.md: canonical request → string to sign → derived key →
signature. The pure functions are shared by `VolcengineAuth` (client side) and
`verify_signature` (server side), so both ends canonicalise a request the same way and the test
vectors pin both at once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import httpx

ALGORITHM = "HMAC-SHA256"
SCOPE_TERMINATOR = "request"
DEFAULT_SERVICE = "rtc"
DEFAULT_VALIDITY_SECONDS = 900.0
X_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

# Which request headers the Python/Go SDKs put under the signature besides every `x-*` one.
_SIGNED_PLAIN_HEADERS = frozenset({"content-type", "content-md5", "host"})
# A server refuses signatures that do not cover these: without them a captured request could be
# replayed forever (x-date) or against another host.
_REQUIRED_SIGNED_HEADERS = ("host", "x-date")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_x_date(moment: datetime) -> str:
    """`YYYYMMDD'T'HHMMSS'Z'` in UTC; naive datetimes are refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("the signing clock must return an aware datetime")
    return moment.astimezone(UTC).strftime(X_DATE_FORMAT)


def parse_x_date(value: str) -> datetime:
    """Inverse of `format_x_date`; raises ValueError on anything else."""
    if len(value) != 16:
        raise ValueError(f"X-Date must look like 20250102T030405Z, got {value!r}")
    return datetime.strptime(value, X_DATE_FORMAT).replace(tzinfo=UTC)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def percent_encode(value: str) -> str:
    """Keep only A-Za-z0-9-_.~; everything else is UTF-8 %XX (uppercase), so space is %20."""
    return quote(value, safe="-_.~")


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Split a raw (already percent-encoded) query string into decoded pairs.

    '+' is read as a space, as Go's and Python's form decoders do, so a client that encodes
    spaces as '+' still canonicalises to %20 on both ends.
    """
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Pairs sorted bytewise by raw key, each side percent-encoded, joined k=v&k=v.

    The sort is stable, so repeated keys keep the order they were sent in, as Go's
    url.Values.Encode does.
    """
    ordered = sorted(pairs, key=lambda pair: pair[0].encode("utf-8"))
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in ordered)


def canonical_path(path: str) -> str:
    """The URI path, percent-encoded per segment; an empty path is `/`."""
    if not path:
        return "/"
    return "/".join(percent_encode(unquote(segment)) for segment in path.split("/"))


def normalize_host(host: str) -> str:
    """Default ports are not part of the signed host; any other port is."""
    for default in (":80", ":443"):
        if host.endswith(default):
            return host[: -len(default)]
    return host


def canonical_headers(headers: Mapping[str, str], signed_headers: Sequence[str]) -> str:
    """`name:value\\n` for each signed header, names lowercase; `headers` keyed lowercase."""
    lines = []
    for name in signed_headers:
        value = headers[name].strip()
        if name == "host":
            value = normalize_host(value)
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body_hash: str,
) -> str:
    """The six lines; the canonical-headers block ends with its own newline (hence a blank)."""
    return "\n".join(
        [
            method.upper(),
            canonical_path(path),
            canonical_query(query),
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            body_hash,
        ]
    )


def credential_scope(short_date: str, region: str, service: str) -> str:
    return f"{short_date}/{region}/{service}/{SCOPE_TERMINATOR}"


def string_to_sign(x_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, x_date, scope, sha256_hex(canonical.encode("utf-8"))])


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_access_key: str, short_date: str, region: str, service: str) -> bytes:
    """kDate → kRegion → kService → kSigning; the secret is raw UTF-8 with no prefix."""
    k_date = _hmac(secret_access_key.encode("utf-8"), short_date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, SCOPE_TERMINATOR)


def signature(key: bytes, to_sign: str) -> str:
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(access_key_id: str, scope: str, signed: Sequence[str], sig: str) -> str:
    return (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={sig}"
    )


def default_signed_headers(header_names: Iterable[str]) -> list[str]:
    """Python SDK style: content-type, content-md5, host and every x-* header, sorted."""
    names = {n.lower() for n in header_names}
    return sorted(n for n in names if n in _SIGNED_PLAIN_HEADERS or n.startswith("x-"))


def compute_signature(
    *,
    secret_access_key: str,
    region: str,
    service: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """The hex signature of a request whose `headers` (lowercase keys) include x-date."""
    x_date = headers["x-date"]
    short_date = x_date[:8]
    canonical = canonical_request(method, path, query, headers, signed_headers, sha256_hex(body))
    to_sign = string_to_sign(x_date, credential_scope(short_date, region, service), canonical)
    return signature(signing_key(secret_access_key, short_date, region, service), to_sign)


class VolcengineAuth(httpx.Auth):
    """Signs every httpx request over its exact body bytes (serialise once, sign those bytes)."""

    requires_request_body = True

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        service: str = DEFAULT_SERVICE,
        session_token: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self.region = region
        self.service = service
        self._session_token = session_token
        self._clock = clock

    def __repr__(self) -> str:
        sts = ", sts" if self._session_token else ""
        return f"VolcengineAuth({self.access_key_id!r}, region={self.region!r}{sts})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        body = request.content
        x_date = format_x_date(self._clock())
        request.headers["X-Date"] = x_date
        request.headers["X-Content-Sha256"] = sha256_hex(body)
        if self._session_token is not None:
            request.headers["X-Security-Token"] = self._session_token
        if "host" not in request.headers:
            request.headers["Host"] = request.url.netloc.decode("ascii")
        headers = {k.lower(): v for k, v in request.headers.items()}
        signed = default_signed_headers(headers)
        query = parse_query(request.url.query.decode("ascii"))
        path = request.url.raw_path.decode("ascii").partition("?")[0]
        sig = compute_signature(
            secret_access_key=self._secret_access_key,
            region=self.region,
            service=self.service,
            method=request.method,
            path=path,
            query=query,
            headers=headers,
            signed_headers=signed,
            body=body,
        )
        scope = credential_scope(x_date[:8], self.region, self.service)
        request.headers["Authorization"] = authorization_header(
            self.access_key_id, scope, signed, sig
        )
        yield request


@dataclass(frozen=True, slots=True)
class Credential:
    """One key pair the verifier accepts; an STS pair also names its session token."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _ParsedAuthorization:
    access_key_id: str
    short_date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


def _parse_authorization(value: str) -> _ParsedAuthorization | str:
    """The Authorization header's parts, or the error code saying what is wrong with it."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return "InvalidAuthorization"
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return "InvalidAuthorization"
        fields[key] = val
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        return "InvalidAuthorization"
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        return "InvalidCredential"
    signed = tuple(fields["SignedHeaders"].split(";"))
    # Names must be lowercase and unique; their order is the one the client canonicalised in
    # (the SDKs sort them, but the signature covers whatever order was named).
    if not all(signed) or any(s != s.lower() for s in signed) or len(set(signed)) != len(signed):
        return "InvalidAuthorization"
    access_key_id, short_date, region, service, terminator = scope
    return _ParsedAuthorization(
        access_key_id, short_date, region, service, terminator, signed, fields["Signature"]
    )


def _tokens_match(sent: str | None, expected: str | None) -> bool:
    """A long-term key must come without a token, an STS key with exactly its own."""
    if sent is None or expected is None:
        return sent is None and expected is None
    return hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def verify_signature(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, Credential],
    region: str,
    service: str = DEFAULT_SERVICE,
    now: datetime | None = None,
    validity_seconds: float = DEFAULT_VALIDITY_SECONDS,
) -> str | None:
    """None when the request is validly signed, else the gateway's error code.

    The canonical headers are rebuilt from the SignedHeaders list the client sent (SDKs differ:
    Python/Go sign content-type and every x-* header, Node only host;x-content-sha256;x-date);
    that list must at least cover host and x-date. The body hash is recomputed from the bytes
    received, so a body altered in transit fails the comparison.
    """
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    if "authorization" not in lower or "x-date" not in lower:
        return "MissingRequestInfo"
    parsed = _parse_authorization(lower["authorization"])
    if isinstance(parsed, str):
        return parsed
    try:
        signed_at = parse_x_date(lower["x-date"])
    except ValueError:
        return "InvalidTimestamp"
    current = now if now is not None else utc_now()
    if abs(current - signed_at) > timedelta(seconds=validity_seconds):
        return "InvalidTimestamp"
    if (
        parsed.short_date != lower["x-date"][:8]
        or parsed.region != region
        or parsed.service != service
        or parsed.terminator != SCOPE_TERMINATOR
    ):
        return "InvalidCredential"
    credential = credentials.get(parsed.access_key_id)
    if credential is None:
        return "InvalidAccessKey"
    if not _tokens_match(lower.get("x-security-token"), credential.session_token):
        return "InvalidSecretToken"
    if any(name not in parsed.signed_headers for name in _REQUIRED_SIGNED_HEADERS):
        return "InvalidAuthorization"
    if any(name not in lower for name in parsed.signed_headers):
        return "MissingRequestInfo"
    expected = compute_signature(
        secret_access_key=credential.secret_access_key,
        region=region,
        service=service,
        method=method,
        path=path,
        query=query,
        headers=lower,
        signed_headers=parsed.signed_headers,
        body=body,
    )
    if not hmac.compare_digest(expected, parsed.signature):
        return "SignatureDoesNotMatch"
    return None
