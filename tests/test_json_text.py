"""indented_json writes what json.dumps(indent=2, ensure_ascii=False) writes (core/json_text.py).

Every indented JSON output (plans, saved plans, reports, listings) goes through it; it must
not change a byte of what users and their scripts read, apart from the one documented spelling
of a float's exponent (`1e16` for `1e+16`), which is the same number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.commands import _plan_from_files
from reconciler.core.json_text import indented_json
from reconciler.core.normalize import canonical_json
from reconciler.core.plan import Guards
from reconciler.core.render import plan_document
from reconciler.core.selection import EVERY_SESSION
from reconciler.state.empty import EmptyState
from reconciler.workspace import schema_set

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Text as a manifest can hold it: any code point but a lone surrogate (not text; the loader
# refuses it).
_TEXT = st.text(st.characters(exclude_categories=("Cs",)))
_SCALARS = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | _TEXT
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _json(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
        max_leaves=25,
    )


@given(_json(_SCALARS))
def test_the_same_text_as_the_standard_library(value: Any) -> None:
    assert indented_json(value) == json.dumps(value, indent=2, ensure_ascii=False)


@given(_json(_SCALARS | _FLOATS))
def test_floats_are_the_same_numbers(value: Any) -> None:
    ours = indented_json(value)
    theirs = json.dumps(value, indent=2, ensure_ascii=False)
    assert json.loads(ours) == json.loads(theirs)
    # Only an exponent's "+" and leading zeros may be spelled otherwise.
    exponent = re.compile(r"e\+?(-?)0*(\d)")
    assert exponent.sub(r"e\1\2", ours) == exponent.sub(r"e\1\2", theirs)


@given(_json(_SCALARS | _FLOATS))
def test_the_canonical_text_survives_the_round_trip(value: Any) -> None:
    # A saved plan is signed over the canonical JSON of the document as it is, and verified
    # over the canonical JSON of the file as it is read back: both must be one text.
    assert canonical_json(json.loads(indented_json(value))) == canonical_json(value)


def test_a_plan_of_the_examples_is_the_same_text(tmp_path: Path) -> None:
    plan = _plan_from_files(
        [str(EXAMPLES)], EmptyState(str(tmp_path / "s.db")), Guards(), EVERY_SESSION
    )
    document = plan_document(plan, schema_set().sensitive)
    assert len(document["actions"]) > 3
    assert indented_json(document) == json.dumps(document, indent=2, ensure_ascii=False)
    assert canonical_json(json.loads(indented_json(document))) == canonical_json(document)
