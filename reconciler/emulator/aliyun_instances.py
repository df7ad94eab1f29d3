"""The AI agent instances of the emulated ICE account: the business half of aliyun.py.

`Instances` holds every instance ever started (finished ones stay describable) and carries out
the seven actions on already-verified parameters, raising `Rejected` with the Code the cloud
answers with. Behaviour beyond the documentation, all from ARTC's client rules: a Start into a
channel where a live instance has the same AgentUserId finishes that one (a user id joins a
channel once; the newcomer replaces it), and instances may finish by themselves after
`finish_after` seconds (idle timeout) or on demand (`end`).
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reconciler.emulator.validation import Rejected
from reconciler.providers.aliyun.auth_token import (
    AuthTokenInvalid,
    read_auth_token,
    token_is_genuine,
)

CREATED, EXECUTING, FINISHED = "Created", "Executing", "Finished"
HANGUP_AGENT, HANGUP_USER, HANGUP_SYSTEM = 0, 1, 2
MAX_SPEECH = 1024
MAX_PAGE_SIZE = 100
MAX_PAGE_NUMBER = 100
JSON_PARAMETERS = ("RuntimeConfig", "AgentConfig", "TemplateConfig", "ChatSyncConfig")


@dataclass(slots=True)
class Instance:
    instance_id: str
    agent_id: str
    runtime: dict[str, Any]  # without the AuthToken: it is checked, then forgotten
    agent_config: dict[str, Any]
    template_config: dict[str, Any]
    user_data: str
    session_id: str
    created_at: datetime
    status: str = CREATED
    ended_at: datetime | None = None
    hangup_role: int | None = None
    modified_at: datetime | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)
    speeches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.status != FINISHED

    def finish(self, when: datetime, role: int) -> None:
        self.status, self.ended_at, self.hangup_role, self.modified_at = FINISHED, when, role, when

    def row(self) -> dict[str, Any]:
        """A ListAIAgentInstance row: no InstanceId, no SessionId (the SDK model has neither)."""
        return {
            "AgentConfig": copy.deepcopy(self.agent_config),
            "CallLogUrl": "",
            "RuntimeConfig": copy.deepcopy(self.runtime),
            "Status": self.status,
            "TemplateConfig": copy.deepcopy(self.template_config),
            "UserData": self.user_data,
        }

    def described(self) -> dict[str, Any]:
        end = self.ended_at
        call_info: dict[str, Any] = {"CallStartTime": _iso(self.created_at), "Status": self.status}
        if end is not None:
            call_info["CallEndTime"] = _iso(end)
            call_info["CallDuration"] = int((end - self.created_at).total_seconds())
            call_info["HangupRole"] = self.hangup_role
        return {
            **self.row(),
            "CallInfo": call_info,
            "GmtCreate": _iso(self.created_at),
            "GmtModified": _iso(self.modified_at or self.created_at),
            "SessionId": self.session_id,
        }


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise Rejected(
            "MissingParameter",
            f'The input parameter "{name}" that is mandatory for processing this request '
            "is not supplied.",
        )
    return value


def json_object(params: Mapping[str, str], name: str) -> dict[str, Any]:
    """A nested parameter: one JSON string holding an object ({} when absent)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise Rejected("InvalidParameter", f"The parameter {name} must be a JSON object string.")
    return value


