"""Puts the package (``src``) and the harness on the path; the session's Keel for the
end-to-end tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from keel_harness import Keel, start_keel, stop_keel  # noqa: E402


@pytest.fixture(scope="session")
def keel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keel]:
    keel = start_keel(tmp_path_factory.mktemp("keel"))
    yield keel
    stop_keel(keel)
