"""The fast verdict (jsonschema-rs, compiled in Rust) is the verdict jsonschema gives (issue #9).

Validation asks the Rust validator "valid or not" and asks jsonschema only to explain a failure,
so a document the Rust validator passes and jsonschema would refuse is a bug the user never sees
explained. These tests hold the two engines to the same verdict:
- on every part of every file of the corpus and the examples, as the reconciler reads them (the
  manifest, each session's effective spec against its provider's schema, and the defaults);
- on documents generated from the schemas themselves (hypothesis): near-valid ones, with values
  at and past every bound, unknown keys, missing keys and arbitrary JSON in any place;
- on every pattern of the schemas, with each code point placed into strings it matches, and
  on the whitespace class they spell out, at every code point;
- on values the Rust validator cannot take (a lone surrogate), through jsonschema's fallback.
"""

from __future__ import annotations

import json
import math
import re
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from reconciler.core.load import Document
from reconciler.core.messages import NOT_WHITESPACE, WHITESPACE
from reconciler.core.schema_set import SchemaSet, fast_validator
from reconciler.core.validate import deep_merge
from reconciler.errors import ValidationFailed
from reconciler.sources import discover, read_manifests
from reconciler.workspace import schema_set

REPO = Path(__file__).resolve().parents[1]
CORPUS_ROOTS = [REPO / "tests" / "corpus", REPO / "examples"]
SCHEMAS: SchemaSet = schema_set()
NAMED: dict[str, Any] = {"manifest": SCHEMAS.manifest, **SCHEMAS.providers}
SLOW = {name: jsonschema.Draft7Validator(schema) for name, schema in NAMED.items()}


def fast_verdict(name: str, instance: Any) -> bool:
    """The verdict as validation takes it (the Rust validator, or its fallback)."""
    if name == "manifest":
        return SCHEMAS.manifest_is_valid(instance)
    return SCHEMAS.spec_is_valid(name, instance)


def assert_same(name: str, instance: Any) -> bool:
    slow = SLOW[name].is_valid(instance)
    assert fast_verdict(name, instance) == slow, (
        name,
        json.dumps(instance, ensure_ascii=False, default=repr)[:600],
    )
    return slow


# ---------------------------------------------------------------------------------------------
# the corpus and the examples


def _corpus_files() -> list[str]:
    files: list[str] = []
    for root in CORPUS_ROOTS:
        found, _ = discover([str(root)])
        files += [str(Path(p).relative_to(REPO)) for p in found]
    return sorted(f for f in files if not f.endswith("expected.toml"))


def _parts(document: Document) -> Iterator[tuple[str, Any]]:
    """(schema name, instance) for every part validation checks against a schema."""
    data = document.data
    yield "manifest", data
    if not isinstance(data, dict):
        return
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    sessions = data.get("sessions") if isinstance(data.get("sessions"), list) else []
    for raw in [defaults, *sessions]:
        if not isinstance(raw, dict):
            continue
        effective = deep_merge(defaults, raw)
        spec = effective.get("spec")
        if spec is not None:
            # Each spec against every provider's schema: more pairs for the engines to agree on.
            yield from ((provider, spec) for provider in SCHEMAS.providers)


CORPUS = _corpus_files()


def test_the_corpus_is_found() -> None:
    assert len(CORPUS) > 50
    assert any(f.startswith("examples/") for f in CORPUS)


@pytest.mark.parametrize("path", CORPUS)
def test_same_verdict_on_every_part_of_the_corpus(path: str) -> None:
    try:
        read = read_manifests([str(REPO / path)], digests=False)
        documents, unreadable = read.documents, read.problems
    except ValidationFailed:
        pytest.skip("unreadable: the loader's business")
    if unreadable or not documents:
        pytest.skip("unparseable: the loader's business, not the schema's")
    verdicts = [assert_same(name, instance) for name, instance in _parts(documents[0])]
    assert verdicts


