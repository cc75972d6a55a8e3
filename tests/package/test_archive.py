"""model.tar.gz: files at the root, no checkpoints, safe extraction, the handler driven like the toolkit."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from restyle.package import ArchiveError, build_archive, inspect_archive, safe_extract
from restyle.package.verify import drive, verify_archive


@pytest.fixture(scope="module")
def model_dir(tiny_models, tmp_path_factory) -> Path:
    """The tiny inpainter as a training run leaves it: checkpoints, logs and a cache-style symlink inside."""
    root = tmp_path_factory.mktemp("trained") / "model"
    shutil.copytree(tiny_models["inpainter"], root)
    (root / "checkpoint-500").mkdir()
    (root / "checkpoint-500" / "optimizer.bin").write_bytes(b"state")
    (root / "logs").mkdir()
    (root / "logs" / "events.out").write_text("loss")
    # a Hugging Face cache snapshot holds symlinks to blobs: the archive must hold the real bytes
    blobs = root.parent / "models--org--name" / "blobs"
    blobs.mkdir(parents=True)
    blob = blobs / "5f1e0c"
    shutil.move(root / "scheduler" / "scheduler_config.json", blob)
    (root / "scheduler" / "scheduler_config.json").symlink_to(blob)
    return root


@pytest.fixture(scope="module")
def archive(model_dir, tiny_models, tmp_path_factory) -> Path:
    from restyle.models.tiny import build_tiny_lora

    lora = build_tiny_lora(tiny_models["inpainter"], tmp_path_factory.mktemp("lora"))
    out = tmp_path_factory.mktemp("pkg") / "model.tar.gz"
    build_archive(model_dir, out, segmenter=tiny_models["segmenter"], styles=(("skirts", str(lora)),))
    return out


def test_layout_at_root_without_checkpoints(archive):
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    for need in (
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "scheduler/scheduler_config.json",
        "feature_extractor/preprocessor_config.json",
        "code/inference.py",
        "code/requirements.txt",
        "code/restyle/serve/handler.py",
        "segmenter/config.json",
        "styles/skirts/pytorch_lora_weights.safetensors",
    ):
        assert need in names, need
    assert not any("checkpoint-" in n or n.startswith("logs/") or "__pycache__" in n for n in names)
    assert all(m.isfile() for m in members)  # links were followed, no folder wrapper
    reqs = next(m for m in members if m.name == "code/requirements.txt")
    with tarfile.open(archive) as tar:
        text = tar.extractfile(reqs).read().decode()
    assert "diffusers==" in text and "torch" not in text  # the serving image brings its CUDA torch
    assert inspect_archive(archive)


def test_extracted_archive_driven_like_the_toolkit(archive, tmp_path):
    """Extract to a fresh folder, import code/inference.py in a new process, model_fn then predict_fn."""
    safe_extract(archive, tmp_path / "model")
    out = drive(tmp_path / "model", steps=2)
    assert out["images"] == [["JPEG", 48, 64], ["JPEG", 48, 64]]
    assert out["seeds"] == [0, 1]
    assert out["styles"] == ["skirts"]
    assert Path(out["restyle"]).resolve().is_relative_to((tmp_path / "model" / "code").resolve())


def test_handler_functions_in_process(archive, tmp_path, photo):
    from restyle.client import decode_image, encode_image
    from restyle.errors import InvalidParameterError
    from restyle.package import inference

    safe_extract(archive, tmp_path / "m")
    model = inference.model_fn(str(tmp_path / "m"))
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (10, 10, 60, 90))
    payload = {
        "inputs": "a skirt",
        "input_img": encode_image(photo),
        "mask_img": encode_image(mask),
        "num_inference_steps": 1,
        "image_length": 144,
        "style": "skirts",
        "image_format": "png",
    }
    body = inference.input_fn(__import__("json").dumps(payload), "application/json")
    out = inference.output_fn(inference.predict_fn(body, model), "application/json")
    images = [decode_image(b) for b in __import__("json").loads(out)["generated_images"]]
    assert [(i.format, i.size) for i in images] == [("PNG", photo.size)] * 2
    with pytest.raises(InvalidParameterError, match="num_inference_steps"):
        inference.predict_fn({**payload, "num_inference_steps": 0}, model)
    with pytest.raises(InvalidParameterError, match="body"):
        inference.input_fn(b"{nope", "application/json")
    with pytest.raises(InvalidParameterError, match="content type"):
        inference.input_fn(b"x", "text/csv")


def test_verify_reports_and_drives(archive):
    report = verify_archive(archive, run=False)
    assert report["segmenter"] is True and report["styles"] == ["skirts"]


def _tar(path: Path, entries: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in entries:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "entry, message",
    [
        (tarfile.TarInfo("/etc/evil"), "absolute path"),
        (tarfile.TarInfo("../evil"), "leaves the extraction folder"),
        (tarfile.TarInfo("unet/../../evil"), "leaves the extraction folder"),
        (_link("unet/config.json", "/etc/passwd", tarfile.SYMTYPE), "link"),
        (_link("unet/config.json", "model_index.json", tarfile.LNKTYPE), "link"),
        (_link("dev", "", tarfile.CHRTYPE), "not a regular file"),
    ],
)
def test_unsafe_entries_refused_before_anything_is_written(tmp_path, entry, message):
    bad = _tar(tmp_path / "bad.tar.gz", [tarfile.TarInfo("model_index.json"), entry])
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError, match=message):
        safe_extract(bad, dest)
    assert not any(dest.iterdir())
    assert not (tmp_path / "evil").exists()


def test_layout_errors_name_the_problem(archive, tmp_path):
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    wrapped = _tar(tmp_path / "w.tar.gz", [tarfile.TarInfo(f"model/{n}") for n in names])
    with pytest.raises(ArchiveError, match="inside a folder 'model/'"):
        inspect_archive(wrapped)
    no_code = _tar(tmp_path / "c.tar.gz", [tarfile.TarInfo(n) for n in names if not n.startswith("code/")])
    with pytest.raises(ArchiveError, match="code/"):
        inspect_archive(no_code)
    ckpt = _tar(tmp_path / "k.tar.gz", [tarfile.TarInfo(n) for n in [*names, "checkpoint-10/unet/x.bin"]])
    with pytest.raises(ArchiveError, match="checkpoint-10"):
        inspect_archive(ckpt)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ArchiveError, match="not a readable tar.gz"):
        inspect_archive(tmp_path / "junk.tar.gz")


def test_build_refuses_non_inpainting_folders(tiny_models, tmp_path):
    with pytest.raises(ArchiveError, match="model_index.json"):
        build_archive(tiny_models["segmenter"], tmp_path / "m.tar.gz")
    not_inpaint = tmp_path / "sd"
    shutil.copytree(tiny_models["inpainter"], not_inpaint)
    cfg = not_inpaint / "unet" / "config.json"
    cfg.write_text(cfg.read_text().replace('"in_channels": 9', '"in_channels": 4'))
    with pytest.raises(ArchiveError, match="9"):
        build_archive(not_inpaint, tmp_path / "m.tar.gz")
    assert not (tmp_path / "m.tar.gz").exists()


def test_archive_gets_the_usual_file_mode(tiny_models, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "model.tar.gz"
        build_archive(tiny_models["inpainter"], out)
    finally:
        os.umask(old)
        assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not mkstemp's 0600
