"""Write the object crops of a box-annotated dataset as an image-folder tree.

Used to build the demo backbone's stand-in for ImageNet pretraining: a separate
synthetic set (another seed, disjoint from the demo's train and test images) whose
objects are cut out with their boxes, so a small backbone can learn generic
object-and-detail features before FLRDF's weakly supervised training. Works on
either synthetic version (v1: square images; v2: 256-384 px sides of any aspect,
each crop cut from the image at its own resolution) and on any box-annotated dataset.

    python scripts/make_crop_set.py --dataset cub --root data/pretrain --out data/pretrain-crops --size 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm

from flrdf.data import load_image, load_records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cub")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=64, help="side of the saved crops")
    p.add_argument("--margin", type=float, default=0.1, help="box enlargement on each side, as a fraction")
    args = p.parse_args()
    for split in ("train", "test"):
        data = load_records(args.dataset, args.root, split)
        for i, r in enumerate(tqdm(data.records, desc=split)):
            if r.box is None:
                continue
            image = load_image(r.path, crop_bottom=data.crop_bottom, exif_transpose=data.exif_transpose)
            x1, y1, x2, y2 = r.box
            mx, my = (x2 - x1) * args.margin, (y2 - y1) * args.margin
            crop = image.crop((max(0, x1 - mx), max(0, y1 - my), min(image.width, x2 + mx), min(image.height, y2 + my)))
            dest = Path(args.out) / split / r.class_name.replace("/", "-") / f"{i:05d}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            crop.resize((args.size, args.size)).save(dest, quality=92)
    print(f"wrote crops to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
