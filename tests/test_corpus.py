"""The bad-input corpus, the good edge cases, the examples and the JSON Schemas themselves.

- every case under tests/corpus/bad/ fails `reconciler validate` with the line listed in its
  expected.toml; every case under tests/corpus/good/ and the examples pass;
- jsonschema and the Rust validator (jsonschema-rs) give the same verdict on every part of every
  corpus document;
- the schemas are valid draft-07, described, closed, and their sensitive fields accept references;
- the examples hold no literal credential.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.core.messages import NOT_BLANK
from reconciler.core.schema_set import fast_validator
from reconciler.sources import discover

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"
EXAMPLES = REPO / "examples"
BAD = REPO / "tests" / "corpus" / "bad"
GOOD = REPO / "tests" / "corpus" / "good"
BAD_ARG = "tests/corpus/bad"  # how the cases are named on the command line (cwd = REPO)
SUFFIXES = (".json", ".toml", ".yaml", ".yml")
REFERENCE = re.compile(r"^\$\{(env:[A-Za-z_][A-Za-z0-9_]*|file:[^}]+)\}$")

EXPECTED: list[dict[str, str]] = tomllib.loads((BAD / "expected.toml").read_text("utf-8"))["cases"]


# ---------------------------------------------------------------------------------------------
# helpers


def run_validate(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, list[str]]:
    from reconciler.cli import main  # imported here: the CLI is written concurrently

    capsys.readouterr()
    try:
        code = main(["validate", *paths])
    except SystemExit as exit_:  # a CLI may also exit instead of returning its code
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err.splitlines()


def load_schema(name: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate key in {name}: {keys}"
        return dict(pairs)

    schema: dict[str, Any] = json.loads(
        (SCHEMAS / name).read_text("utf-8"), object_pairs_hook=no_duplicates
    )
    return schema


MANIFEST = load_schema("manifest.schema.json")
VOLCENGINE = load_schema("volcengine.schema.json")
ALIYUN = load_schema("aliyun.schema.json")
PROVIDER_SCHEMAS = {"volcengine": VOLCENGINE, "aliyun": ALIYUN}


def parse(path: Path) -> Any:
    """Parse a corpus file independently of the reconciler; raise ValueError when unparseable."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
        if path.suffix == ".json":
            return json.loads(text)
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except (
        UnicodeDecodeError,
        ValueError,
        yaml.YAMLError,
    ) as exc:  # JSON/TOML errors are ValueErrors
        raise ValueError(str(exc)) from exc


def manifest_files(root: Path) -> list[Path]:
    """The manifests under root, as the CLI finds them (hidden and .reconcilerignore'd skipped)."""
    files, _ = discover([str(root)])
    return sorted(Path(p) for p in files if Path(p).name != "expected.toml")


def deep_merge(base: Any, over: Any) -> Any:
    """The documented defaults rule: objects merge recursively, the session wins, arrays replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    return over


def without_passthrough(spec: dict[str, Any], pointers: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    for pointer in pointers if isinstance(pointers, list) else []:
        if not isinstance(pointer, str) or not pointer.startswith("/"):
            continue
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
        node: Any = spec
        for token in tokens[:-1]:
            node = node.get(token) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(tokens[-1], None)
    return spec


def spec_parts(document: Any) -> Iterator[tuple[str, Any]]:
    """(label, spec as the validator checks it) for every volcengine session of a manifest."""
    if not isinstance(document, dict):
        return
    raw_defaults, raw_sessions = document.get("defaults"), document.get("sessions")
    defaults = raw_defaults if isinstance(raw_defaults, dict) else {}
    sessions = raw_sessions if isinstance(raw_sessions, list) else []
    for index, session in enumerate(sessions):
        if not isinstance(session, dict):
            continue
        merged = deep_merge(defaults, session)
        if merged.get("provider") == "volcengine" and isinstance(merged.get("spec"), dict):
            yield (
                f"/sessions/{index}/spec",
                without_passthrough(merged["spec"], merged.get("passthrough")),
            )


def resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = root
        for token in ref[2:].split("/"):
            target = target[token]
        node = target
    return node


def sensitive_values(
    value: Any, node: dict[str, Any], pointer: str = "", root: dict[str, Any] | None = None
) -> Iterator[tuple[str, Any]]:
    """Walk a spec along its provider's schema, yielding the values of x-sensitive fields."""
    root = node if root is None else root
    node = resolve(node, root)
    if node.get("x-sensitive"):
        yield pointer, value
        return
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for key, child in value.items():
            if key in properties:
                yield from sensitive_values(child, properties[key], f"{pointer}/{key}", root)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, child in enumerate(value):
            yield from sensitive_values(child, node["items"], f"{pointer}/{index}", root)


