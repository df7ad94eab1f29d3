"""The shell around the core: finding manifests, settings, the CI recipes and pre-commit hook."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler.errors import SettingsError
from reconciler.settings import load_settings, volcengine_credentials
from reconciler.sources import discover

REPO = Path(__file__).resolve().parent.parent


def test_discover_walks_in_stable_order_skipping_hidden_and_ignored(tmp_path: Path) -> None:
    for name in [
        "b/2.json",
        "b/1.yaml",
        "a.toml",
        ".hidden/x.json",
        "b/.y.json",
        "c/ci.yml",
        "notes.md",
        "d/keep.yml",
        "d/skip.fixture.json",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    (tmp_path / ".reconcilerignore").write_text("# comment\nc/\n*.fixture.json\n")
    files, problems = discover([str(tmp_path)])
    relative = [str(Path(f).relative_to(tmp_path)) for f in files]
    assert relative == ["a.toml", "b/1.yaml", "b/2.json", "d/keep.yml"]
    assert not problems
    files, problems = discover([str(tmp_path / "missing"), str(tmp_path / "notes.md")])
    assert files == [str(tmp_path / "notes.md")]
    assert [str(p) for p in problems] == [f"{tmp_path / 'missing'}: /: no such file or directory"]


def test_settings_from_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("RECONCILER_STATE", "RECONCILER_PARALLELISM", "VOLC_ACCESSKEY", "VOLC_SECRETKEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN", "REGION"):
        monkeypatch.delenv(f"RECONCILER_VOLCENGINE__{name}", raising=False)
    (tmp_path / "reconciler.toml").write_text(
        'state = "from-toml.db"\nparallelism = 4\n[volcengine]\nregion = "cn-beijing"\n'
    )
    monkeypatch.setenv("RECONCILER_PARALLELISM", "9")
    settings = load_settings()
    assert settings.state == "from-toml.db" and settings.parallelism == 9
    assert settings.volcengine.region == "cn-beijing"
    with pytest.raises(SettingsError, match="RECONCILER_VOLCENGINE__ACCESS_KEY_ID"):
        volcengine_credentials(settings, environ={})
    credentials = volcengine_credentials(
        settings, environ={"VOLC_ACCESSKEY": "AKLTx", "VOLC_SECRETKEY": "very-secret"}
    )
    assert credentials.access_key_id == "AKLTx" and credentials.secret_access_key == "very-secret"
    assert "very-secret" not in repr(credentials)
    monkeypatch.setenv("RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("RECONCILER_VOLCENGINE__ACCESS_KEY_ID", "AKLTenv")
    settings = load_settings()
    assert "env-secret" not in repr(settings)
    assert volcengine_credentials(settings, environ={}).secret_access_key == "env-secret"
    monkeypatch.setenv("RECONCILER_PARALLELISM", "lots")
    with pytest.raises(SettingsError, match="RECONCILER_PARALLELISM"):
        load_settings()


def test_pre_commit_hook_validates_manifests() -> None:
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "reconciler-validate" and hook["language"] == "python"
    command = shlex.split(hook["entry"])
    assert command[0] == "reconciler"
    run = [sys.executable, "-m", "reconciler", *command[1:]]
    ok = subprocess.run([*run, "examples"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [*run, "tests/corpus/bad/typo-temperature.json"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "Temprature" in bad.stderr


@pytest.mark.parametrize("recipe", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_recipes_plan_on_review_and_apply_the_saved_plan(recipe: str) -> None:
    text = (REPO / "examples" / "ci" / recipe).read_text()
    assert isinstance(yaml.safe_load(text), dict)
    assert "reconciler validate sessions/" in text
    assert "reconciler plan sessions/ --out plan.json --format markdown" in text
    assert "reconciler apply plan.json --auto-approve" in text
