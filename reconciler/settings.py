"""Settings: environment (prefix RECONCILER_, nested delimiter __), then reconciler.toml.

Credentials are SecretStr so that they never show in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from reconciler.errors import SettingsError
from reconciler.settings_check import (
    SETTINGS_FILE,
    setting_names,
    toml_problem,
    unknown_environment,
    value_problems,
)


class VolcengineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = "https://rtc.volcengineapi.com"
    region: str = "cn-north-1"
    api_version: str = "2024-12-01"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    timeout: float = Field(default=10.0, gt=0)
    # The RTC app key: signs the join tokens `token volcengine` prints.
    app_key: SecretStr | None = None
    # Signs the VoiceChat event callbacks the daemon receives.
    callback_secret: SecretStr | None = None


class AliyunSettings(BaseModel):
    """Alibaba Cloud IMS (ICE OpenAPI 2020-11-09). The endpoint has no sensible default of its
    own: it follows the region unless set."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None
    region: str = "cn-shanghai"
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    security_token: SecretStr | None = None
    timeout: float = Field(default=10.0, gt=0)
    # The ARTC application the agents join channels of: the AuthToken made at every Start (and
    # by `token aliyun`) is signed with its key.
    artc_app_id: str | None = None
    artc_app_key: SecretStr | None = None
    # The token agent event callbacks carry in their Authorization header.
    callback_token: SecretStr | None = None

    @property
    def resolved_endpoint(self) -> str:
        return self.endpoint or f"https://ice.{self.region}.aliyuncs.com"


class EmulatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = Field(default=8790, ge=0, le=65535)
    access_key_id: str = "AKLTemulator"
    secret_access_key: SecretStr = SecretStr("emulator-secret")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECONCILER_",
        env_nested_delimiter="__",
        toml_file=SETTINGS_FILE,
        # A misspelt key must not be silently ignored (a typo in `max_stops` would lift a guard).
        extra="forbid",
    )

    state: str = ".reconciler/state.db"
    volcengine: VolcengineSettings = VolcengineSettings()
    aliyun: AliyunSettings = AliyunSettings()
    emulator: EmulatorSettings = EmulatorSettings()
    # Calls in flight at once, across all sessions of one apply.
    parallelism: int = Field(default=16, ge=1, le=1024)
    # Requests per second per provider account: Volcengine limits per account, shared by all
    # AppIds, and publishes no figure, so the default stays modest.
    rate_limit: float = Field(default=20.0, gt=0)
    # Running sessions one apply may stop (deletes + restarts) unless --max-stops says more.
    max_stops: int = Field(default=20, ge=0)
    # Attempts per call and the time one call may spend retrying.
    max_attempts: int = Field(default=8, ge=1)
    max_retry_seconds: float = Field(default=120.0, gt=0)
    # A saved plan older than this is refused as stale (seconds; 0 disables the age check):
    # tasks end by themselves, so an old plan describes a cloud that may be gone.
    plan_max_age: float = Field(default=24 * 3600, ge=0)
    # The daemon's HTTP address (health, metrics, status, callbacks); --listen overrides it.
    listen: str = "127.0.0.1:9430"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


@dataclass(frozen=True)
class VolcengineCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None

    def __repr__(self) -> str:
        return f"VolcengineCredentials(access_key_id={self.access_key_id!r}, secret=***)"


@dataclass(frozen=True)
class AliyunCredentials:
    access_key_id: str
    access_key_secret: str
    security_token: str | None

    def __repr__(self) -> str:
        return f"AliyunCredentials(access_key_id={self.access_key_id!r}, secret=***)"


@dataclass(frozen=True)
class ArtcApp:
    """The ARTC app id and key that sign an agent's AuthToken."""

    app_id: str
    app_key: str

    def __repr__(self) -> str:
        return f"ArtcApp(app_id={self.app_id!r}, app_key=***)"


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """The settings, or SettingsError with one line per problem: unknown names (with a hint) and
    bad values, each named as the user wrote it. `environ` must be what pydantic reads too."""
    known = setting_names(Settings)
    toml_path = Path(SETTINGS_FILE)
    problems = unknown_environment(environ, known)
    syntax = toml_problem(toml_path)
    if syntax is not None:
        raise SettingsError("\n".join([*problems, syntax]))
    try:
        settings = Settings()
    except ValidationError as exc:
        problems += value_problems(exc.errors(), environ, known, Settings, toml_path)
        settings = None
    if problems or settings is None:
        raise SettingsError("\n".join(problems) or "invalid settings")
    return settings


def volcengine_credentials(
    settings: Settings, environ: Mapping[str, str] = os.environ
) -> VolcengineCredentials:
    """Credentials from RECONCILER_VOLCENGINE__*, falling back to the SDK's VOLC_* names."""
    volc = settings.volcengine
    access_key = volc.access_key_id or environ.get("VOLC_ACCESSKEY")
    secret = (
        volc.secret_access_key.get_secret_value()
        if volc.secret_access_key
        else environ.get("VOLC_SECRETKEY")
    )
    if not access_key or not secret:
        raise SettingsError(
            "Volcengine credentials are missing: set RECONCILER_VOLCENGINE__ACCESS_KEY_ID and "
            "RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY (or VOLC_ACCESSKEY and VOLC_SECRETKEY)"
        )
    token = volc.session_token.get_secret_value() if volc.session_token else None
    return VolcengineCredentials(access_key, secret, token)


def aliyun_credentials(
    settings: Settings, environ: Mapping[str, str] = os.environ
) -> AliyunCredentials:
    """Credentials from RECONCILER_ALIYUN__*, falling back to the official SDK's
    ALIBABA_CLOUD_ACCESS_KEY_ID / _ACCESS_KEY_SECRET / _SECURITY_TOKEN."""
    ali = settings.aliyun
    access_key = ali.access_key_id or environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = (
        ali.access_key_secret.get_secret_value()
        if ali.access_key_secret
        else environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    )
    if not access_key or not secret:
        raise SettingsError(
            "Alibaba Cloud credentials are missing: set RECONCILER_ALIYUN__ACCESS_KEY_ID and "
            "RECONCILER_ALIYUN__ACCESS_KEY_SECRET (or ALIBABA_CLOUD_ACCESS_KEY_ID and "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET)"
        )
    token = (
        ali.security_token.get_secret_value()
        if ali.security_token
        else environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None
    )
    return AliyunCredentials(access_key, secret, token)


def artc_app(settings: Settings) -> ArtcApp:
    """The ARTC app an agent's AuthToken is made with, or SettingsError naming what is missing."""
    ali = settings.aliyun
    missing = [
        name
        for name, value in (
            ("RECONCILER_ALIYUN__ARTC_APP_ID", ali.artc_app_id),
            ("RECONCILER_ALIYUN__ARTC_APP_KEY", ali.artc_app_key),
        )
        if not value
    ]
    if missing or ali.artc_app_id is None or ali.artc_app_key is None:
        raise SettingsError(
            "the ARTC app that signs Alibaba Cloud agents' AuthTokens is not configured: set "
            + " and ".join(missing)
        )
    return ArtcApp(ali.artc_app_id, ali.artc_app_key.get_secret_value())