def _merge(into: dict[str, Any], change: Mapping[str, Any]) -> None:
    """UpdateAIAgentInstance merges: objects key by key, anything else replaced."""
    for key, value in change.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class Instances:
    """Not thread-safe by itself: AliyunApi calls it under its lock."""

    def __init__(
        self,
        *,
        artc_app_id: str,
        artc_app_key: str,
        agents: frozenset[str] | None,
        unsubscribed: frozenset[str],
        not_found_code: str,
    ) -> None:
        self._artc_app_id = artc_app_id
        self._artc_app_key = artc_app_key
        self._agents = agents
        self._unsubscribed = unsubscribed
        self._not_found_code = not_found_code
        self.finish_after: float | None = None
        self.table: dict[str, Instance] = {}
        # (ChannelId, AgentUserId) → the instance that last took that seat, live or not.
        self._seats: dict[tuple[str, str], Instance] = {}

    def expire(self, now: datetime) -> None:
        """Finish every instance older than `finish_after`, as an idle timeout would."""
        if self.finish_after is None:
            return
        limit = timedelta(seconds=self.finish_after)
        for instance in self.table.values():
            if instance.live and now - instance.created_at >= limit:
                instance.finish(instance.created_at + limit, HANGUP_SYSTEM)

    def end(self, instance_id: str, role: int, now: datetime) -> bool:
        instance = self.table.get(instance_id)
        if instance is None or not instance.live:
            return False
        instance.finish(now, role)
        return True

    def join(self, instance_id: str, now: datetime) -> bool:
        """The user joined the channel: Created → Executing."""
        instance = self.table.get(instance_id)
        if instance is None or instance.status != CREATED:
            return False
        instance.status, instance.modified_at = EXECUTING, now
        return True

    # -- the actions -------------------------------------------------------------------------------

    def start(self, params: Mapping[str, str], now: datetime) -> dict[str, Any]:
        agent_id = self._agent(params)
        configs = {name: json_object(params, name) for name in JSON_PARAMETERS}
        runtime = configs["RuntimeConfig"]
        if not runtime:
            required(params, "RuntimeConfig")
        channel = self._runtime_string(runtime, "ChannelId")
        user = self._runtime_string(runtime, "AgentUserId")
        self._check_token(self._runtime_string(runtime, "AuthToken"), channel, user, now)
        seated = self._seats.get((channel, user))
        if seated is not None and seated.live:
            seated.finish(now, HANGUP_SYSTEM)  # pushed out of the channel by the newcomer
        instance = Instance(
            instance_id=secrets.token_hex(16),
            agent_id=agent_id,
            runtime={k: v for k, v in runtime.items() if k != "AuthToken"},
            agent_config=configs["AgentConfig"],
            template_config=configs["TemplateConfig"],
            user_data=params.get("UserData", ""),
            session_id=params.get("SessionId", ""),
            created_at=now,
        )
        self.table[instance.instance_id] = instance
        self._seats[(channel, user)] = instance
        return {"InstanceId": instance.instance_id}

    def stop(self, params: Mapping[str, str], now: datetime) -> dict[str, Any]:
        self._live(params).finish(now, HANGUP_AGENT)
        return {}

    def update(self, params: Mapping[str, str], now: datetime) -> dict[str, Any]:
        instance = self._live(params)
        change = {name: json_object(params, name) for name in ("AgentConfig", "TemplateConfig")}
        _merge(instance.agent_config, change["AgentConfig"])
        _merge(instance.template_config, change["TemplateConfig"])
        if "UserData" in params:
            instance.user_data = params["UserData"]
        instance.updates.append({k: v for k, v in params.items() if k != "InstanceId"})
        instance.modified_at = now
        return {}

    def describe(self, params: Mapping[str, str]) -> dict[str, Any]:
        instance = self.table.get(required(params, "InstanceId"))
        if instance is None:
            raise self._not_found(params["InstanceId"])
        return {"Instance": instance.described()}

    def list(self, params: Mapping[str, str]) -> dict[str, Any]:
        agent_id = required(params, "AIAgentId")
        size = self._int(params, "PageSize", 10, 0, MAX_PAGE_SIZE)
        number = self._int(params, "PageNumber", 1, 1, MAX_PAGE_NUMBER)
        rows = [i.row() for i in self.table.values() if i.agent_id == agent_id]
        return {"Instances": rows[(number - 1) * size : number * size]}

    def speak(self, params: Mapping[str, str]) -> dict[str, Any]:
        instance = self._live(params)
        text = required(params, "Text")
        if len(text) > MAX_SPEECH:
            raise Rejected("InvalidParameter", f"Text must be at most {MAX_SPEECH} characters.")
        if params.get("EnableInterrupt", "true").lower() not in ("true", "false"):
            raise Rejected("InvalidParameter", "EnableInterrupt must be true or false.")
        instance.speeches.append({k: v for k, v in params.items() if k != "InstanceId"})
        return {}

    def concurrency(self, params: Mapping[str, str]) -> dict[str, Any]:
        agent_id = params.get("AIAgentId")
        live = [i for i in self.table.values() if i.live and agent_id in (None, i.agent_id)]
        return {"ActiveCount": len(live)}

    # -- checks ------------------------------------------------------------------------------------

    def _agent(self, params: Mapping[str, str]) -> str:
        agent_id = required(params, "AIAgentId")
        if self._agents is not None and agent_id not in self._agents:
            raise Rejected("AgentNotFound", f"The agent {agent_id} does not exist.")
        if agent_id in self._unsubscribed:
            raise Rejected(
                "Forbidden.SubscriptionRequired",
                "The daily free trial quota is used up: subscribe to keep starting calls.",
            )
        return agent_id

    @staticmethod
    def _runtime_string(runtime: Mapping[str, Any], name: str) -> str:
        value = runtime.get(name)
        if value is None or value == "":
            raise Rejected(
                "MissingParameter",
                f'The input parameter "RuntimeConfig.{name}" that is mandatory for processing '
                "this request is not supplied.",
            )
        if not isinstance(value, str):
            raise Rejected("InvalidParameter", f"RuntimeConfig.{name} must be a string.")
        return value

    def _check_token(self, token: str, channel: str, user: str, now: datetime) -> None:
        try:
            claims = read_auth_token(token)
        except AuthTokenInvalid as error:
            raise Rejected(
                "InvalidParameter.AuthToken", f"AuthToken is unreadable: {error}."
            ) from None
        if claims.app_id != self._artc_app_id or not token_is_genuine(claims, self._artc_app_key):
            raise Rejected("InvalidParameter.AuthToken", "AuthToken is not signed by this app.")
        if (claims.channel_id, claims.user_id) != (channel, user):
            raise Rejected(
                "InvalidParameter.AuthToken",
                "AuthToken is for another channel or user than RuntimeConfig names.",
            )
        if claims.expires_at <= now.timestamp():
            raise Rejected("InvalidParameter.AuthToken", "AuthToken has expired.")

    def _live(self, params: Mapping[str, str]) -> Instance:
        instance_id = required(params, "InstanceId")
        instance = self.table.get(instance_id)
        if instance is None or not instance.live:
            raise self._not_found(instance_id)
        return instance

    def _not_found(self, instance_id: str) -> Rejected:
        return Rejected(self._not_found_code, f"The instance {instance_id} does not exist.")

    @staticmethod
    def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise Rejected("InvalidParameter", f"{name} must be an integer from {low} to {high}.")
        return value
