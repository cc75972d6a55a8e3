"""`model.tar.gz` for a SageMaker (Hugging Face inference toolkit) endpoint: build, check, extract.

Layout, files at the archive root (not inside a folder), as the platform expects:

    model_index.json  and the component folders it lists, for any inpainter family:
                      SD: feature_extractor/ scheduler/ text_encoder/ tokenizer/ unet/ vae/
                      SDXL: + text_encoder_2/ tokenizer_2/;  FLUX.1 Fill: transformer/ in place of unet/,
                      text_encoder_2/ (T5) tokenizer_2/;  Qwen-Image-Edit: transformer/ processor/ ...
    segmenter/                 optional: a segmenter folder (CLIPSeg, SAM 3 or a clothes parser)
    styles/NAME/pytorch_lora_weights.safetensors   optional LoRA styles
    code/inference.py          model_fn / input_fn / predict_fn / output_fn
    code/requirements.txt      what the toolkit pip-installs before loading
    code/sitecustomize.py      lets the released toolkit import under transformers 5 (toolkit_compat.py)
    code/restyle/              restyle itself (the handler imports it; no index needed)
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePosixPath

import restyle
from restyle.errors import InvalidParameterError, ModelLoadError
from restyle.files import atomic_write

REQUIRED = ("scheduler", "text_encoder", "vae")  # in every family's layout; model_index.json lists the rest
# code/requirements.txt, installed over the serving image (docs/SERVING.md, "Which image"):
# the libraries that load and run the models are pinned to the versions restyle runs here, because
# models saved by them must be read by them (transformers 5.5.3, the image's own, reads a CLIP text
# encoder saved by 5.23 as random weights: see package/verify.py's weight check);
PINNED_DEPS = (
    "diffusers",
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "accelerate",
    "peft",
    "safetensors",
    "pydantic",
)
# the image's own builds of these stay (its numpy/scipy are compiled together): restyle's floors only.
IMAGE_DEPS = ("numpy", "pillow", "scipy")
# torch is the image's (its CUDA build); nothing pinned above may need a newer one (see images.py).
# training leftovers (logs, validation images, mask cache) and folders the archive fills itself
SKIP_DIRS = {"logs", "validation", "masks", ".git", "__pycache__", ".cache", "code", "segmenter", "styles"}
SKIP_FILES = {"optimizer.bin", "scheduler.bin", "random_states_0.pkl", "model.tar.gz", ".restyle-train.lock"}


class ArchiveError(InvalidParameterError):
    """A model folder or archive that does not have the layout an endpoint needs, or does not run."""

    def __init__(self, message: str, *, field: str | None = None, report: dict | None = None) -> None:
        super().__init__(message, field=field)
        self.report = report or {}  # what a check saw before it failed


def _is_checkpoint(part: str) -> bool:
    return part.startswith("checkpoint-") or part.startswith("checkpoint_")


def components(index: dict) -> list[str]:
    """The component folders a model_index.json lists (entries set to null, like SD's safety checker, are
    not loaded)."""
    return sorted(
        k
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] and v[1]
    )


def check_model_dir(model_dir: Path) -> str:
    """A diffusers inpainting folder of a family restyle runs: model_index.json and every component folder
    it lists; SD and SDXL UNets must take 9 channels. Returns the family's name."""
    from restyle.errors import ModelLoadError
    from restyle.inpaint.families import family_of_class

    if not (model_dir / "model_index.json").is_file():
        raise ArchiveError(
            f"MODEL_DIR: {model_dir} has no model_index.json (not a diffusers pipeline folder)"
        )
    index = json.loads((model_dir / "model_index.json").read_text())
    try:
        family = family_of_class(str(index.get("_class_name")), str(model_dir))
    except ModelLoadError as err:
        raise ArchiveError(f"MODEL_DIR: {err}") from err
    listed = [c for c in components(index) if c != "safety_checker"]
    missing = [name for name in listed if not (model_dir / name).is_dir()]
    if missing:
        raise ArchiveError(
            f"MODEL_DIR: {model_dir} lacks {', '.join(missing)}/ (its model_index.json lists them)"
        )
    if family.name in ("sd", "sdxl"):
        unet = json.loads((model_dir / "unet" / "config.json").read_text())
        if unet.get("in_channels") != 9:
            raise ArchiveError(
                f"MODEL_DIR: the UNet takes {unet.get('in_channels')} input channels; an inpainting model "
                "takes 9"
            )
    return family.name


def _is_cache_blob(target: Path) -> bool:
    """A Hugging Face cache blob (models--ORG--NAME/blobs/HASH): where a cache snapshot's links point."""
    return target.parent.name == "blobs" and target.parent.parent.name.startswith("models--")


