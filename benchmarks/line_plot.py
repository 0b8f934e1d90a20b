"""A small line-plot writer on Pillow (matplotlib is not a dependency): panels of named series over a log-x axis."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
PANEL_W, PANEL_H, MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 460, 320, 64, 16, 36, 48


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], title: str, x_label: str,
                series: dict[str, list[tuple[float, float]]], reference: float | None, font,
                log_y: bool = False) -> None:
    if log_y:  # plot log10(y) and label the ticks with y itself
        series = {name: [(x, math.log10(max(y, 1e-12))) for x, y in points] for name, points in series.items()}
        reference = None if reference is None else math.log10(max(reference, 1e-12))
    ox, oy = origin
    left, top = ox + MARGIN_L, oy + MARGIN_T
    width, height = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points] + ([reference] if reference is not None else [])
    if not xs:
        return
    lx0, lx1 = math.log(min(xs)), math.log(max(xs))
    lx1 = lx1 if lx1 > lx0 else lx0 + 1
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or abs(y1) * 0.1 or 1.0
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (math.log(x) - lx0) / (lx1 - lx0) * width, top + (1 - (y - y0) / (y1 - y0)) * height)

    draw.rectangle([left, top, left + width, top + height], outline=(0, 0, 0))
    draw.text((ox + PANEL_W // 2 - 4 * len(title), oy + 8), title, fill=(0, 0, 0), font=font)
    draw.text((left + width // 2 - 4 * len(x_label), top + height + 26), x_label, fill=(0, 0, 0), font=font)
    for value in _ticks(y0, y1):
        _, py = to_px(math.exp(lx0), value)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        draw.text((ox + 4, py - 6), f"{10 ** value if log_y else value:.3g}", fill=(0, 0, 0), font=font)
    last_label = -1e9
    for x in sorted(set(xs)):
        px, _ = to_px(x, y0)
        draw.line([px, top + height, px, top + height + 4], fill=(0, 0, 0))
        if px - last_label >= 18:  # skip labels that would overlap their left neighbour
            draw.text((px - 6, top + height + 8), f"{x:g}", fill=(0, 0, 0), font=font)
            last_label = px
    if reference is not None:
        _, py = to_px(math.exp(lx0), reference)
        for start in range(int(left), int(left + width), 10):
            draw.line([start, py, min(start + 5, left + width), py], fill=(90, 90, 90))
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        pixels = [to_px(x, y) for x, y in sorted(points)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)


def save_line_plot(path: str | Path, panels: list[dict], legend: list[str], note: str = "",
                   reference_label: str = "reference") -> Path:
    """Write side-by-side panels; each panel is ``{"title", "x_label", "series": {name: [(x, y)]}, "reference",
    "log_y"}`` (``log_y``: a logarithmic y axis, for values that span decades)
    (``reference``: a horizontal dashed line, e.g. the 250-step DDPM value, named ``reference_label``)."""
    font = ImageFont.load_default()
    legend_h = 28
    image = Image.new("RGB", (PANEL_W * len(panels), PANEL_H + legend_h + (18 if note else 0)), "white")
    draw = ImageDraw.Draw(image)
    for i, panel in enumerate(panels):
        _draw_panel(draw, (i * PANEL_W, 0), panel["title"], panel["x_label"], panel["series"],
                    panel.get("reference"), font, log_y=panel.get("log_y", False))
    x = 12
    for index, name in enumerate(legend):
        colour = COLOURS[index % len(COLOURS)]
        draw.line([x, PANEL_H + 12, x + 20, PANEL_H + 12], fill=colour, width=3)
        draw.text((x + 24, PANEL_H + 6), name, fill=(0, 0, 0), font=font)
        x += 34 + 7 * len(name)
    draw.line([x, PANEL_H + 12, x + 20, PANEL_H + 12], fill=(90, 90, 90))
    draw.text((x + 24, PANEL_H + 6), reference_label, fill=(0, 0, 0), font=font)
    if note:
        draw.text((12, PANEL_H + legend_h), note, fill=(60, 60, 60), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
