"""Writing results: PNGs with their parameters inside, a JSON sidecar, the mask and a comparison grid."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from restyle.files import atomic_write
from restyle.inpaint.pipeline import StyleResult

METADATA_KEY = "restyle"  # PNG text chunk holding the JSON parameters


def png_info(meta: dict[str, Any]) -> PngImagePlugin.PngInfo:
    """PNG text chunks: the full JSON under 'restyle', plus a few readable keys."""
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, json.dumps(meta, sort_keys=True))
    for key in ("prompt", "negative_prompt", "seed", "steps", "guidance", "scheduler", "inpainter"):
        if key in meta:
            info.add_text(key, str(meta[key]))
    return info


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The parameters stored in a PNG written by restyle ({} if none)."""
    with Image.open(path) as img:
        text = getattr(img, "text", {}) or img.info
        raw = text.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def save_png(img: Image.Image, path: Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a PNG atomically, with metadata when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", pnginfo=png_info(meta) if meta else None))
    return path


GRID_PANEL_ASPECT = 4  # a panel is at most 4 heights wide: a strip-shaped image is shrunk, not stretched


def grid(images: list[Image.Image], height: int = 384, gap: int = 8) -> Image.Image:
    """Side-by-side comparison: images scaled to one height, in order (the original first).

    Each panel fits in `height` x 4 `height`, so the grid costs at most that per image whatever the
    images' shapes."""

    def fit(im: Image.Image) -> tuple[int, int]:
        scale = min(height / im.height, GRID_PANEL_ASPECT * height / im.width)
        return max(1, round(im.width * scale)), max(1, round(im.height * scale))

    scaled = [im.convert("RGB").resize(fit(im), Image.Resampling.LANCZOS) for im in images]
    width = sum(s.width for s in scaled) + gap * (len(scaled) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for s in scaled:
        canvas.paste(s, (x, 0))
        x += s.width + gap
    return canvas


RESERVED = b'{"reserved": "a restyle run is writing these results"}'


def _stem_taken(out: Path, stem: str) -> bool:
    images = re.compile(re.escape(stem) + r"-\d+-seed\d+\.png")
    fixed = (f"{stem}.json", f"{stem}-grid.png", f"{stem}-mask.png")
    return any((out / name).exists() for name in fixed) or (
        out.is_dir() and any(images.fullmatch(p.name) for p in out.iterdir())
    )


def reserve_stem(outdir: str | Path, stem: str) -> str:
    """`stem`, or the first of STEM-2, STEM-3, ... none of whose files exist in `outdir`, reserved there.

    The reservation is STEM.json, created exclusively (two runs started together get two stems) and holding
    a placeholder until `save_result` replaces it; `release_stem` removes it when a run fails.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        name = stem if n == 1 else f"{stem}-{n}"
        n += 1
        if _stem_taken(out, name):
            continue
        try:
            fd = os.open(out / f"{name}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(RESERVED)
        return name


def release_stem(outdir: str | Path, stem: str) -> None:
    """Drop a reservation that no result replaced (the run failed or was cancelled)."""
    path = Path(outdir) / f"{stem}.json"
    with contextlib.suppress(OSError):
        if path.read_bytes() == RESERVED:
            path.unlink()


def save_result(
    result: StyleResult, original: Image.Image, outdir: str | Path, stem: str = "restyle"
) -> dict[str, Any]:
    """Write every variant, the mask, the grid and a JSON sidecar into `outdir`.

    Returns:
        The sidecar's content (file names relative to `outdir`).
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (img, seed) in enumerate(zip(result.images, result.seeds)):
        meta = result.metadata(i)
        name = f"{stem}-{i}-seed{seed}.png"
        save_png(img, out / name, meta)
        files.append({"file": name, **meta})
    save_png(result.mask, out / f"{stem}-mask.png", {"kind": "mask", **result.extra})
    save_png(grid([original, *result.images]), out / f"{stem}-grid.png")
    sidecar = {
        "images": files,
        "mask": f"{stem}-mask.png",
        "grid": f"{stem}-grid.png",
        "input_size": list(original.size),
        "elapsed_s": round(result.elapsed_s, 3),
    }
    atomic_write(out / f"{stem}.json", lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2)))
    return sidecar
