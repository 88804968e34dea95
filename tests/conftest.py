"""Shared test setup: headless Qt, isolated user dirs, no network."""

from __future__ import annotations

import os

# Must happen before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Every test gets its own Loupe data/cache/log dirs and empty weight caches.

    No test may read or write the real user's Loupe, Hugging Face or torch folders.
    """
    home = tmp_path_factory.mktemp("loupe_home")
    monkeypatch.setenv("LOUPE_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home
