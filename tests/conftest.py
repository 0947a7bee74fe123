"""Shared fixtures: where the real public test files live, and a fresh lake."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path to a file under ../shared/data; skips the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data {path} is missing (see ../shared/data/SOURCES.md)")
    return path


@pytest.fixture
def lake(tmp_path):
    from ingest.lake import Lake

    return Lake(tmp_path / "lake")