def test_the_corpus_has_both_verdicts() -> None:
    """Both answers occur: the comparison above is not of two validators that always say yes."""
    seen: set[bool] = set()
    for path in CORPUS:
        try:
            documents = read_manifests([str(REPO / path)], digests=False).documents
        except ValidationFailed:
            continue
        for document in documents:
            seen.update(assert_same(n, i) for n, i in _parts(document))
    assert seen == {True, False}


# ---------------------------------------------------------------------------------------------
# generated documents

_JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
ANY_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# Characters where engines are known to differ (whitespace, digits, line ends, the BOM).
_TRICKY = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2028\u202f\u3000\ufeff٣\u200b"


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = root
        for token in node["$ref"].removeprefix("#/").split("/"):
            target = target[token]
        node = target
    return node


def _refused(node: Any) -> bool:
    """`{"not": {}}`: a field no value may take (the schemas' way to refuse it)."""
    return isinstance(node, dict) and node.get("not") == {}


_END = "$(?![\\s\\S])"


def _valid_strings(node: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = node.get("minLength", 0), node.get("maxLength", 40)
    if "pattern" in node:
        pattern = node["pattern"]
        anchored = pattern.startswith("^") and pattern.endswith(_END)
        body = pattern.removeprefix("^").removesuffix(_END) if anchored else pattern
        simple = re.fullmatch(r"(\[[^\]]+\])(\+|\{(\d+),(\d+)\})", body) if anchored else None
        if simple is not None:  # one character class, repeated: draw its length directly
            low = max(low, int(simple.group(3) or 1))
            high = min(high, int(simple.group(4) or high), 60)
            alphabet = st.from_regex(simple.group(1), fullmatch=True)
            return st.text(alphabet=alphabet, min_size=low, max_size=max(low, high))
        found = st.from_regex(body, fullmatch=anchored)
        if anchored and not pattern.startswith("^https"):
            return found.filter(lambda s: low <= len(s) <= high)
        return found.map(lambda s: s[: min(high, 60)]).filter(lambda s: low <= len(s))
    return st.text(min_size=low, max_size=min(high, 40))


def valid(node: Any, root: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Documents built to satisfy a schema node (conditions such as if/then aside, which some
    then break: both verdicts occur)."""
    node = _resolve(node, root)
    if not isinstance(node, dict) or depth > 12:
        return st.none()
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return st.one_of([valid(sub, root, depth + 1) for sub in node[key]])
    kinds = node.get("type")
    kind = kinds[0] if isinstance(kinds, list) else kinds
    if kind == "object" or (kind is None and "properties" in node):
        properties = {
            k: v for k, v in node.get("properties", {}).items() if not _refused(_resolve(v, root))
        }
        required = [k for k in node.get("required", []) if k in properties]
        strategies = {k: valid(v, root, depth + 1) for k, v in properties.items()}
        return st.fixed_dictionaries(
            {k: strategies[k] for k in required},
            optional={k: v for k, v in strategies.items() if k not in required},
        )
    if kind == "array":
        item = valid(node.get("items", {}), root, depth + 1)
        low, high = node.get("minItems", 0), min(node.get("maxItems", 3), 3)
        unique = node.get("uniqueItems") is True
        return st.lists(
            item,
            min_size=low,
            max_size=max(low, high),
            unique_by=(lambda v: json.dumps(v, sort_keys=True)) if unique else None,
        )
    if kind == "string":
        return _valid_strings(node)
    if kind == "integer":
        return st.integers(node.get("minimum", -(2**63)), node.get("maximum", 2**63 - 1))
    if kind == "number":
        low, high = node.get("minimum", -1e9), node.get("maximum", 1e9)
        return st.floats(low, high) | st.integers(math.ceil(low), math.floor(high))
    if kind == "boolean":
        return st.booleans()
    return ANY_JSON


def _edges(node: Any, root: dict[str, Any]) -> list[Any]:
    """Values at and just past a node's bounds, and of a neighbouring type."""
    node = _resolve(node, root)
    if not isinstance(node, dict):
        return [None]
    found: list[Any] = [None, True, 0, 1.0, "", [], {}]
    for key, step in (("minimum", -1), ("maximum", 1)):
        if key in node:
            bound = node[key]
            found += [bound, bound + step, bound + step / 2, float(bound)]
    for key, step in (("minLength", -1), ("maxLength", 1)):
        if key in node:
            found += ["a" * node[key], "a" * max(0, node[key] + step)]
    found += list(node.get("enum", []))[:3] + [str(v).upper() for v in node.get("enum", [])[:2]]
    return found


def _paths(value: Any, pointer: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield pointer
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*pointer, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*pointer, index))


def _schema_at(node: Any, root: dict[str, Any], path: tuple[Any, ...]) -> Any:
    for token in path:
        node = _resolve(node, root)
        if not isinstance(node, dict):
            return {}
        if isinstance(token, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(token, {})
    return _resolve(node, root)


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: _replaced(document[head], rest, value)}
    copied = list(document)
    copied[head] = _replaced(copied[head], rest, value)
    return copied


def _without_key(document: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1 and isinstance(document, dict):
        return {k: v for k, v in document.items() if k != path[0]}
    if not path:
        return document
    head = path[0]
    if isinstance(document, dict):
        return {**document, head: _without_key(document[head], path[1:])}
    copied = list(document)
    copied[head] = _without_key(copied[head], path[1:])
    return copied


@st.composite
def near_valid(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A valid document, left as is (one in four) or changed in one place: a value replaced by
    an edge of its node or by any JSON, a key dropped, or an unknown key added."""
    document = draw(valid(schema, schema))
    how = draw(st.sampled_from(["keep", "edge", "edge", "any", "drop", "add", "tricky"]))
    if how == "keep":
        return document
    path = draw(st.sampled_from(list(_paths(document))))
    if how == "edge":
        return _replaced(
            document,
            path,
            draw(st.sampled_from(_edges(_schema_at(schema, schema, path), schema))),
        )
    if how == "any":
        return _replaced(document, path, draw(ANY_JSON))
    if how == "tricky":
        text = draw(st.text(alphabet=_TRICKY + "ab1", min_size=1, max_size=4))
        return _replaced(document, path, text)
    if how == "drop" and path:
        return _without_key(document, path)
    target = draw(
        st.sampled_from(
            [p for p in _paths(document) if isinstance(_get(document, p), dict)] or [()]
        )
    )
    node = _get(document, target)
    if not isinstance(node, dict):
        return document
    key = draw(st.text(max_size=8) | st.sampled_from([k.lower() for k in node] or ["x"]))
    return _replaced(document, target, {**node, key: draw(ANY_JSON)})


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for token in path:
        document = document[token]
    return document


GENERATED = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_generated_documents_cover_both_verdicts(name: str) -> None:
    """The generator reaches valid documents as well as invalid ones for every schema."""
    schema = NAMED[name]
    strategy = near_valid(schema)
    # Found, not shrunk: shrinking a whole spec to the smallest example takes minutes.
    lenient = settings(max_examples=2000, deadline=None, database=None, phases=[Phase.generate])
    find(strategy, SLOW[name].is_valid, settings=lenient)
    find(strategy, lambda d: not SLOW[name].is_valid(d), settings=lenient)


@pytest.mark.parametrize("name", sorted(NAMED))
@GENERATED
@given(data=st.data())
def test_same_verdict_on_generated_documents(name: str, data: st.DataObject) -> None:
    assert_same(name, data.draw(near_valid(NAMED[name])))


@GENERATED
@given(data=st.data())
def test_same_verdict_on_generated_manifests_with_generated_specs(data: st.DataObject) -> None:
    """Whole manifests whose sessions hold generated specs, checked part by part."""
    provider = data.draw(st.sampled_from(sorted(SCHEMAS.providers)))
    spec = data.draw(near_valid(dict(SCHEMAS.providers[provider])))
    name = data.draw(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True) | st.text(max_size=5))
    manifest = {"sessions": [{"name": name, "provider": provider, "spec": spec}]}
    assert_same("manifest", manifest)
    assert_same(provider, spec)


# ---------------------------------------------------------------------------------------------
# the patterns, at every code point


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties" and isinstance(value, dict):
                yield from value
            yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


PATTERNS = sorted({p for schema in NAMED.values() for p in _patterns(schema)})
_CODE_POINTS = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
# Every code point up to U+3100 (Latin, the separators, the BOM's neighbours, CJK punctuation),
# the BOM, and one in 61 beyond.
_SAMPLED = [c for c in _CODE_POINTS if c < 0x3100 or c == 0xFEFF or c % 61 == 0]


def test_the_whitespace_class_means_the_same_to_both_engines_at_every_code_point() -> None:
    """The schemas spell whitespace as this class (never `\\s`, on which engines disagree); it is
    Python's `str.isspace()`, which `str.strip()` uses to say a value is blank."""
    fast = fast_validator({"type": "string", "pattern": f"^[{WHITESPACE}]$"})
    python = re.compile(f"^[{WHITESPACE}]$")
    differ = [hex(c) for c in _CODE_POINTS if fast.is_valid(chr(c)) != bool(python.search(chr(c)))]
    assert differ == []
    assert all(chr(c).isspace() == bool(python.search(chr(c))) for c in _CODE_POINTS)


def test_no_pattern_uses_an_escape_the_engines_read_differently() -> None:
    r"""`\s`, `\d`, `\w` and `\b` mean one thing to Python and another to ECMA-262 (which the
    Rust validator and editors follow); only the end guard `(?![\s\S])`, "nothing follows",
    means the same everywhere."""
    for pattern in PATTERNS:
        bare = pattern.replace("(?![\\s\\S])", "")
        assert not re.search(r"\\[sSdDwWbB]", bare), pattern
        assert "$" not in bare or bare.endswith("$"), pattern  # `$` only as the end anchor


@pytest.mark.parametrize("pattern", PATTERNS)
def test_same_verdict_on_each_pattern_at_each_code_point(pattern: str) -> None:
    """Each sampled code point alone, and inside, before and after a string the pattern
    matches (an example drawn from the pattern with the code point put at each end)."""
    fast = fast_validator({"type": "string", "pattern": pattern})
    python = re.compile(pattern)
    body = pattern.removeprefix("^").removesuffix("$(?![\\s\\S])")
    witness = find(
        st.from_regex(body, fullmatch=True),
        lambda s: bool(python.search(s)),
        settings=settings(database=None),
    )
    differ: list[str] = []
    for c in _SAMPLED:
        char = chr(c)
        for probe in (char, witness + char, char + witness, witness[:1] + char + witness[1:]):
            if fast.is_valid(probe) != bool(python.search(probe)):
                differ.append(f"{probe!r}")
    assert differ == [], differ[:20]


def test_the_not_blank_pattern_is_the_not_whitespace_class() -> None:
    assert NOT_WHITESPACE in PATTERNS


# ---------------------------------------------------------------------------------------------
# what the Rust validator cannot take


@pytest.mark.parametrize(
    "value",
    ["\ud800", "room-\udfff", "ok"],
    ids=["lone-surrogate", "trailing-lone-surrogate", "plain"],
)
def test_a_value_rust_cannot_take_gets_jsonschemas_verdict(value: str) -> None:
    spec = {"RoomId": value}
    assert_same("volcengine", spec)
    assert_same("manifest", {"sessions": [{"name": value}]})


def test_printable_ascii_names_agree() -> None:
    for char in string.printable:
        assert_same("manifest", {"sessions": [{"name": f"a{char}b", "spec": {}}]})
