"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apply_helpers import Workspace, emulator_server


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace in tmp_path (files, state, settings) beside a running emulator, stopped by
    its pid when the test ends. A module that needs another workspace defines its own `ws`."""
    with emulator_server() as server:
        yield Workspace(tmp_path, server)
