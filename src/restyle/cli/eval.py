"""`restyle eval masks|styles`: measure masks against a labelled set, results against their requests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli.base import Device, group, quiet, restyler, step_bar
from restyle.errors import InvalidParameterError

eval_app = group("Measure quality: masks against labels, restyled results against their requests.")

FORMATS = ("labelmap", "coco")


def _short(model_id: str, taken: dict[str, Any]) -> str:
    """A name for a model in tables: a folder's own name, else the hub id; made unique with -2, -3."""
    path = Path(model_id).expanduser()
    name = path.name if path.is_dir() else model_id
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def _segmenters(ids: list[str] | None, device: str | None) -> dict[str, Any]:
    """Each named segmenter (default: the configured one), or the tiny preview where its weights are
    not here, said loudly. A named folder that does not exist is an error, never a preview."""
    from restyle.config import load_model_config
    from restyle.models.hub import cache_dir, check_folder, preview_notice, resolve_cached
    from restyle.models.tiny import build_tiny_segmenter, is_current_tiny
    from restyle.segment import load_segmenter

    quiet()
    config = load_model_config(device=device)
    loaded: dict[str, Any] = {}
    for model_id in ids or [config.segmenter]:
        check_folder("segmenter", model_id)
        found = resolve_cached(model_id)
        if found is None:
            typer.secho(preview_notice((model_id,)), fg=typer.colors.YELLOW, err=True)
            tiny = cache_dir() / "tiny" / "segmenter"
            if not is_current_tiny(tiny):
                build_tiny_segmenter(tiny)
            found = str(tiny)
        loaded[_short(model_id, loaded)] = load_segmenter(found, device=config.device)
    return loaded


def _read_set(
    data: Path, fmt: str | None, labels: Path | None, annotations: Path | None, limit: int | None
) -> Sequence[Any]:
    """The labelled photos of DATA in its format (detected: labels/ -> labelmap, annotations.json -> coco),
    read one at a time as the evaluation asks for them (never the whole set at once)."""
    from restyle.eval.datasets import open_coco, open_label_maps

    if not data.is_dir():
        raise InvalidParameterError(f"DATA: no such folder: {data}", field="DATA")
    if fmt is None:
        fmt = "coco" if annotations is not None or not (data / "labels").is_dir() else "labelmap"
    if fmt not in FORMATS:
        raise InvalidParameterError(f"--format: {fmt!r}; use one of {', '.join(FORMATS)}", field="format")
    if fmt == "coco":
        photos = open_coco(annotations or data / "annotations.json", data / "images")
    else:
        photos = open_label_maps(data / "images", data / "labels", labels or data / "labels.txt")
    if limit is not None:
        if limit < 1:
            raise InvalidParameterError(f"--limit: at least 1, got {limit}", field="limit")
        photos = photos[:limit]
    return photos


def _class_map(data: Path, classes: Path | None, photos: Sequence[Any]) -> dict[str, list[str]]:
    """--classes, else DATA/classes.json, else "the X" / "a X" / "X" for every class the photos show."""
    from restyle.eval.datasets import default_class_map, load_class_map

    if classes is not None:
        return load_class_map(classes)
    if (data / "classes.json").is_file():
        return load_class_map(data / "classes.json")
    return default_class_map(sorted({name for p in photos for name, m in p.masks.items() if m.any()}))


def _say_masks(result: dict[str, Any]) -> None:
    """The short table at the end: per segmenter and class, the best setting and the default's IoU."""

    def f(value: Any) -> str:
        return "  -  " if value is None else f"{value:.3f}"

    if result["preview"]:
        typer.secho("PREVIEW: tiny random models; these figures measure nothing.", fg=typer.colors.YELLOW)
    typer.echo(
        f"{'segmenter':<22} {'class':<14} {'best wording':<22} {'thr':>5} {'IoU':>6} {'dflt':>6} {'FP':>6}"
    )
    for name, figs in result["backends"].items():
        for cls, c in figs["classes"].items():
            b = c["best"]
            row = f"{name[:22]:<22} {cls[:14]:<14} {b['wording'][:22]:<22} {b['threshold']:>5.2f} "
            typer.echo(row + f"{f(b['iou']):>6} {f(c['default']['iou']):>6} {f(b['fp_rate']):>6}")
        typer.echo(f"{name[:22]:<22} mIoU best {f(figs['miou_best'])}, default {f(figs['miou_default'])}")


@eval_app.command("synthetic")
def eval_synthetic(
    out: Annotated[
        Path, typer.Argument(help="Folder for the set (images/, labels/, annotations.json, ...).")
    ],
    count: Annotated[int, typer.Option(help="Photos to draw.")] = 6,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a small synthetic labelled set (drawn figures, known garments) in both formats, and a rows
    file for `eval styles`: something to point both commands at before you have a set of your own."""
    import json

    from restyle.errors import InvalidParameterError
    from restyle.eval.synthetic import write_synthetic_set

    if not 1 <= count <= 1000:
        raise InvalidParameterError(f"--count: {count} is out of range [1, 1000]", field="count")
    paths = write_synthetic_set(out, count=count, seed=seed)
    photos = sorted((Path(paths["images"])).glob("*.png"))
    rows = [
        {"photo": str(p.relative_to(out)), "garment": "the dress", "type": "skirt", "color": color, "seed": i}
        for i, (p, color) in enumerate(zip(photos[:2], ("red", "navy"), strict=False))
    ]
    (out / "styles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    typer.echo(
        f"wrote {len(photos)} labelled photos to {out} (label maps and COCO) and {out / 'styles.jsonl'}"
    )


@eval_app.command("masks")
def eval_masks(
    data: Annotated[Path, typer.Argument(help="The labelled set: images/ plus labels/ or annotations.json.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="labelmap (ATR, LIP, CIHP) or coco; default: detected.")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Class names, one per line, line i = id i (default DATA/labels.txt).")
    ] = None,
    annotations: Annotated[
        Path | None, typer.Option(help="COCO JSON (default DATA/annotations.json).")
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(
            help="Class -> wordings to try, JSON or TOML (default DATA/classes.json, else the names)."
        ),
    ] = None,
    segmenter: Annotated[
        list[str] | None, typer.Option("--segmenter", help="Segmenter to measure (hub id or folder). Repeat.")
    ] = None,
    threshold: Annotated[
        list[float] | None,
        typer.Option("--threshold", help="Threshold to sweep. Repeat (default 0.3 0.4 0.5)."),
    ] = None,
    write_table: Annotated[
        Path | None, typer.Option(help="Write the first segmenter's best wording per class (TOML).")
    ] = None,
    report: Annotated[Path, typer.Option(help="The HTML report (JSON beside it).")] = Path("out/report.html"),
    limit: Annotated[int | None, typer.Option(help="Only the first N photos.")] = None,
    device: Device = None,
) -> None:
    """Score segmenters on a labelled set: IoU, boundary F, false positives, wording and threshold sweep."""
    from restyle.eval.masks import evaluate_masks, units
    from restyle.eval.report import require_matplotlib, write_report
    from restyle.eval.table import write_mask_table

    require_matplotlib()
    photos = _read_set(data, fmt, labels, annotations, limit)
    class_map = _class_map(data, classes, photos)
    segmenters = _segmenters(segmenter, device)
    with step_bar() as bar:
        task = bar.add_task("masks", total=units(photos, class_map) * len(segmenters))
        result = evaluate_masks(
            photos,
            segmenters,
            class_map,
            thresholds=tuple(threshold or (0.3, 0.4, 0.5)),
            dataset=str(data),
            progress=lambda what: bar.update(task, advance=1, description=what[:40]),
        )
    _say_masks(result)
    if write_table is not None:
        first = next(iter(result["backends"].values()))
        note = "PREVIEW: scored with the tiny random model; they measure nothing." if first["preview"] else ""
        write_mask_table(
            write_table, first["winners"], segmenter=first["model"], dataset=str(data), note=note
        )
        typer.echo(f"prompt table: {write_table}")
    path = write_report(result, report)
    typer.echo(f"report: {path}   figures: {path.with_suffix('.json')}")


def _engines(segmenter: str | None, inpainters: list[str] | None, device: str | None) -> dict[str, Any]:
    """One engine per inpainter (default: the configured one), all sharing one segmenter."""
    from restyle.engine import Restyler

    engines: dict[str, Any] = {}
    shared = None
    wanted: list[str | None] = [*inpainters] if inpainters else [None]
    for model_id in wanted:
        engine = restyler(segmenter, model_id, device)
        if shared is not None and engine.config.segmenter == shared.config.segmenter:
            engine = Restyler(engine.config, preview=engine.preview, segmenter=shared.segmenter)
        shared = shared or engine
        engines[_short(model_id or engine.config.inpainter, engines)] = engine
    return engines


@eval_app.command("styles")
def eval_styles(
    rows: Annotated[Path, typer.Argument(help="Requests, JSONL or CSV: photo, garment or mask, prompt, ...")],
    segmenter: Annotated[
        str | None, typer.Option(help="Segmenter for garment-text rows [env RESTYLE_SEGMENTER].")
    ] = None,
    inpainter: Annotated[
        list[str] | None, typer.Option("--inpainter", help="Inpainter to compare (hub id or folder). Repeat.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Denoising steps for every row (default: each row's).")
    ] = None,
    report: Annotated[Path, typer.Option(help="The HTML report (JSON beside it).")] = Path("out/styles.html"),
    device: Device = None,
) -> None:
    """Restyle every request of ROWS with each inpainter and score preservation, colour, adherence, speed."""
    from restyle.eval.report import require_matplotlib, write_report
    from restyle.eval.styles import evaluate_styles, load_style_rows

    require_matplotlib()
    if steps is not None and not 1 <= steps <= 150:
        raise InvalidParameterError(f"--steps: {steps} is out of range [1, 150]", field="steps")
    requests = load_style_rows(rows)
    engines = _engines(segmenter, inpainter, device)
    with step_bar() as bar:
        task = bar.add_task("styles", total=len(requests) * len(engines))
        result = evaluate_styles(
            requests,
            engines,
            steps=steps,
            source=str(rows),
            progress=lambda what: bar.update(task, advance=1, description=what[:40]),
        )
    _say_styles(result)
    path = write_report(result, report)
    typer.echo(f"report: {path}   figures: {path.with_suffix('.json')}")


def _say_styles(result: dict[str, Any]) -> None:
    def f(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    if result["preview"]:
        typer.secho("PREVIEW: tiny random models; these figures measure nothing.", fg=typer.colors.YELLOW)
    for name, e in result["engines"].items():
        s = e["summary"]
        typer.echo(
            f"{name}: {s['rows']} requests ({s['failed']} failed), "
            f"preserved {s['preserved']}/{s['variants']}, "
            f"ΔE {f(s['delta_e_mean'], 1)} (pass {f(s['color_pass_rate'], 2)}), CLIP {f(s['clip_mean'])}, "
            f"diversity {f(s['diversity_mean'])}, {f(s['seconds_per_image'], 2)} s/image"
        )
        for row in e["rows"]:
            if row["error"]:
                typer.secho(f"  {row['id']}: {row['error']}", fg=typer.colors.RED)
