"""The CustomLLM callback contract, judged: what a Volcengine voice agent needs from your LLM.

The platform POSTs an OpenAI-style chat request and reads the answer as a server-sent event
stream. The agent stays silent, without any error a user sees, unless the answer is:
HTTP 200 within 10 s, `Content-Type: text/event-stream`, every event a single `data:` line
holding a `chat.completion.chunk` (the same `id` and `created` on every chunk), and a final
`data: [DONE]`. Pure: the shell feeds the bytes as they arrive and measures the time.

Leniency, where the contract is silent: SSE comment lines (`: keep-alive`) are skipped, `\\r\\n`
and `\\r` line ends are accepted, `Content-Type` parameters (`; charset=utf-8`) are allowed,
and `data: [DONE]` is accepted without the blank line after it. Anything else is a problem.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/event-stream"
CHUNK_OBJECT = "chat.completion.chunk"
DONE = "[DONE]"
# An answer this large without [DONE] is not a voice reply: stop reading it.
MAX_STREAM_BYTES = 1024 * 1024
_EXCERPT_CHARS = 200


def head_problem(status: int, content_type: str | None) -> str | None:
    """What is wrong with the status line and headers, or None. A non-200 status is judged by
    the caller, which reads a body excerpt to go with it."""
    if status != 200:
        return f"HTTP {status}"
    if content_type is None:
        return f"no Content-Type header; it must be {CONTENT_TYPE}"
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != CONTENT_TYPE:
        return f"Content-Type is {content_type!r}, not {CONTENT_TYPE}"
    return None


def excerpt(body: bytes, hidden: Iterable[str]) -> str:
    """The start of an error body on one line, with every secret value masked (an endpoint may
    echo the Authorization header it was sent)."""
    text = " ".join(mask(body.decode("utf-8", errors="replace"), hidden).split())
    if not text:
        return "(empty body)"
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"


def mask(text: str, hidden: Iterable[str]) -> str:
    """`text` with every secret value replaced by ***, longest first."""
    for value in sorted((v for v in hidden if v), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


class StreamJudge:
    """Reads an SSE answer incrementally. After each `feed`, `problem` is the first breach of
    the contract found (then stop reading) and `done` says `[DONE]` arrived (stop reading too).
    At the end of the stream call `finish` for what a stream that just stops lacks."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._pending = ""
        self._line_no = 0
        self._size = 0
        self._data_in_event = False
        self._id: Any = None
        self._created: Any = None
        self.chunks = 0
        self.done = False
        self.problem: str | None = None

    @property
    def finished(self) -> bool:
        return self.done or self.problem is not None

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        self._size += len(data)
        if self._size > MAX_STREAM_BYTES:
            self.problem = f"more than {MAX_STREAM_BYTES // 1024} KiB without data: [DONE]"
            return
        try:
            self._pending += self._decoder.decode(data)
        except UnicodeDecodeError:
            self.problem = f"line {self._line_no + 1}: the stream is not UTF-8"
            return
        self._take_lines(final=False)

    def finish(self) -> None:
        """The stream ended (the server closed it)."""
        if self.finished:
            return
        try:
            self._pending += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            self.problem = "the stream ends in the middle of a UTF-8 character"
            return
        self._take_lines(final=True)
        if self.finished:
            return
        if self.chunks == 0:
            self.problem = "the stream ended without any data: line (no chunk, no [DONE])"
        else:
            self.problem = f"the stream ended after {self.chunks} chunk(s) without data: [DONE]"

    def _take_lines(self, final: bool) -> None:
        while not self.finished:
            cut = _line_end(self._pending, final)
            if cut is None:
                return
            end, skip = cut
            line, self._pending = self._pending[:end], self._pending[end + skip :]
            self._line_no += 1
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            self._data_in_event = False  # the blank line that ends an event
            return
        if line.startswith(":"):
            return  # an SSE comment, e.g. a keep-alive
        field, _, value = line.partition(":")
        if field != "data":
            shown = line if len(line) <= 40 else line[:40] + "…"
            self.problem = (
                f"line {self._line_no}: {shown!r} is not a data: line "
                "(every event must be one data: line)"
            )
            return
        value = value[1:] if value.startswith(" ") else value
        if value.strip() == DONE:
            if self.chunks == 0:
                self.problem = "data: [DONE] came before any chunk: the agent would say nothing"
            else:
                self.done = True
            return
        if self._data_in_event:
            self.problem = (
                f"line {self._line_no}: a second data: line in one event (no blank line "
                "between them): an SSE reader joins them into one invalid chunk"
            )
            return
        self._data_in_event = True
        self.chunks += 1
        self.problem = self._chunk_problem(value)

    def _chunk_problem(self, value: str) -> str | None:
        where = f"chunk {self.chunks} (line {self._line_no})"
        try:
            chunk = json.loads(value)
        except ValueError as error:
            return f"{where} is not JSON: {error}"
        if not isinstance(chunk, dict):
            return f"{where} is not a JSON object"
        problem = _fields_problem(chunk)
        if problem is not None:
            return f"{where}: {problem}"
        if self.chunks == 1:
            self._id, self._created = chunk["id"], chunk["created"]
            return None
        for name, first in (("id", self._id), ("created", self._created)):
            if chunk[name] != first:
                return (
                    f"{where}: `{name}` is {chunk[name]!r} but chunk 1 had {first!r}; "
                    "every chunk must carry the same one"
                )
        return None


def _fields_problem(chunk: Mapping[str, Any]) -> str | None:
    if chunk.get("object") != CHUNK_OBJECT:
        shown = repr(chunk["object"]) if "object" in chunk else "missing"
        return f'`object` is {shown}, not "{CHUNK_OBJECT}"'
    chunk_id = chunk.get("id")
    if not isinstance(chunk_id, str) or not chunk_id:
        return "`id` is missing or not a non-empty string"
    created = chunk.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        return "`created` is missing or not an integer (Unix seconds)"
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return "`choices` is missing or not an array"
    for index, choice in enumerate(choices):
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            return f"`choices[{index}].delta` is missing or not an object"
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            return f"`choices[{index}].delta.content` is not a string"
    return None


def _line_end(text: str, final: bool) -> tuple[int, int] | None:
    """Where the first line of `text` ends and how long its end marker is (\\n, \\r\\n or \\r),
    or None while it may still grow. A lone \\r at the end waits for the next byte (it may be
    the start of \\r\\n), unless the stream is over."""
    newline, carriage = text.find("\n"), text.find("\r")
    if carriage == -1 or (newline != -1 and newline < carriage):
        if newline != -1:
            return newline, 1
        return (len(text), 0) if final and text else None
    if carriage + 1 < len(text):
        return carriage, 2 if text[carriage + 1] == "\n" else 1
    return (carriage, 1) if final else None
