"""What the HTTP shell needs from one emulated cloud API, and the request/reply it passes.

Each provider's API (volcengine.py, aliyun.py) is sans-I/O: it takes one parsed `ApiRequest`
and returns the `Reply` its cloud would give. The shell (server.py) serves every API on one
port, asks each in turn whether a request is its own (`claims`), and routes the unsigned
`/_emulator/<provider>/<endpoint>` inspection calls to that API's `control`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.emulator.faults import Faults


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request as the shell parsed it; header names may be in any case."""

    method: str
    path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back; `drop_connection` means: send nothing and close the socket.

    `outcome` is what the call counters record: "ok", the error Code, or "lost_response".
    """

    status: int
    outcome: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop_connection: bool = False


class ControlError(Exception):
    """A control call the API understood but cannot carry out: answered 400 with the text."""


class EmulatedApi(Protocol):
    name: str

    @property
    def faults(self) -> Faults: ...

    def set_faults(self, faults: Faults) -> None: ...

    def reset(self) -> None: ...

    def calls(self) -> dict[str, Any]: ...

    def claims(self, request: ApiRequest) -> bool:
        """Whether this request is addressed to this cloud's API (not whether it is valid)."""
        ...

    def handle(self, request: ApiRequest) -> Reply: ...

    def control(self, method: str, endpoint: str, data: Mapping[str, Any]) -> Any | None:
        """Answer one inspection call (the JSON to send back), or None for no such endpoint;
        raise ControlError (or KeyError/ValueError/TypeError for a bad body) to refuse it."""
        ...
