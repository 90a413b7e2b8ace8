"""``vitrine eval``: search quality of the current index against a query set (see `search.eval`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from api.wiring import open_search
from common.settings import Settings
from search.eval import METRICS, MODES, EvalReport, Evaluator, best_weights, read_queries

PLOT_SIZE = (640, 400)
_MARGIN = 50
_LEGEND = 130  # room on the right for the legend
_COLOURS = {"all": (20, 20, 20), "text": (30, 90, 200), "image": (200, 60, 30), "text+image": (40, 150, 60)}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval", help="measure search quality against a query set",
        description="Run every query of QUERIES.jsonl against the image index alone, the text index alone "
                    "and fused, and report nDCG@k, recall@k, precision@k and MRR@k. Each line: {\"query\": "
                    "TEXT and/or \"image\": PATH (relative to the file), \"relevant\": [ids] or "
                    "\"relevant_where\": {field: value}}.")
    parser.add_argument("queries", type=Path, metavar="QUERIES.jsonl", help="the query set")
    parser.add_argument("--k", type=int, default=10, help="cut-off rank (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--sweep-weights", action="store_true",
                        help="also evaluate fused search over w_image = 0, 0.1, ..., 1 (w_text = 1 - "
                             "w_image), print the best and write a plot")
    parser.add_argument("--plot", type=Path, default=Path("vitrine-eval-weights.png"),
                        help="where --sweep-weights writes its plot (default %(default)s)")
    parser.add_argument("--model", help="encoder name; must be the collection's (default: the collection's)")
    parser.add_argument("--collection", help="collection to evaluate (default: settings store.collection)")
    parser.set_defaults(func=run)


def format_report(report: EvalReport) -> str:
    """The report as an aligned table, one block per query kind."""
    k = report.k
    header = f"{'queries':<11} {'n':>4}  {'index':<6}" + "".join(f" {f'{m}@{k}':>12}" for m in METRICS)
    weights = f"image {report.weights['image']:g}, text {report.weights['text']:g}"
    lines = [f"k={k}; fused weights: {weights}; hybrid adds lexical {report.weights['lexical']:g}", header]
    for kind, modes in report.table.items():
        for mode in MODES:
            values = "".join(f" {modes[mode][f'{m}@{k}']:>12.4f}" for m in METRICS)
            lines.append(f"{kind:<11} {report.counts[kind]:>4}  {mode:<6}{values}")
    if report.sweep:
        key = f"ndcg@{k}"
        for kind in report.table:
            best = best_weights(report, kind=kind)
            lines.append(f"best fused {key} for {kind} queries: {best[kind][key]:.4f} at w_image "
                         f"{best['w_image']:g}, w_text {best['w_text']:g}")
    return "\n".join(lines)


def plot_sweep(report: EvalReport, path: Path) -> Path:
    """Draw nDCG@k against w_image (one line per query kind) as a PNG; return the path."""
    width, height = PLOT_SIZE
    image = Image.new("RGB", PLOT_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN, 20, width - _LEGEND, height - _MARGIN
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    key = f"ndcg@{report.k}"
    values = [point[kind][key] for point in report.sweep for kind in report.table]
    low = max(0.0, min(values) - 0.05)
    span = max(1e-6, 1.0 - low)

    def xy(w_image: float, value: float) -> tuple[float, float]:
        return left + w_image * (right - left), bottom - (value - low) / span * (bottom - top)

    for tick in range(0, 11, 2):
        x, _ = xy(tick / 10, low)
        draw.text((x - 8, bottom + 6), f"{tick / 10:.1f}", fill=(0, 0, 0))
    for tick in range(5):
        value = low + span * tick / 4
        _, y = xy(0, value)
        draw.text((4, y - 6), f"{value:.2f}", fill=(0, 0, 0))
    draw.text((left + 100, height - 22), f"w_image (w_text = 1 - w_image); y: {key}", fill=(0, 0, 0))
    for row, kind in enumerate(report.table):
        colour = _COLOURS.get(kind, (120, 120, 120))
        points = [xy(point["w_image"], point[kind][key]) for point in report.sweep]
        draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((right + 12, top + 8 + 14 * row), f"{kind} queries", fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate and print the report (and write the sweep plot)."""
    queries = read_queries(args.queries)
    components = open_search(settings, model=args.model, collection=args.collection)
    try:
        evaluator = Evaluator(service=components.service, store=components.store, queries=queries,
                              settings=settings.search, k=args.k,
                              max_pixels=settings.indexer.max_image_pixels)
        report = evaluator.report(sweep=args.sweep_weights)
    finally:
        components.close()
    data: dict[str, Any] = report.as_dict()
    if args.sweep_weights:
        data["plot"] = str(plot_sweep(report, args.plot))
        data["best"] = {kind: best_weights(report, kind=kind) for kind in report.table}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_report(report))
        if args.sweep_weights:
            print(f"plot written to {data['plot']}")
    return 0