def _checked_file(path: Path, root: Path, arcname: str) -> None:
    """Refuse what must not be packed: links out of the folder (except into a Hugging Face cache's blobs),
    broken links, and anything that is not a regular file (a FIFO would block the packer forever)."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as err:  # broken, or a loop
            raise ArchiveError(f"{arcname}: a link that leads nowhere ({err}); remove it") from err
        if not (target.is_relative_to(root.resolve()) or _is_cache_blob(target)):
            raise ArchiveError(
                f"{arcname}: links to {target}, outside the model folder (only links into a Hugging Face "
                "cache's blobs are followed); copy the file in or remove the link"
            )
    else:
        target = path
    mode = target.stat().st_mode
    if not stat.S_ISREG(mode):
        raise ArchiveError(f"{arcname}: not a regular file (a FIFO, socket or device); remove it")


def _walk(root: Path, prefix: str = "") -> Iterator[tuple[Path, str]]:
    """(file, archive name) pairs under `root`, sorted, without checkpoints, logs and training state.

    Folder links are not followed (a link loop would never end); file links are, when they stay in the
    folder or point into a Hugging Face cache."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink() and not d.startswith("."):
                raise ArchiveError(
                    f"{PurePosixPath(prefix, *rel.parts, d)}/: a folder link; pack a real folder instead"
                )
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not _is_checkpoint(d) and not d.startswith(".") and not d.endswith(".partial")
        )
        if rel == Path(".") and not prefix:
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in sorted(filenames):
            if name.startswith(".") or name in SKIP_FILES or name.endswith((".pyc", ".tmp")):
                continue
            arcname = str(PurePosixPath(prefix, *rel.parts, name))
            _checked_file(Path(dirpath) / name, root, arcname)
            yield Path(dirpath) / name, arcname


