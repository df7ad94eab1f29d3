"""`.reconcilerignore` has gitignore semantics (pathspec's GitIgnoreSpec), checked through
discover() on real directories: what a walk reads is what git would track."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.sources import discover

TREE = [
    "a.yaml",
    "tools/gen.yaml",
    "tools/keep.yaml",
    "tools/sub/x.yaml",
    "tools/sub/deep/y.json",
    "ci/pipeline.yml",
    "ci/nested/ci.yml",
    "fixtures/one.fixture.json",
    "team/fixtures/two.json",
    "team/live.toml",
    "build",  # a file named like a directory pattern (not a manifest suffix: never read)
    "build.yaml",
    "out/build/z.yaml",
]


def _found(root: Path, patterns: str) -> list[str]:
    for name in TREE:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    (root / ".reconcilerignore").write_text(patterns)
    files, problems = discover([str(root)])
    assert not problems
    return [Path(f).relative_to(root).as_posix() for f in files]


def _all_but(*skipped: str) -> list[str]:
    manifests = [n for n in TREE if n.endswith((".yaml", ".yml", ".json", ".toml"))]
    return sorted((n for n in manifests if n not in skipped), key=lambda n: (n.count("/") > 0, n))


def _walk_order(names: list[str]) -> list[str]:
    """discover()'s order: a directory's files before its subdirectories, both sorted."""

    def key(name: str) -> tuple[str, ...]:
        parts = name.split("/")
        # Files sort before directories at each level, as os.walk yields them.
        return (*("1" + p for p in parts[:-1]), "0" + parts[-1])

    return sorted(names, key=key)


@pytest.mark.parametrize(
    ("patterns", "skipped"),
    [
        # `*` stops at a slash: a pattern with a slash is anchored and one level deep.
        ("tools/*.yaml\n", ["tools/gen.yaml", "tools/keep.yaml"]),
        # `!` re-includes a file an earlier pattern excluded.
        ("tools/*.yaml\n!tools/keep.yaml\n", ["tools/gen.yaml"]),
        # `**` crosses directories.
        ("tools/**/*.yaml\n", ["tools/gen.yaml", "tools/keep.yaml", "tools/sub/x.yaml"]),
        ("**/fixtures/\n", ["fixtures/one.fixture.json", "team/fixtures/two.json"]),
        # A name without a slash matches at any depth.
        ("ci.yml\n", ["ci/nested/ci.yml"]),
        # A trailing slash matches directories only: the file build.yaml stays, out/build/ goes.
        ("build/\n", ["out/build/z.yaml"]),
        # A leading slash anchors at the ignore file's directory.
        ("/build.yaml\n", ["build.yaml"]),
        ("/z.yaml\n", []),
        # A directory excluded whole cannot have a file brought back (git does not look inside).
        ("ci/\n!ci/pipeline.yml\n", ["ci/pipeline.yml", "ci/nested/ci.yml"]),
        # ...but excluding its contents and then re-including one file works.
        ("ci/**\n!ci/pipeline.yml\n", ["ci/nested/ci.yml"]),
        # Comments and blank lines.
        ("# tools/gen.yaml\n\n  \n", []),
        ("*.fixture.json\n", ["fixtures/one.fixture.json"]),
        # `!tools` names the directory, not the files in it: they stay ignored by `*.yaml`.
        (
            "*.yaml\n!tools\n",
            [
                "a.yaml",
                "build.yaml",
                "out/build/z.yaml",
                "tools/gen.yaml",
                "tools/keep.yaml",
                "tools/sub/x.yaml",
            ],
        ),
    ],
)
def test_gitignore_semantics(tmp_path: Path, patterns: str, skipped: list[str]) -> None:
    expected = _walk_order([n for n in _all_but() if n not in skipped])
    assert _found(tmp_path, patterns) == expected


def test_no_ignore_file_reads_every_manifest(tmp_path: Path) -> None:
    for name in TREE:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    files, _ = discover([str(tmp_path)])
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == _walk_order(_all_but())


def test_a_file_named_explicitly_is_read_even_when_ignored(tmp_path: Path) -> None:
    _found(tmp_path, "tools/\n")
    files, _ = discover([str(tmp_path / "tools" / "gen.yaml")])
    assert files == [str(tmp_path / "tools" / "gen.yaml")]


# -- the same answer as git itself, for random ignore files ---------------------------------

_GIT = shutil.which("git")
_PIECES = ["tools", "sub", "ci", "*", "**", "*.yaml", "x.yaml", "deep", "fixtures", "*.json"]


@st.composite
def _ignore_lines(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        parts = draw(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=3))
        line = "/".join(parts)
        if draw(st.booleans()):
            line = "/" + line
        if draw(st.booleans()):
            line += "/"
        if draw(st.booleans()):
            line = "!" + line
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(_GIT is None, reason="git is not installed")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(patterns=_ignore_lines())
def test_a_walk_reads_exactly_what_git_would_track(tmp_path: Path, patterns: str) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    found = _found(root, patterns)
    assert _GIT is not None
    # Only the ignore file under test: no user or system configuration, no global excludes.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    git = [_GIT, "-c", f"core.excludesFile={os.devnull}"]
    subprocess.run([*git, "init", "-q", str(root)], check=True, env=env)
    (root / ".gitignore").write_text(patterns)
    listed = subprocess.run(
        [*git, "-C", str(root), "ls-files", "--others", "--exclude-standard"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.split()
    tracked = [n for n in listed if n.endswith((".yaml", ".yml", ".json", ".toml"))]
    assert sorted(found) == sorted(tracked), patterns
