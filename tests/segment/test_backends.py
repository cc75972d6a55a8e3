"""Which backend loads a model is read from its config.json (folder or local cache), not from flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restyle.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError
from restyle.segment import (
    KNOWN_HUB_IDS,
    LICENSES,
    SEGMENTERS,
    backend_for_config,
    detect_backend,
    load_segmenter,
)
from restyle.segment.clipseg import ClipSegSegmenter
from restyle.segment.parser import ClothesParser, PreviewClothesParser
from restyle.segment.preview import PreviewClipSegSegmenter
from restyle.segment.sam3 import PreviewSam3Segmenter, Sam3Segmenter
from tests.segment.test_parser import tiny_parser  # noqa: F401  (session fixture, built once)
from tests.segment.test_sam3 import tiny_sam3  # noqa: F401


def _folder(tmp_path: Path, config: dict | str, name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "config.json").write_text(text)
    return folder


def _cache_snapshot(hub: Path, repo_id: str, config: dict) -> None:
    """A Hugging Face cache entry for `repo_id` holding only config.json, as `hf download` lays it out."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))


def test_tiny_folders_load_as_their_own_backend(tiny_models, tiny_sam3, tiny_parser):  # noqa: F811
    found = {
        name: load_segmenter(str(folder), device="cpu")
        for name, folder in (
            ("clipseg", tiny_models["segmenter"]),
            ("sam3", tiny_sam3),
            ("parser", tiny_parser),
        )
    }
    assert type(found["clipseg"]) is PreviewClipSegSegmenter
    assert type(found["sam3"]) is PreviewSam3Segmenter
    assert type(found["parser"]) is PreviewClothesParser
    assert all(seg.preview for seg in found.values())


@pytest.mark.parametrize(
    ("config", "backend"),
    [
        ({"model_type": "clipseg", "architectures": ["CLIPSegForImageSegmentation"]}, "clipseg"),
        ({"model_type": "sam3"}, "sam3"),
        ({"model_type": "sam3_video", "architectures": ["Sam3VideoModel"]}, "sam3"),  # facebook/sam3's own
        ({"model_type": "segformer"}, "parser"),
        ({"architectures": ["SegformerForSemanticSegmentation"]}, "parser"),  # no model_type: architectures
    ],
)
def test_detection_reads_model_type_then_architectures(tmp_path, config, backend):
    assert detect_backend(str(_folder(tmp_path, config))) == backend
    assert backend_for_config(config) == backend


def test_an_unknown_model_type_is_a_load_error_naming_it(tmp_path):
    folder = _folder(tmp_path, {"model_type": "bert", "architectures": ["BertModel"]})
    with pytest.raises(ModelLoadError, match="model_type 'bert'") as err:
        load_segmenter(str(folder))
    assert all(known in str(err.value) for known in ("clipseg", "sam3", "segformer"))


def test_a_config_that_is_not_json_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"config\.json is not readable JSON"):
        detect_backend(str(_folder(tmp_path, "{not json")))


def test_a_hub_id_in_the_local_cache_is_detected_from_its_snapshot(empty_hf_cache):
    _cache_snapshot(empty_hf_cache, "someone/parser-copy", {"model_type": "segformer"})
    _cache_snapshot(empty_hf_cache, "someone/sam3-copy", {"model_type": "sam3_video"})
    assert detect_backend("someone/parser-copy") == "parser"
    assert detect_backend("someone/sam3-copy") == "sam3"


def test_a_hub_id_not_here_falls_back_to_the_known_ids(empty_hf_cache):
    assert detect_backend("facebook/sam3") == "sam3"
    assert detect_backend("mattmdjaga/segformer_b2_clothes") == "parser"
    assert detect_backend("CIDAS/clipseg-rd64-refined") == "clipseg"
    assert detect_backend("someone/unknown-model") == "clipseg"
    assert set(KNOWN_HUB_IDS.values()) <= set(SEGMENTERS)


@pytest.mark.parametrize("model_id", ["CIDAS/clipseg-rd64-refined", "facebook/sam3", "someone/unknown-model"])
def test_a_missing_hub_model_still_says_how_to_fetch_it(empty_hf_cache, model_id):
    with pytest.raises(ModelNotFoundError, match="restyle models pull"):
        load_segmenter(model_id, device="cpu")


def test_the_backend_keyword_overrides_detection(tiny_parser):  # noqa: F811
    seg = load_segmenter(str(tiny_parser), backend="parser", device="cpu")
    assert isinstance(seg, ClothesParser)
    with pytest.raises(InvalidParameterError, match="unknown 'nope'") as err:
        load_segmenter(str(tiny_parser), backend="nope")
    assert err.value.field == "backend"


def test_every_backend_has_a_name_and_a_recorded_licence():
    assert set(LICENSES) == set(SEGMENTERS)
    assert (ClipSegSegmenter.name, Sam3Segmenter.name, ClothesParser.name) == ("clipseg", "sam3", "parser")
    assert Sam3Segmenter.license == "SAM License" and ClothesParser.license == "MIT"
    assert LICENSES["clipseg"].startswith("Apache-2.0")
