"""The probe's I/O: call CustomLLM endpoints concurrently, time them, feed the judge.

The timeout is the platform's: the answer must start (status line, headers and a first byte of
the stream) within it, and the stream may never go quiet for longer than it before `[DONE]`.
Redirects are not followed: the platform posts to the URL as configured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence

import httpx

from reconciler.core.llm_contract import StreamJudge, excerpt, head_problem, mask
from reconciler.core.llm_probe import ProbeRequest, ProbeResult

DEFAULT_TIMEOUT = 10.0
_ERROR_BODY_BYTES = 2048


async def probe_all(
    requests: Sequence[ProbeRequest],
    timeout: float = DEFAULT_TIMEOUT,
    hidden: Collection[str] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[ProbeRequest, ProbeResult]:
    """Every request at once; each result keyed by its request. `hidden` are the secret values
    masked in any body excerpt (the keys sent are always masked)."""
    masked = {*hidden, *(r.api_key for r in requests if r.api_key)}
    limits = httpx.Limits(max_connections=max(len(requests), 1))
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), limits=limits, transport=transport
    ) as client:
        results = await asyncio.gather(
            *(_probe(client, request, timeout, masked) for request in requests)
        )
    return dict(zip(requests, results, strict=True))


async def _probe(
    client: httpx.AsyncClient, request: ProbeRequest, timeout: float, hidden: Collection[str]
) -> ProbeResult:
    started = time.monotonic()
    # What the timeout interrupted, to be said with the number of seconds.
    stage = "no answer within {t} s"
    status: int | None = None
    judge = StreamJudge()
    first_byte: float | None = None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout) as deadline:
            message = client.build_request(
                "POST", request.url, content=request.body, headers=request.headers()
            )
            response = await client.send(message, stream=True)
            try:
                status = response.status_code
                problem = head_problem(status, response.headers.get("content-type"))
                if problem is not None:
                    if status != 200:
                        problem += ": " + excerpt(await _start_of(response), hidden)
                    return ProbeResult(problem, status)
                stage = "HTTP 200 but no data within {t} s"
                async for piece in response.aiter_bytes():
                    if not piece:
                        continue
                    if first_byte is None:
                        first_byte = time.monotonic() - started
                    judge.feed(piece)
                    if judge.finished:
                        break
                    # The stream may take as long as it needs, but never go quiet for longer.
                    deadline.reschedule(loop.time() + timeout)
                    stage = (
                        f"the stream went quiet for {{t}} s after {judge.chunks} chunk(s), "
                        "before [DONE]"
                    )
                else:
                    judge.finish()
            finally:
                await response.aclose()
    except TimeoutError:
        return ProbeResult(
            "timeout: " + stage.format(t=f"{timeout:g}"), status, first_byte, None, judge.chunks
        )
    except httpx.HTTPError as error:
        # A URL given as a secret reference may be quoted in the error: mask it.
        problem = mask(_transport_problem(error), hidden)
        return ProbeResult(problem, status, first_byte, None, judge.chunks)
    done = time.monotonic() - started if judge.done else None
    return ProbeResult(judge.problem, status, first_byte, done, judge.chunks)


async def _start_of(response: httpx.Response) -> bytes:
    body = b""
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) >= _ERROR_BODY_BYTES:
            break
    return body[:_ERROR_BODY_BYTES]


def _transport_problem(error: httpx.HTTPError) -> str:
    # httpx messages name the URL and the OS reason, never the headers sent.
    reason = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect: {reason}"
    return f"{type(error).__name__}: {reason}"
