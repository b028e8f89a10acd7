"""Every test here gets a fresh dataset cache (`isolated_cache`, tests/conftest.py): the readers write mapped
caches and token caches there."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_cache(isolated_cache):
    return isolated_cache