def spec_parts_by_provider(document: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(pointer, provider, spec) of the defaults and of each session, the provider as merged."""
    if not isinstance(document, dict):
        return
    defaults = document.get("defaults") if isinstance(document.get("defaults"), dict) else {}
    if isinstance(defaults.get("spec"), dict):
        yield "/defaults/spec", str(defaults.get("provider")), defaults["spec"]
    for index, session in enumerate(document.get("sessions") or []):
        if isinstance(session, dict) and isinstance(session.get("spec"), dict):
            provider = str(session.get("provider", defaults.get("provider")))
            yield f"/sessions/{index}/spec", provider, session["spec"]


SUBSCHEMA_KEYWORDS = ("items", "additionalProperties", "propertyNames", "not", "if", "then", "else")


def schema_nodes(node: Any, pointer: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema of a schema document, with its location."""
    if isinstance(node, dict):
        yield pointer, node
        for key, child in node.items():
            if key in ("properties", "definitions"):
                for name, sub in child.items():
                    yield from schema_nodes(sub, f"{pointer}/{key}/{name}")
            elif key in SUBSCHEMA_KEYWORDS:
                yield from schema_nodes(child, f"{pointer}/{key}")
            elif key in ("allOf", "anyOf", "oneOf"):
                for index, sub in enumerate(child):
                    yield from schema_nodes(sub, f"{pointer}/{key}/{index}")


# ---------------------------------------------------------------------------------------------
# the bad corpus through the CLI


def _case_id(case: dict[str, str]) -> str:
    return case["path"]


@pytest.mark.parametrize("case", EXPECTED, ids=_case_id)
def test_bad_case_is_reported(
    case: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    code, lines = run_validate(capsys, f"{BAD_ARG}/{case['path']}")
    assert code == 1, f"expected exit 1, got {code}; stderr: {lines}"
    head = re.compile(
        re.escape(f"{BAD_ARG}/{case['file']}") + r"(?::\d+)?: " + re.escape(case["pointer"]) + ": "
    )
    fragment = case["message"].replace("{base}", BAD_ARG).lower()
    matching = [
        line for line in lines if (m := head.match(line)) and fragment in line[m.end() :].lower()
    ]
    assert matching, (
        f"no stderr line '{case['file']}[:line]: {case['pointer']}: ...{fragment}...'; got:\n"
        + "\n".join(lines)
    )
    if "absent" in case:
        assert all(case["absent"].lower() not in line.lower() for line in matching), matching


def test_file_over_8_mib_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    padding = "x" * (8 * 1024 * 1024)
    Path("huge.json").write_text('{"sessions": [], "padding": "' + padding + '"}', "utf-8")
    code, lines = run_validate(capsys, "huge.json")
    assert code == 1
    head = re.compile(r"huge\.json(?::\d+)?: /: ")
    assert any(
        head.match(line) and "larger than the 8 mib limit" in line.lower() for line in lines
    ), lines


def test_bad_files_given_together_are_all_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several bad files given together: each is reported, none hides another."""
    monkeypatch.chdir(REPO)
    chosen = ["typo-temperature.json", "label-not-string.toml", "provider-gcp.yaml"]
    code, lines = run_validate(capsys, *(f"{BAD_ARG}/{name}" for name in chosen))
    assert code == 1
    for name in chosen:
        assert any(line.startswith(f"{BAD_ARG}/{name}:") for line in lines), (name, lines)


# ---------------------------------------------------------------------------------------------
# valid inputs through the CLI

GOOD_CASES = sorted(p.name for p in GOOD.iterdir() if not p.name.startswith("."))
EXAMPLE_FILES = [str(p.relative_to(REPO)) for p in manifest_files(EXAMPLES)]


@pytest.mark.parametrize("name", GOOD_CASES)
def test_good_case_is_valid(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    code, lines = run_validate(capsys, f"tests/corpus/good/{name}")
    assert (code, lines) == (0, [])


def test_good_corpus_is_valid_as_one_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert run_validate(capsys, "tests/corpus/good") == (0, [])


@pytest.mark.parametrize("path", EXAMPLE_FILES)
def test_example_file_is_valid(
    path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert run_validate(capsys, path) == (0, [])


def test_examples_are_valid_as_one_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert run_validate(capsys, "examples") == (0, [])


# ---------------------------------------------------------------------------------------------
# the corpus itself


def test_expected_toml_lists_every_case_once() -> None:
    listed = [case["path"] for case in EXPECTED]
    assert len(listed) == len(set(listed))
    on_disk = sorted(
        p.name for p in BAD.iterdir() if p.name != "expected.toml" and not p.name.startswith(".")
    )
    assert sorted(listed) == on_disk
    for case in EXPECTED:
        assert set(case) <= {"path", "file", "pointer", "message", "about", "absent"}, case
        target = BAD / case["path"]
        assert (BAD / case["file"]).is_file(), case
        if target.is_dir():
            assert len(list(target.iterdir())) >= 2 and case["file"].startswith(
                case["path"] + "/"
            ), case
        else:
            assert case["file"] == case["path"], case
        assert case["pointer"] == "/" or re.fullmatch(r"(/[^/]+)+", case["pointer"]), case
    assert len(EXPECTED) >= 36
    suffixes = {Path(f).suffix for case in EXPECTED for f in [case["file"]]}
    assert {".json", ".toml", ".yaml"} <= suffixes


def test_examples_cover_the_documented_features() -> None:
    files = manifest_files(EXAMPLES)
    assert {p.suffix for p in files} >= {".json", ".toml", ".yaml"}
    documents = [parse(p) for p in files]
    sessions = [s for d in documents for s in d.get("sessions", [])]
    merged = [
        deep_merge(d.get("defaults", {}), s) for d in documents for s in d.get("sessions", [])
    ]
    assert 6 <= len(sessions) <= 12
    assert any(d.get("defaults") for d in documents)
    assert any(s.get("protect") is True for s in sessions)
    assert any(s.get("announcements") for s in sessions)
    assert all(s.get("labels") for s in merged)
    # A mixed desired set: both providers, each in more than one format.
    volc = [m for m in merged if m["provider"] == "volcengine"]
    ali = [m for m in merged if m["provider"] == "aliyun"]
    assert len(volc) + len(ali) == len(merged) and volc and ali
    for provider in ("volcengine", "aliyun"):
        found = {p.suffix for p, d in zip(files, documents, strict=True) if _declares(d, provider)}
        assert len(found) >= 2, (provider, found)
    modes = {m["spec"]["Config"]["LLMConfig"]["Mode"] for m in volc}
    assert modes == {"ArkV3", "CustomLLM"}
    identities = [(m["spec"]["AppId"], m["spec"]["RoomId"], m["spec"]["TaskId"]) for m in volc]
    assert len(identities) == len(set(identities))
    runtime = [m["spec"]["RuntimeConfig"] for m in ali]
    seats = [
        (m["spec"]["AIAgentId"], r["ChannelId"], r["AgentUserId"])
        for m, r in zip(ali, runtime, strict=True)
    ]
    assert len(seats) == len(set(seats))
    assert any(len(a["message"]) > 200 for m in ali for a in m.get("announcements", []))
    assert all("AuthToken" not in r for r in runtime)
    names = [s["name"] for s in sessions]
    assert len(names) == len(set(names))


def _declares(document: Any, provider: str) -> bool:
    defaults = document.get("defaults") or {}
    return any(
        s.get("provider", defaults.get("provider")) == provider
        for s in document.get("sessions") or []
    )


def test_examples_readme_names_every_environment_variable() -> None:
    readme = (EXAMPLES / "README.md").read_text("utf-8")
    used = {
        m
        for p in manifest_files(EXAMPLES)
        for m in re.findall(r"\$\{env:([A-Za-z0-9_]+)\}", p.read_text("utf-8"))
    }
    assert used
    assert all(name in readme for name in used), used


# ---------------------------------------------------------------------------------------------
# jsonschema and the Rust validator agree


@pytest.fixture(scope="module")
def validators() -> dict[str, tuple[Any, Any]]:
    return {
        "manifest": (
            jsonschema.Draft7Validator(MANIFEST),
            fast_validator(MANIFEST),
        ),
        "volcengine": (
            jsonschema.Draft7Validator(VOLCENGINE),
            fast_validator(VOLCENGINE),
        ),
    }


def _fast_verdict(compiled: Any, instance: Any) -> bool:
    return bool(compiled.is_valid(instance))


CORPUS_FILES = [
    str(p.relative_to(REPO)) for root in (BAD, GOOD, EXAMPLES) for p in manifest_files(root)
]


@pytest.mark.parametrize("path", CORPUS_FILES)
def test_both_validators_agree(path: str, validators: dict[str, tuple[Any, Any]]) -> None:
    try:
        document = parse(REPO / path)
    except ValueError:
        pytest.skip("unparseable: the loader's business, not the schema's")
    parts: list[tuple[str, str, Any]] = [("manifest", "/", document)]
    parts += [("volcengine", label, spec) for label, spec in spec_parts(document)]
    for schema, label, instance in parts:
        slow, fast = validators[schema]
        assert slow.is_valid(instance) == _fast_verdict(fast, instance), (
            f"{path} {label} ({schema})"
        )


@pytest.mark.parametrize(
    "value",
    ["room-1", "room-1\n", "\nroom-1", "room 1", "r" * 128, "r" * 129, "", "${env:ROOM}", "ルーム"],
)
def test_both_validators_agree_on_id_edge_cases(
    value: str, validators: dict[str, tuple[Any, Any]]
) -> None:
    document = parse(GOOD / "secret-references.toml")
    _, spec = next(spec_parts(document))
    spec["RoomId"] = value
    slow, fast = validators["volcengine"]
    assert slow.is_valid(spec) == _fast_verdict(fast, spec)
    assert slow.is_valid(spec) == (value in ("room-1", "r" * 128))


# ---------------------------------------------------------------------------------------------
# the schemas


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMAS.glob("*.json")))
def test_schema_is_valid_draft7(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema.get("$id") and schema.get("title") and schema.get("description")
    jsonschema.Draft7Validator.check_schema(schema)
    fast_validator(schema)


@pytest.mark.parametrize("schema", [MANIFEST, VOLCENGINE], ids=["manifest", "volcengine"])
def test_every_property_is_described(schema: dict[str, Any]) -> None:
    missing = []
    for pointer, node in schema_nodes(schema):
        if re.search(r"/(if|then|else|not)(/|$)", pointer):
            continue  # conditions restate known properties; they describe nothing new
        for name, sub in node.get("properties", {}).items():
            if not isinstance(sub, dict):
                continue
            if not resolve(sub, schema).get("description") and not sub.get("description"):
                missing.append(f"{pointer}/properties/{name}")
    assert not missing


# objects deliberately open: user data, or a body passed through unchecked
TOOL_PARAMETERS = "#/definitions/LLMConfig/properties/Tools/items/properties/function/properties"
OPEN_OBJECTS = {
    # keys and values are checked by propertyNames / additionalProperties
    ("manifest", "#/definitions/labels"),
    # checked separately against the provider's schema
    ("manifest", "#/definitions/spec"),
    # a JSON Schema of the function's arguments, passed through
    ("volcengine", f"{TOOL_PARAMETERS}/parameters"),
}


@pytest.mark.parametrize("name,schema", [("manifest", MANIFEST), ("volcengine", VOLCENGINE)])
def test_every_object_is_closed(name: str, schema: dict[str, Any]) -> None:
    opened = [
        pointer
        for pointer, node in schema_nodes(schema)
        if node.get("type") == "object"
        and node.get("additionalProperties") is not False
        and (name, pointer) not in OPEN_OBJECTS
    ]
    assert not opened


EXPECTED_SENSITIVE = {
    "/AgentConfig/ServerMessageSignatureForRTS",
    "/Config/ASRConfig/ProviderParams/AccessToken",
    "/Config/TTSConfig/ProviderParams/app/token",
    "/Config/LLMConfig/APIKey",
    "/Config/SubtitleConfig/ServerMessageSignature",
    "/Config/FunctionCallingConfig/ServerMessageSignature",
}


CONTENT_CONSTRAINTS = {
    "pattern",
    "enum",
    "const",
    "format",
    "minLength",
    "maxLength",
    "not",
    "$ref",
}


def test_sensitive_fields_are_marked_and_accept_any_reference() -> None:
    marked = []
    for pointer, node in schema_nodes(VOLCENGINE):
        if node.get("x-sensitive"):
            marked.append(pointer)
            assert node.get("type") == "string", pointer
            # Only "not blank", which every reference satisfies (an editor checks it as text).
            constraints = CONTENT_CONSTRAINTS & set(node) - {"minLength", "pattern"}
            assert not constraints, (pointer, constraints)
            assert node.get("minLength") == 1 and node.get("pattern") == NOT_BLANK, pointer
    assert len(marked) == len(EXPECTED_SENSITIVE)
    document = parse(GOOD / "secret-references.toml")
    _, spec = next(spec_parts(document))
    found = dict(sensitive_values(spec, VOLCENGINE))
    assert set(found) == EXPECTED_SENSITIVE
    assert jsonschema.Draft7Validator(VOLCENGINE).is_valid(spec)


@pytest.mark.parametrize(
    "path", [str(p.relative_to(REPO)) for p in manifest_files(EXAMPLES) + manifest_files(GOOD)]
)
def test_no_literal_secret_in_examples(path: str) -> None:
    for base, provider, spec in spec_parts_by_provider(parse(REPO / path)):
        for pointer, value in sensitive_values(spec, PROVIDER_SCHEMAS.get(provider, VOLCENGINE)):
            assert isinstance(value, str) and REFERENCE.match(value), (
                f"{path}: {base}{pointer} holds a literal"
            )


def test_examples_do_use_sensitive_fields() -> None:
    """Guards the test above against passing vacuously."""
    counts = dict.fromkeys(PROVIDER_SCHEMAS, 0)
    for path in manifest_files(EXAMPLES):
        for _, provider, spec in spec_parts_by_provider(parse(path)):
            counts[provider] += len(list(sensitive_values(spec, PROVIDER_SCHEMAS[provider])))
    assert counts["volcengine"] >= 4 and counts["aliyun"] >= 1, counts