def _add(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    """A regular file entry (links in the source, e.g. a Hugging Face cache snapshot, are followed)."""
    real = path.resolve()
    info = tarfile.TarInfo(arcname)
    info.size = real.stat().st_size
    info.mode = 0o644
    info.mtime = int(real.stat().st_mtime)
    with real.open("rb") as fh:
        tar.addfile(info, fh)


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _floor(dist: str) -> str:
    """restyle's own requirement on `dist` (e.g. numpy>=1.26), or the bare name."""
    for req in metadata.requires("restyle") or []:
        name = req.split(";")[0].strip()
        base = name.split("[")[0]
        for sep in ("<", ">", "=", "!", "~"):
            base = base.split(sep)[0]
        if base.strip().lower().replace("-", "_") == dist.lower().replace("-", "_"):
            return name
    return dist


QUANTIZE_DEP = "bitsandbytes>=0.45"  # RESTYLE_QUANTIZE=4bit/8bit: what fits FLUX.1 Fill / Qwen-Image in 24 GB


def requirements(quantizable: bool = False) -> str:
    """code/requirements.txt: what the toolkit pip-installs over the serving image before the handler.

    `quantizable` (FLUX.1 Fill and Qwen-Image-Edit archives) adds bitsandbytes for RESTYLE_QUANTIZE.
    """
    lines = ["# installed by the inference toolkit over the serving image, before code/inference.py"]
    if quantizable:
        lines.append(QUANTIZE_DEP)
    for dist in PINNED_DEPS:
        try:
            lines.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(_floor(dist))
    lines += [_floor(dist) for dist in IMAGE_DEPS]
    return "\n".join(lines) + "\n"


def _code_files() -> Iterator[tuple[Path, str]]:
    """code/inference.py and the restyle package (no tests, no caches)."""
    pkg = Path(restyle.__file__).parent
    yield pkg / "package" / "inference.py", "code/inference.py"
    yield pkg / "package" / "toolkit_compat.py", "code/sitecustomize.py"
    for path, name in _walk(pkg, "code/restyle"):
        if path.suffix in {".py", ".typed", ".html", ".css", ".js", ".svg", ".png", ".json"}:
            yield path, name


def build_archive(
    model_dir: str | Path,
    output: str | Path,
    *,
    segmenter: str | Path | None = None,
    styles: tuple[tuple[str, str], ...] = (),
) -> list[str]:
    """Write `output` (model.tar.gz) from a diffusers inpainting folder; returns the archive's names.

    Args:
        model_dir: the (fine-tuned) inpainting pipeline folder.
        output: the archive path; written through a temporary file, so it is never half-written.
        segmenter: a CLIPSeg folder to include (requests may then use `mask_prompt`).
        styles: (name, LoRA file or folder) pairs to include under styles/NAME/.
    """
    model_dir, output = Path(model_dir).expanduser(), Path(output).expanduser()
    family = check_model_dir(model_dir)
    entries = list(_walk(model_dir))
    if segmenter is not None:
        seg = Path(segmenter).expanduser()
        if not (seg / "config.json").is_file():
            raise ArchiveError(f"--segmenter: {seg} is not a transformers model folder (no config.json)")
        entries += list(_walk(seg, "segmenter"))
    for name, source in styles:
        src = Path(source).expanduser()
        lora = src if src.is_file() else src / "pytorch_lora_weights.safetensors"
        if not lora.is_file() or not name.replace("-", "").replace("_", "").isalnum():
            raise ArchiveError(
                f"--style {name}={source}: expected NAME=a LoRA .safetensors file or its folder"
            )
        entries.append((lora, f"styles/{name}/pytorch_lora_weights.safetensors"))
    entries += list(_code_files())
    output.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        # gzip level 1: weights barely compress, and level 6 costs minutes on a 5 GB model
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
            for path, arcname in entries:
                _add(tar, path, arcname)
            reqs = requirements(quantizable=family in ("flux-fill", "qwen-edit"))
            _add_bytes(tar, "code/requirements.txt", reqs.encode())

    atomic_write(output, write)
    return [name for _, name in entries] + ["code/requirements.txt"]


def check_members(tar: tarfile.TarFile) -> list[str]:
    """Refuse unsafe entries (absolute paths, `..`, links, devices, a name given twice); returns the file
    names."""
    names = []
    seen: set[str] = set()
    for m in tar.getmembers():
        key = str(PurePosixPath(m.name))
        if key in seen:
            raise ArchiveError(
                f"archive: {m.name!r} appears twice (a later copy would replace the first when extracted); "
                "refused"
            )
        seen.add(key)
        path = PurePosixPath(m.name)
        if m.name.startswith(("/", "\\")) or path.is_absolute() or (len(m.name) > 1 and m.name[1] == ":"):
            raise ArchiveError(f"archive: absolute path {m.name!r} refused")
        if ".." in path.parts:
            raise ArchiveError(f"archive: path {m.name!r} leaves the extraction folder ('..'); refused")
        if m.issym() or m.islnk():
            raise ArchiveError(
                f"archive: link {m.name!r} -> {m.linkname!r} refused (links could escape the folder)"
            )
        if not (m.isfile() or m.isdir()):
            raise ArchiveError(f"archive: {m.name!r} is not a regular file or folder; refused")
        if m.isfile():
            names.append(str(path))
    return names


def check_layout(names: list[str]) -> None:
    """The endpoint layout: diffusers folders and code/ at the root, no intermediate checkpoints."""
    tops = {n.split("/", 1)[0] for n in names}
    if "model_index.json" not in names:
        wrapped = [t for t in tops if f"{t}/model_index.json" in names]
        hint = (
            f": the files are inside a folder '{wrapped[0]}/'; pack them at the archive root"
            if wrapped
            else ""
        )
        raise ArchiveError(f"archive: no model_index.json at the root{hint}")
    missing = [d for d in (*REQUIRED, "code") if d not in tops]
    if missing:
        raise ArchiveError(f"archive: missing {', '.join(m + '/' for m in missing)} at the root")
    for need in ("code/inference.py", "code/requirements.txt"):
        if need not in names:
            raise ArchiveError(f"archive: missing {need}")
    if not {"unet/config.json", "transformer/config.json"} & set(names):
        raise ArchiveError("archive: missing unet/config.json or transformer/config.json (the denoiser)")
    checkpoints = sorted({p for n in names for p in n.split("/")[:-1] if _is_checkpoint(p)})
    if checkpoints:
        raise ArchiveError(
            f"archive: contains intermediate checkpoints ({', '.join(checkpoints)}); remove them"
        )


def safe_extract(archive: str | Path, dest: str | Path) -> list[str]:
    """Check every entry, then extract with the standard library's 'data' filter as a second guard."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            names = check_members(tar)
            need = sum(m.size for m in tar.getmembers() if m.isfile())
            free = shutil.disk_usage(dest).free
            if need > free:
                raise ArchiveError(
                    f"archive: its files take {need / 1e9:.1f} GB extracted, {dest} has {free / 1e9:.1f} GB "
                    "free; nothing was extracted"
                )
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArchiveError(f"archive: {archive} is not a readable tar.gz ({err})") from err
    return names


def inspect_archive(archive: str | Path) -> list[str]:
    """Check entries and layout without extracting; returns the file names."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            names = check_members(tar)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArchiveError(f"archive: {archive} is not a readable tar.gz ({err})") from err
    check_layout(names)
    return names


__all__ = [
    "ArchiveError",
    "ModelLoadError",
    "build_archive",
    "check_layout",
    "check_members",
    "check_model_dir",
    "inspect_archive",
    "requirements",
    "safe_extract",
]
