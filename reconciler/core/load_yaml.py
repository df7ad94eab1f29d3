"""YAML → a document, keeping the line of every node (imported only when a YAML file is read:
the yaml package and its C loader cost a few milliseconds that JSON and TOML runs need not pay).
"""

from __future__ import annotations

from typing import Any

import yaml

from reconciler.core.load import (
    _MAX_INT_TEXT,
    MAX_DEPTH,
    MAX_YAML_NODES,
    _escape,
    _fail,
    _integer_problem,
    _number_problem,
)
from reconciler.errors import ValidationFailed

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


def parse_yaml(path: str, text: str) -> tuple[Any, dict[str, int]]:
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        builder = _YamlBuilder(path, loader)
        return builder.build(node, "", 1), builder.lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "syntax error"
        raise _fail(path, f"invalid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


class _YamlBuilder:
    """Turns a composed YAML node graph into values, remembering each pointer's line."""

    def __init__(self, path: str, loader: Any) -> None:
        self.path = path
        self.loader = loader
        self.lines: dict[str, int] = {}
        self.built = 0
        # Equal strings become one object, as in load.py's depth walk (the sessions of a file
        # repeat most of their values).
        self.strings: dict[str, str] = {}

    def build(self, node: yaml.Node, pointer: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _fail(self.path, f"nested deeper than {MAX_DEPTH} levels", _line(node))
        self.built += 1
        if self.built > MAX_YAML_NODES:
            raise _fail(self.path, "too many nodes after expanding aliases", _line(node))
        self.lines.setdefault(pointer or "/", _line(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, pointer, depth)
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, f"{pointer}/{index}", depth + 1)
                for index, item in enumerate(node.value)
            ]
        if node.tag == _TIMESTAMP_TAG:
            return str(node.value)  # keep dates as written: manifests are JSON data
        if node.tag == _INT_TAG and len(str(node.value)) > _MAX_INT_TEXT + 8:
            # Python would refuse to convert past 4,300 digits; no field takes it anyway.
            raise self._number_fail(_integer_problem(str(node.value)), node, pointer)
        value = self.loader.construct_object(node, deep=True)
        problem = _number_problem(value, str(node.value))
        if problem is not None:
            raise self._number_fail(problem, node, pointer)
        if type(value) is str:
            return self.strings.setdefault(value, value)
        return value

    def _number_fail(self, problem: str, node: yaml.Node, pointer: str) -> ValidationFailed:
        return _fail(self.path, problem, _line(node), pointer)

    def _mapping(self, node: yaml.MappingNode, pointer: str, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    value = self.build(source, pointer, depth)
                    if isinstance(value, dict):
                        merged.update({k: v for k, v in value.items() if k not in merged})
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise _fail(self.path, f'duplicate key "{key}"', _line(key_node), pointer)
            child = f"{pointer}/{_escape(key)}"
            result[key] = self.build(value_node, child, depth + 1)
        for key, value in merged.items():
            result.setdefault(key, value)
        return result


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
