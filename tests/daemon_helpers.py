"""The daemon as a user runs it: `python -m reconciler watch` in a process of its own.

`WatchProcess` starts it against a real directory, the emulator on 127.0.0.1 and a real state
(SQLite file or PostgreSQL schema), reads its JSON log lines from stderr (the port it listens
on, its passes, its actions), talks to its HTTP surface, and stops it by the pid it started —
SIGTERM first, SIGKILL if it does not exit, always.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from apply_helpers import _child_environ

CALLBACK_SECRET = "volc-callback-secret-0123456789"
CALLBACK_TOKEN = "aliyun-callback-token-abcdef"


class WatchProcess:
    def __init__(
        self,
        paths: Sequence[Path | str],
        env: Mapping[str, str],
        cwd: Path,
        *extra: str,
        resync: float = 3600,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "reconciler",
            "watch",
            *map(str, paths),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--resync",
            str(resync),
            *extra,
        ]
        environ = _child_environ(env)
        environ.setdefault("RECONCILER_VOLCENGINE__CALLBACK_SECRET", CALLBACK_SECRET)
        environ.setdefault("RECONCILER_ALIYUN__CALLBACK_TOKEN", CALLBACK_TOKEN)
        self.process = subprocess.Popen(
            argv,
            env=environ,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for_log("listening")["port"])
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        self.lines.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    # -- logs -----------------------------------------------------------------------------

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [line for line in self.lines if line.get("event") == name]

    def wait_for_log(
        self,
        name: str,
        where: Callable[[dict[str, Any]], bool] = lambda line: True,
        *,
        after: int = 0,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """The first log line named `name` (the `after`-th onwards) that satisfies `where`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if line.get("event") == name and where(line)]
                if len(found) > after:
                    return found[after]
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"the daemon exited before logging {name!r}:\n{self.log}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name!r} log line within {timeout} s:\n{self.log}")
                self._changed.wait(min(left, 0.2))

    def passes(self) -> list[dict[str, Any]]:
        return self.events("pass")

    def wait_for_pass(self, count: int, timeout: float = 30) -> dict[str, Any]:
        """The `count`-th pass (1-based) once it has finished."""
        return self.wait_for_log("pass", after=count - 1, timeout=timeout)

    @property
    def log(self) -> str:
        with self._changed:
            return "".join(self.raw[-200:])

    # -- HTTP -----------------------------------------------------------------------------

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = self.get("/status").json()
        return document

    def sessions(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.status()["sessions"]}

    def metrics(self) -> str:
        return self.get("/metrics").text

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return self.http.post(path, content=body, headers=dict(headers or {}))

    # -- stopping -------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code; SIGKILL if it is not gone within `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"the daemon ignored SIGTERM for {timeout} s:\n{self.log}"
            ) from None
        finally:
            self.http.close()
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Make sure it is gone (a test's finally)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)
        self.http.close()


def signed_volcengine_event(
    app_id: str,
    room_id: str,
    task_id: str,
    *,
    stage: str = "taskStop",
    at_ms: int | None = None,
    secret: str = CALLBACK_SECRET,
) -> bytes:
    """A VoiceChat event envelope as the RTC console sends it, signed as the reference says:
    SHA-256 over the sorted values of the signed fields and the secret (written out here, not
    taken from the code under test)."""
    data = {
        "AppId": app_id,
        "BusinessId": "",
        "RoomId": room_id,
        "TaskId": task_id,
        "UserID": "user-1",
        "RoundID": 1,
        "EventTime": at_ms if at_ms is not None else int(time.time() * 1000),
        "EventType": 0,
        "RunStage": stage,
    }
    envelope: dict[str, Any] = {
        "EventType": "VoiceChat",
        "EventData": json.dumps(data, separators=(",", ":")),
        "EventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "EventId": f"evt-{time.monotonic_ns()}",
        "AppId": app_id,
        "Version": "2020-12-01",
        "Nonce": "4f7a",
    }
    values = [str(envelope[k]) for k in envelope] + [secret]
    envelope["Signature"] = hashlib.sha256(
        b"".join(sorted(v.encode("utf-8") for v in values))
    ).hexdigest()
    return json.dumps(envelope).encode("utf-8")


def aliyun_event(instance: Mapping[str, Any], event: str = "agent_stop") -> bytes:
    """An agent event as IMS posts it, with the instance's own UserData (our owner tag)."""
    body = {
        "aiAgentId": instance["AIAgentId"],
        "instanceId": instance["InstanceId"],
        "event": event,
        "data": {},
        "code": 0,
        "message": "",
        "timestamp": int(time.time() * 1000),
        "userData": instance.get("UserData", ""),
        "extendData": "",
    }
    return json.dumps(body).encode("utf-8")


def wait_until(condition: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
