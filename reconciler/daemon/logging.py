"""Structured logs (structlog), console or JSON lines, with one redaction step before output.

Every record — our structlog events and the standard-library logging of the libraries we use
(httpx, psycopg) alike — goes through one handler whose formatter runs the same chain:

    timestamp, level, logger name → tracebacks rendered to text → redact → render

so there is exactly one redaction processor in front of the one sink, and it sees the final
text of everything, tracebacks included. It masks
  - the value of any key that names a credential (a word of the key, in snake_case or
    camelCase, is one of secret, key, token, authorization, password, signature, credential...),
  - any string equal to a known secret value, and any occurrence of one (6 characters or more)
    inside a longer string: an error message that quotes a token.
Known secret values are the configured credentials, and whatever the daemon resolves later
(`${env:...}` references in the manifests): `Redactor.add()` takes them at any time.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["console", "json"]
MASK = "<redacted>"
# Shorter values are masked only where a whole string equals them: replacing every "abc"
# inside every message would garble the logs and hide nothing worth hiding.
MIN_SUBSTRING_SECRET = 6
SENSITIVE_WORDS = frozenset(
    {
        "secret",
        "key",
        "apikey",
        "token",
        "authorization",
        "auth",
        "password",
        "passwd",
        "signature",
        "credential",
        "credentials",
        "cookie",
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def sensitive_key(key: str) -> bool:
    """Whether a key names a credential: `api_key`, `AccessKeySecret`, `Authorization` do,
    `keyword` and `session` do not."""
    return any(word.lower() in SENSITIVE_WORDS for word in _WORD.findall(key))


class Redactor:
    """The redaction processor; `add()` makes further values secret from then on."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._exact: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if s} | self._exact
        self._exact = frozenset(values)
        long_ones = sorted((v for v in values if len(v) >= MIN_SUBSTRING_SECRET), key=len)
        # Longest first, so that a secret containing another is masked whole.
        alternatives = "|".join(re.escape(v) for v in reversed(long_ones))
        self._pattern = re.compile(alternatives) if alternatives else None

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        return {key: self._value(key, value) for key, value in event.items()}

    def _value(self, key: str, value: Any) -> Any:
        if key != "event" and sensitive_key(key) and value not in (None, ""):
            return MASK
        return self.scrub(value)

    def scrub(self, value: Any) -> Any:
        """The value with every known secret masked, however deep it sits."""
        if isinstance(value, str):
            if value in self._exact:
                return MASK
            return self._pattern.sub(MASK, value) if self._pattern is not None else value
        if isinstance(value, Mapping):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.scrub(str(value))  # anything else is rendered as its text anyway


class LoggingSetup:
    """What configure_logging() installed; close() takes it away again (tests, restarts)."""

    def __init__(self, redactor: Redactor, handler: logging.Handler) -> None:
        self.redactor = redactor
        self.handler = handler

    def close(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        structlog.reset_defaults()


def configure_logging(
    log_format: LogFormat = "console",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    level: int = logging.INFO,
) -> LoggingSetup:
    """Route structlog and standard logging to `stream` (stderr) as console text or JSON
    lines, every record through one Redactor."""
    if log_format not in ("console", "json"):
        raise ValueError(f"log format {log_format!r}: expected console or json")
    redactor = Redactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # the traceback becomes text, then redacted
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request's URL at INFO, and an Alibaba Cloud request carries the whole
    # agent config (AuthToken included) in its query: only its warnings get through. The
    # daemon logs each call itself, without the payload. watchfiles logs every batch of file
    # events; the daemon logs the pass they cause.
    for chatty in ("httpx", "httpcore", "watchfiles"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return LoggingSetup(redactor, handler)
