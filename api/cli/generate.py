"""``vitrine generate``: variants of a catalog product's image (or of an image file), and optionally the real
products nearest to the first one (``--search``, as ``POST /search/imagine``)."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from PIL import Image

from api.cli.options import cell, read_image_file
from api.routes.generate import imagine_search, product_source
from api.wiring import open_search
from common.errors import InvalidInput
from common.images import decode_image
from common.settings import Settings
from generate.service import VariantResult, Variants
from search.query import SearchResponse

EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``generate`` subcommand."""
    parser = subparsers.add_parser(
        "generate", help="generate variants of a product image ('the same sneaker in red')",
        description="Make variants of a catalog product's image (its preview) or of an image file with the "
                    "generation backend of settings generate (recolor by default: offline, colour changes only; "
                    "diffusers or openai: see docs/generate.md). Images are kept under VITRINE_HOME/generated "
                    "(a repeated request is answered from there) and printed as paths.",
    )
    parser.add_argument("product_id", nargs="?", metavar="PRODUCT_ID", help="the catalog product to vary")
    parser.add_argument("instruction", metavar="INSTRUCTION", help="what to change, e.g. 'the same dress in red'")
    parser.add_argument("--image", type=Path, metavar="PATH", help="vary this image file instead of a product")
    parser.add_argument("--n", type=int, default=1, help="images to make (default %(default)s)")
    parser.add_argument("--seed", type=int, help="random seed (default: a random one, printed)")
    parser.add_argument("--strength", type=float, default=0.6, help="how far from the source, 0-1 (default "
                        "%(default)s)")
    parser.add_argument("--backend", help="recolor, diffusers or openai (default: settings generate.backend)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="also copy the images into this folder")
    parser.add_argument("--search", action="store_true", help="then find the catalog products nearest to the "
                        "first image (with the instruction's words)")
    parser.add_argument("--limit", type=int, default=5, help="products shown with --search (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def _read_image(path: Path, settings: Settings) -> tuple[Image.Image, str]:
    data = read_image_file(path, settings)
    image = decode_image(data, max_pixels=settings.indexer.max_image_pixels, source=str(path))
    return image, hashlib.sha256(data).hexdigest()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Make the variants, print where they are (and the nearest products with --search)."""
    if (args.product_id is None) == (args.image is None):
        print("vitrine generate: give a PRODUCT_ID or --image PATH (one of them)", file=sys.stderr)
        return EXIT_BAD_INPUT
    variants = Variants.from_settings(settings)
    components = open_search(settings, rerank=False) if args.product_id is not None or args.search else None
    try:
        try:
            if args.product_id is not None:
                assert components is not None
                image, digest, product = product_source(components.service, settings, args.product_id)
            else:
                image, digest = _read_image(args.image, settings)
                product = None
            result = variants.make(instruction=args.instruction, image=image, source_digest=digest, product=product,
                                   n=args.n, seed=args.seed, strength=args.strength, backend=args.backend)
            found = None
            if args.search:
                assert components is not None
                found = imagine_search(components.service, settings, variants, result, limit=args.limit,
                                       exclude=args.product_id)
        except InvalidInput as e:
            print(f"vitrine generate: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        paths = [variants.path(name) for name in result.images]
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            paths = [Path(shutil.copy2(path, args.out / path.name)) for path in paths]
        print(format_json(result, paths, found) if args.json else format_text(result, paths, found))
        return 0
    finally:
        variants.close()
        if components is not None:
            components.close()


def shown(path: Path) -> Path:
    """``path`` relative to the current folder when it is inside it (shorter to read), absolute otherwise."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def format_json(result: VariantResult, paths: list[Path], found: SearchResponse | None) -> str:
    """The result as JSON: the image paths, the prompt, the seed, the backend, and the products found."""
    body: dict[str, object] = {
        "images": [str(path) for path in paths], "instruction": result.instruction, "prompt": result.prompt,
        "prompt_method": result.prompt_method, "seed": result.seed, "backend": result.backend,
        "took_ms": result.took_ms, "cached": result.cached}
    if found is not None:
        body["search"] = found.model_dump(mode="json", exclude_unset=True)
    return json.dumps(body, indent=2, ensure_ascii=False)


def format_text(result: VariantResult, paths: list[Path], found: SearchResponse | None) -> str:
    """The image paths, then how they were made, then the products found."""
    lines = [str(shown(path)) for path in paths]
    lines.append(f"{len(paths)} image(s) by {result.backend} in {result.took_ms:.0f} ms"
                 f"{' (cached)' if result.cached else ''}, seed {result.seed}")
    lines.append(f"prompt ({result.prompt_method}): {result.prompt}")
    if found is not None:
        lines.append("nearest products:")
        for rank, hit in enumerate(found.results, start=1):
            lines.append(f"{rank:>3}  {hit.score:7.4f}  {cell(hit.id, 16):<16}  {cell(hit.product.title, 40):<40}  "
                         f"{cell(hit.product.category, 20)}")
    return "\n".join(lines)
