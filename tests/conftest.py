"""Shared fixtures: offline, isolated user state, tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before any hub client is imported: tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user config, no RESTYLE_* settings, a private cache, the hub off."""
    for key in list(os.environ):
        if key.startswith("RESTYLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RESTYLE_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("RESTYLE_CACHE", str(tmp_path / "restyle-cache"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from restyle.models.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def segmenter(tiny_models: dict[str, Path]):
    from restyle.segment.clipseg import ClipSegSegmenter

    return ClipSegSegmenter.from_pretrained(str(tiny_models["segmenter"]), device="cpu")


@pytest.fixture(scope="session")
def inpainter(tiny_models: dict[str, Path]):
    from restyle.inpaint import Inpainter

    return Inpainter.from_pretrained(str(tiny_models["inpainter"]), device="cpu")


@pytest.fixture
def photo():
    from restyle.samples import sample_photo

    return sample_photo(96, 144)


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache under tmp_path, used by every loader (returns its hub folder)."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads the env once, at import; the loaders read these constants on every call
    monkeypatch.setattr(hf_constants, "HF_HOME", str(cache.parent))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache
