"""One self-contained HTML report of an `evaluate_masks` or `evaluate_styles` result, and its JSON beside it.

The HTML embeds everything (images and matplotlib charts as base64 PNG data URIs, inline CSS, no script),
so it opens from disk, attaches to an issue, and never fetches anything. `<stem>.json` next to it holds
every figure and no pixels, for comparing runs (`report.html` -> `report.json`).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from PIL import Image

from restyle.errors import RestyleError

PRED_TINT = (255, 40, 90)  # the segmenter's mask
CSS = """
:root{--ink:#1d2330;--muted:#5d6678;--line:#e3e6ec;--bg:#f5f6f8;--card:#fff}*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:var(--bg)}header{padding:26px 40px 16px;background:#fff;border-bottom:1px solid var(--line)}
h1{margin:0;font-size:26px}h2{margin:0 0 12px;font-size:19px}h3{margin:18px 0 8px;font-size:15.5px}
.sub{margin:4px 0 0;color:var(--muted)}.meta{margin:4px 0 0;color:var(--muted);font-size:13px}
main{max-width:1280px;margin:0 auto;padding:22px 40px 60px}section{background:var(--card);
border:1px solid var(--line);border-radius:10px;padding:18px 24px;margin:0 0 22px}
.banner{margin:18px auto 0;max-width:1200px;padding:14px 18px;border-radius:8px;background:#fff4e5;
border:2px solid #f0a020;color:#7a4b00;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:14px;margin:6px 0}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f1f3f6;font-weight:600;color:#374052;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart{max-width:100%;height:auto;display:block}
.grid{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:8px}
figure{margin:0;background:#fafbfc;border:1px solid var(--line);border-radius:8px;padding:8px}
figure img{display:block;height:190px;width:auto;border-radius:4px}
figcaption{font-size:12.5px;color:var(--muted);margin-top:4px;max-width:240px}
.ok{color:#1b7f4c;font-weight:600}.bad{color:#b3261e;font-weight:600}.err{color:#b3261e;font-size:13px}
code{background:#f1f3f6;padding:1px 5px;border-radius:4px;font-size:13px}
details summary{cursor:pointer;color:var(--muted);margin:8px 0}.note{color:var(--muted);font-size:13.5px}
.row{display:flex;flex-wrap:wrap;gap:22px;align-items:flex-start;padding:10px 0;
border-top:1px solid var(--line)}.rowhead{width:90px;font-weight:600;padding-top:22px}
.pill{display:inline-block;padding:0 8px;border-radius:999px;background:#fff4e5;color:#7a4b00;font-size:12px}
"""
# table headers, in the order of their cells
CLASS_HEADERS = ["segmenter", "class", "default wording", "best wording", "photos", "IoU default", "IoU best",
                 "pooled IoU", "boundary F", "FP rate", "missed"]  # fmt: skip
SWEEP_HEADERS = ["segmenter", "class", "wording", "threshold", "IoU", "boundary F", "FP rate", "missed",
                 "s", "error"]  # fmt: skip
ENGINE_HEADERS = ["engine", "inpainter", "requests", "preserved", "max outside", "seam", "ΔE mean",
                  "colour pass", "CLIP", "diversity", "s / image"]  # fmt: skip
REQUEST_HEADERS = ["engine", "request", "garment / mask", "colour", "status", "ΔE per variant",
                   "CLIP per variant", "preserved", "diversity", "s / image"]  # fmt: skip
PALETTE = ("#3b6fb6", "#d9822b", "#2e9d6a", "#9b59b6", "#c0392b", "#607d8b")
PREVIEW_BANNER = (
    "preview: tiny random models — these figures only show that the evaluation runs; they say nothing "
    "about real masks or pictures. Pull real weights (`restyle models pull`) or pass --segmenter/--inpainter."
)


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend; a one-line RestyleError saying how to install it if missing."""
    try:
        import matplotlib
    except ImportError as error:
        raise RestyleError(
            "restyle eval needs matplotlib for its report charts: pip install 'restyle[eval]'", field="report"
        ) from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A figure for a table cell: '–' for missing, fixed digits for floats."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def png_uri(picture: Image.Image | Any) -> str:
    """A PIL image, or a matplotlib figure (then closed), as a base64 PNG data URI."""
    buffer = io.BytesIO()
    if isinstance(picture, Image.Image):
        picture.save(buffer, format="PNG", optimize=True)
    else:
        picture.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        require_matplotlib().close(picture)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(uri: str, alt: str, cls: str = "") -> str:
    return f'<img src="{uri}" alt="{esc(alt)}" class="{cls}">'


def table(headers: list[str], rows: list[list[str]], numeric_from: int = 99) -> str:
    """An HTML table; cells are already escaped / formatted; columns from `numeric_from` on align right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if i >= numeric_from else ""}">{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _clean(value: Any) -> Any:
    """A JSON-ready copy: NaN/inf as null, tuples as lists, anything else unknown as its text."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """Every figure of a result and no pixels: what report.json holds."""
    from restyle import __version__

    out = {k: v for k, v in result.items() if k != "examples"}
    out["generated"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out["restyle_version"] = __version__
    return dict(_clean(out))


def page(title: str, subtitle: str, body: str, preview: bool, json_name: str) -> str:
    """The whole HTML document."""
    text = esc(PREVIEW_BANNER).replace("`", "<code>", 1).replace("`", "</code>", 1)
    banner = f'<div class="banner" role="alert">{text}</div>' if preview else ""
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>'
        f'<p class="meta">{esc(when)} · every figure in <code>{esc(json_name)}</code></p></header>'
        f"{banner}<main>{body}</main></body></html>\n"
    )


def write_report(result: dict[str, Any], html_path: str | Path) -> Path:
    """Write the HTML report of a masks or styles result, and `<stem>.json` beside it.

    Args:
        result: from `evaluate_masks` or `evaluate_styles` ("kind" says which).
        html_path: where to write the HTML (parents are created).

    Returns:
        The HTML path.
    """
    require_matplotlib()
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = html_path.with_suffix(".json")
    kind = result.get("kind")
    if kind == "masks":
        title, subtitle, body = render_masks(result)
    elif kind == "styles":
        title, subtitle, body = render_styles(result)
    else:
        raise RestyleError(f"report: unknown result kind {kind!r} (masks or styles)", field="report")
    json_path.write_text(json.dumps(figures(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    document = page(title, subtitle, body, bool(result.get("preview")), json_path.name)
    html_path.write_text(document, encoding="utf-8")
    return html_path


# Charts


def bar_chart(
    labels: list[str],
    series: dict[str, list[float | None]],
    title: str,
    ylabel: str,
    *,
    top: float | None = None,
    line: tuple[float, str] | None = None,
) -> str:
    """Grouped bars (one group per label, one bar per series) as a PNG data URI; None is drawn as n/a."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(min(13.0, max(5.5, 0.5 * len(labels) * len(series) + 2.5)), 3.3))
    width = min(0.8 / max(1, len(series)), 0.42)
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, [v or 0.0 for v in values], width * 0.92, label=name, color=PALETTE[i % len(PALETTE)])
        for x, v in zip(xs, values):
            if v is None:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#888")
    many = len(labels) > 6
    ax.set_xticks(range(len(labels)), labels, rotation=30 if many else 0, ha="right" if many else "center")
    if line is not None:
        ax.axhline(line[0], ls="--", lw=1.2, color="#b3261e", label=line[1])
    if top is not None:
        ax.set_ylim(0, top)
    _style_axes(ax, title, ylabel)
    return png_uri(fig)


def _style_axes(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(frameon=False, fontsize=8)


def sweep_chart(result: dict[str, Any]) -> str:
    """IoU against threshold for each class's winning wording, one panel per segmenter."""
    plt = require_matplotlib()
    backends = result["backends"]
    fig, axes = plt.subplots(1, len(backends), figsize=(4.6 * len(backends), 3.2), squeeze=False)
    for ax, (name, figs) in zip(axes[0], backends.items()):
        for i, (cls, c) in enumerate(figs["classes"].items()):
            wording = c["best"]["wording"]
            points = [(s["threshold"], s["iou"]) for s in c["sweep"] if s["wording"] == wording]
            xs, ys = [p[0] for p in points], [p[1] if p[1] is not None else float("nan") for p in points]
            ax.plot(xs, ys, marker="o", ms=4, label=cls, color=PALETTE[i % len(PALETTE)])
        ax.axvline(result["default_threshold"], ls=":", color="#888", lw=1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("threshold")
        _style_axes(ax, f"{name}: IoU by threshold (best wording)", "mean IoU")
    return png_uri(fig)


def _section(title: str, inner: str, id_: str) -> str:
    return f'<section id="{id_}"><h2>{esc(title)}</h2>{inner}</section>'


def _fig(uri: str, caption: str, alt: str) -> str:
    return f"<figure>{img_tag(uri, alt)}<figcaption>{caption}</figcaption></figure>"


# Masks


def render_masks(result: dict[str, Any]) -> tuple[str, str, str]:
    """Title, subtitle and body of a masks report."""
    backends = result["backends"]
    sub = (
        f"{result.get('dataset') or 'labelled set'} · {result['photos']} photos · {len(result['classes'])} "
        f"classes · thresholds {', '.join(f'{t:g}' for t in result['thresholds'])} "
        f"(default {result['default_threshold']:g})"
    )
    summary = table(
        ["segmenter", "backend", "model", "mIoU default", "mIoU best", "s / photo", "licence"],
        [
            [esc(n), esc(f["backend"]) + (' <span class="pill">preview</span>' if f["preview"] else ""),
             f"<code>{esc(f['model'])}</code>", fmt(f["miou_default"]), fmt(f["miou_best"]),
             fmt(f["seconds_per_photo"]), esc(f["license"] or "–")]
            for n, f in backends.items()
        ],
        numeric_from=3,
    )  # fmt: skip
    note = (
        '<p class="note">IoU: mean over the photos showing the class (no mask = 0); pooled: the set\'s '
        "summed intersection over summed union. Default: the class's first wording at the default threshold. "
        "FP rate: masks returned on photos without the class. Missed: no mask, or IoU below 0.1.</p>"
    )
    body = _section("Summary", summary + note, "summary")
    body += _section("Per class", _class_table(result), "classes")
    classes = list(result["classes"])
    series = {n: [f["classes"][c]["best"]["iou"] for c in classes] for n, f in backends.items()}
    charts = img_tag(
        bar_chart(classes, series, "IoU per class (best wording)", "mean IoU", top=1.0), "IoU chart", "chart"
    )
    charts += img_tag(sweep_chart(result), "threshold sweep chart", "chart")
    body += _section("Charts", f'<div class="charts">{charts}</div>', "charts")
    body += _section("Best and worst masks", _mask_grids(result), "grids")
    return "Mask evaluation", sub, body


def _class_table(result: dict[str, Any]) -> str:
    rows = []
    for name, f in result["backends"].items():
        for cls, c in f["classes"].items():
            d, b = c["default"], c["best"]
            rows.append(
                [esc(name), esc(cls), f"<code>{esc(d['wording'])}</code>",
                 f"<code>{esc(b['wording'])}</code> @ {b['threshold']:g}",
                 str(result["class_photos"].get(cls, 0)),
                 fmt(d["iou"]), fmt(b["iou"]), fmt(b["iou_pooled"]), fmt(b["boundary_f"]), fmt(b["fp_rate"]),
                 fmt(b["missed_rate"])]
            )  # fmt: skip
    main = table(CLASS_HEADERS, rows, numeric_from=4)
    sweep = [
        [esc(n), esc(cls), f"<code>{esc(s['wording'])}</code>", f"{s['threshold']:g}", fmt(s["iou"]),
         fmt(s["boundary_f"]), fmt(s["fp_rate"]), fmt(s["missed_rate"]), fmt(s["seconds_per_photo"]),
         esc(s["error"] or "")]
        for n, f in result["backends"].items() for cls, c in f["classes"].items() for s in c["sweep"]
    ]  # fmt: skip
    full = table(SWEEP_HEADERS, sweep, numeric_from=3)
    return main + f"<details><summary>every wording and threshold ({len(sweep)})</summary>{full}</details>"


def spotlight(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A label drawn so any garment colour shows: the photo inside the mask, dimmed to dark outside it."""
    dark = Image.new("RGB", image.size, (28, 30, 38))
    return Image.composite(image.convert("RGB"), Image.blend(image.convert("RGB"), dark, 0.8), mask)


def _mask_grids(result: dict[str, Any]) -> str:
    """Per segmenter, one row per class: its best and worst photo, the mask beside the label."""
    from restyle.segment.ops import overlay

    parts = []
    for name, per_class in result.get("examples", {}).items():
        parts.append(f"<h3>{esc(name)}</h3>")
        for cls, shown in per_class.items():
            pairs = []
            for kind in ("best", "worst"):
                ex = shown.get(kind)
                if ex is not None:
                    mask = _fig(
                        png_uri(overlay(ex["image"], ex["pred"], PRED_TINT)), "mask", f"{cls} {kind} mask"
                    )
                    label = _fig(png_uri(spotlight(ex["image"], ex["truth"])), "label", f"{cls} label")
                    head = f"{kind} · {esc(ex['photo'])} · IoU {ex['iou']:.2f}"
                    pairs.append(
                        f'<div><div class="note">{head}</div><div class="grid">{mask}{label}</div></div>'
                    )
            inner = "".join(pairs) or '<p class="note">no photo shows this class</p>'
            parts.append(f'<div class="row"><div class="rowhead">{esc(cls)}</div>{inner}</div>')
    return "".join(parts) or '<p class="note">No examples.</p>'


# Styles


def render_styles(result: dict[str, Any]) -> tuple[str, str, str]:
    """Title, subtitle and body of a styles report."""
    engines = result["engines"]
    sub = (
        f"{result.get('source') or 'requests'} · {result['rows']} requests · {len(engines)} engine(s) · "
        f"colour passes at ΔE00 ≤ {result['delta_e_pass']:g}"
    )
    rows = []
    for name, e in engines.items():
        s = e["summary"]
        kept = f"{s['preserved']}/{s['variants']}"
        kept = f'<span class="{"ok" if s["preserved"] == s["variants"] else "bad"}">{kept}</span>'
        rows.append(
            [esc(name) + (' <span class="pill">preview</span>' if e["preview"] else ""),
             f"<code>{esc(e['inpainter'])}</code>", f"{s['rows']} ({s['failed']} failed)", kept,
             fmt(s["outside_max"], 0), fmt(s["seam_mean"], 4), fmt(s["delta_e_mean"], 1),
             fmt(s["color_pass_rate"], 2), fmt(s["clip_mean"]), fmt(s["diversity_mean"]),
             fmt(s["seconds_per_image"], 2)]
        )  # fmt: skip
    summary = table(ENGINE_HEADERS, rows, numeric_from=4)
    notes = "".join(
        f'<p class="note">{esc(n)} prompt adherence: {esc(e["clip_model"])}</p>' for n, e in engines.items()
    )
    body = _section("Summary", summary + notes, "summary")
    body += _section("Requests", _request_table(engines), "requests")
    body += _section("Charts", f'<div class="charts">{_style_charts(result)}</div>', "charts")
    body += _section("Results", _style_grids(result), "grids")
    return "Style evaluation", sub, body


def _request_table(engines: dict[str, Any]) -> str:
    rows = []
    for name, e in engines.items():
        for r in e["rows"]:
            vs = r.get("variants", [])
            status = (
                f'<span class="err">{esc(r["error"])}</span>' if r["error"] else '<span class="ok">ok</span>'
            )
            rows.append(
                [esc(name), esc(r["id"]), esc(r["garment"] or r["mask"]), esc(r["color"] or "–"), status,
                 " / ".join(fmt(v["delta_e"], 1) for v in vs) or "–",
                 " / ".join(fmt(v["clip"]) for v in vs) or "–",
                 fmt(all(v["preserved"] for v in vs)) if vs else "–", fmt(r.get("diversity")),
                 fmt(r.get("seconds_per_image"), 2)]
            )  # fmt: skip
    return table(REQUEST_HEADERS, rows, numeric_from=5)


def _style_charts(result: dict[str, Any]) -> str:
    """ΔE (with the pass line) and, where measured, CLIP similarity: one bar per variant and engine."""
    engines = result["engines"]
    got = {
        name: {f"{r['id']} #{v['seed']}": v for r in e["rows"] for v in r.get("variants", [])}
        for name, e in engines.items()
    }
    labels = list(dict.fromkeys(k for variants in got.values() for k in variants))
    if not labels:
        return '<p class="note">No variant was made: see the errors above.</p>'
    delta = {n: [vs[k]["delta_e"] if k in vs else None for k in labels] for n, vs in got.items()}
    clip = {n: [vs[k]["clip"] if k in vs else None for k in labels] for n, vs in got.items()}
    line = (float(result["delta_e_pass"]), f"pass (ΔE ≤ {result['delta_e_pass']:g})")
    title = "ΔE00 to the requested colour, per variant"
    charts = img_tag(bar_chart(labels, delta, title, "ΔE00", line=line), "ΔE chart", "chart")
    if any(v is not None for vs in clip.values() for v in vs):
        title = "CLIP similarity to the description, per variant"
        charts += img_tag(bar_chart(labels, clip, title, "cosine"), "CLIP chart", "chart")
    return charts


def _style_grids(result: dict[str, Any]) -> str:
    parts = []
    for name, shown in result.get("examples", {}).items():
        parts.append(f"<h3>{esc(name)}</h3>")
        for ex in shown:
            cells = [_fig(png_uri(ex["original"]), "original", f"{ex['id']} original")]
            for i, (img, caption) in enumerate(zip(ex["images"], ex["captions"])):
                cells.append(_fig(png_uri(img), esc(caption), f"{ex['id']} variant {i + 1}"))
            head = f'<div class="note">{esc(ex.get("title", ""))}</div>'
            grid = f'<div>{head}<div class="grid">{"".join(cells)}</div></div>'
            parts.append(f'<div class="row"><div class="rowhead">{esc(ex["id"])}</div>{grid}</div>')
    return "".join(parts) or '<p class="note">No results to show.</p>'
