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


FAMILIES = ("sd", "sdxl", "flux-fill", "qwen-edit")  # every inpainter family restyle runs


@pytest.fixture(scope="session")
def family_folder(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """family name -> a tiny model folder of that family (built once per session, on first use)."""
    built: dict[str, Path] = {"sd": tiny_models["inpainter"]}

    def get(family: str) -> Path:
        if family not in built:
            from restyle.models.tiny_families import TINY_BUILDERS

            built[family] = TINY_BUILDERS[family](tmp_path_factory.mktemp(f"tiny-{family}"))
        return built[family]

    return get


@pytest.fixture(scope="session")
def family_inpainter(family_folder):
    """family name -> a loaded Inpainter on its tiny model (loaded once per session)."""
    loaded: dict = {}

    def get(family: str):
        if family not in loaded:
            from restyle.inpaint import Inpainter

            loaded[family] = Inpainter.from_pretrained(str(family_folder(family)), device="cpu")
        return loaded[family]

    return get


SEGMENTERS = ("clipseg", "sam3", "parser")  # every segmenter backend restyle runs


@pytest.fixture(scope="session")
def segmenter_folder(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """backend name -> a tiny segmenter folder of that backend (built once per session, on first use)."""
    built: dict[str, Path] = {"clipseg": tiny_models["segmenter"]}

    def get(backend: str) -> Path:
        if backend not in built:
            from restyle.models.tiny import build_tiny_backend

            built[backend] = build_tiny_backend(
                "segmenter", backend, tmp_path_factory.mktemp(f"seg-{backend}")
            )
        return built[backend]

    return get


@pytest.fixture(scope="session")
def backend_segmenter(segmenter_folder):
    """backend name -> a loaded segmenter on its tiny model (loaded once per session)."""
    loaded: dict = {}

    def get(backend: str):
        if backend not in loaded:
            from restyle.segment import load_segmenter

            loaded[backend] = load_segmenter(str(segmenter_folder(backend)), device="cpu")
        return loaded[backend]

    return get
