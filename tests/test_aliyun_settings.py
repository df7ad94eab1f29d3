"""Alibaba Cloud settings: names, the official SDK's fallbacks, and what is missing."""

from __future__ import annotations

import pytest

from reconciler.errors import SettingsError
from reconciler.settings import Settings, aliyun_credentials, artc_app


def test_endpoint_follows_the_region_unless_set() -> None:
    settings = Settings.model_validate({"aliyun": {"region": "cn-beijing"}})
    assert settings.aliyun.resolved_endpoint == "https://ice.cn-beijing.aliyuncs.com"
    settings = Settings.model_validate({"aliyun": {"endpoint": "http://127.0.0.1:1"}})
    assert settings.aliyun.resolved_endpoint == "http://127.0.0.1:1"


def test_credentials_fall_back_to_the_sdk_names() -> None:
    environ = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIsdk",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sdk-secret",
        "ALIBABA_CLOUD_SECURITY_TOKEN": "sts",
    }
    credentials = aliyun_credentials(Settings(), environ)
    assert (credentials.access_key_id, credentials.access_key_secret) == ("LTAIsdk", "sdk-secret")
    assert credentials.security_token == "sts"
    assert "sdk-secret" not in repr(credentials)
    ours = Settings.model_validate(
        {"aliyun": {"access_key_id": "LTAIours", "access_key_secret": "ours"}}
    )
    assert aliyun_credentials(ours, environ).access_key_id == "LTAIours"
    assert aliyun_credentials(ours, environ).access_key_secret == "ours"


def test_missing_credentials_name_both_spellings() -> None:
    with pytest.raises(SettingsError, match=r"RECONCILER_ALIYUN__ACCESS_KEY_ID.*ALIBABA_CLOUD_"):
        aliyun_credentials(Settings(), {})


def test_artc_app_names_what_is_missing() -> None:
    with pytest.raises(SettingsError, match="RECONCILER_ALIYUN__ARTC_APP_KEY") as caught:
        artc_app(Settings.model_validate({"aliyun": {"artc_app_id": "app"}}))
    assert "ARTC_APP_ID" not in str(caught.value)
    app = artc_app(
        Settings.model_validate({"aliyun": {"artc_app_id": "app", "artc_app_key": "k3y"}})
    )
    assert (app.app_id, app.app_key) == ("app", "k3y")
    assert "k3y" not in repr(app)
