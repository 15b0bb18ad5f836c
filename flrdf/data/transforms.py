"""Training and test transforms that carry the ground-truth box along with the image.

FLRDF.md recipe: train = resize to a square (aspect not kept, as FGVC code does),
random crop, random horizontal flip; test = the same resize and a centre crop.
The box is scaled, shifted, flipped and clipped exactly like the pixels, so
localization can be scored in the network's input coordinates.
Randomness comes from torch's RNG (seeded per DataLoader worker by torch).

Zoom with real detail (``source_size > 0``, ``data.source_size``): ``views`` draws
the geometric parameters once and renders the same view twice - the network
input at ``crop`` px and a *source* at ``source_size`` px, cut from the original
image's pixels (PIL resize with a ``box``, antialiased), same region, same flip,
same normalisation. A box in input pixels becomes a box in source pixels by the
pure scale ``source_size / crop``; the model cuts its object crop from the
source (``flrdf.zoom``). The source tensor is always ``source_size`` square so a
batch stacks; where the view covers fewer original pixels than that (a small
image), the source is those pixels upsampled bilinearly: it never holds more
detail than the image has, and is never padded (the geometry stays a scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import torch
from PIL import Image
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BoxTransform:
    """``(pil_image, box_or_None) -> (normalised CxHxW float tensor, box tensor(4) float32 or None)``.

    Box coordinates are pixel edges: a box ``(x1, y1, x2, y2)`` covers columns
    x1..x2 of the continuous image plane; a resize by ``s`` maps it to
    ``x * s``, a crop at ``(left, top)`` subtracts the offset, a flip maps
    ``x -> crop - x`` (swapping x1 and x2), and the result is clipped to the crop.
    """

    def __init__(self, train: bool, resize: int, crop: int, mean: Sequence[float], std: Sequence[float],
                 source_size: int = 0):
        if not (isinstance(resize, int) and isinstance(crop, int)) or resize <= 0 or crop <= 0:
            raise ValueError(f"resize and crop must be positive integers, got resize={resize!r} crop={crop!r}")
        if crop > resize:
            raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values each, std positive; got mean={mean!r} std={std!r}")
        source_size = 0 if source_size is None else source_size
        if isinstance(source_size, bool) or not isinstance(source_size, int) or source_size < 0 or \
                0 < source_size < crop:
            raise ValueError(f"source_size must be 0 (off) or an integer >= crop ({crop}), got {source_size!r}")
        self.train, self.resize, self.crop = bool(train), resize, crop
        self.source_size = source_size
        self.mean, self.std = list(map(float, mean)), list(map(float, std))

    def __repr__(self) -> str:
        kind = "train" if self.train else "test"
        source = f", source_size={self.source_size}" if self.source_size else ""
        return f"BoxTransform({kind}, resize={self.resize}, crop={self.crop}{source})"

    def _params(self) -> tuple[int, int, bool]:
        room = self.resize - self.crop
        if self.train:
            top = int(torch.randint(0, room + 1, (1,)).item())
            left = int(torch.randint(0, room + 1, (1,)).item())
            flip = bool(torch.rand(1).item() < 0.5)
        else:  # torchvision's center_crop offsets
            top = left = int(round(room / 2.0))
            flip = False
        return top, left, flip

    def _finish(self, out: Image.Image, flip: bool) -> torch.Tensor:
        if flip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return TF.normalize(TF.to_tensor(out), self.mean, self.std)

    def __call__(self, image: Image.Image, box=None):
        width, height = image.size
        top, left, flip = self._params()
        out = image.resize((self.resize, self.resize), Image.BILINEAR)
        out = out.crop((left, top, left + self.crop, top + self.crop))
        tensor = self._finish(out, flip)
        if box is None:
            return tensor, None
        return tensor, self.map_box(box, (width, height), top, left, flip)

    def views(self, image: Image.Image, box=None):
        """``(input tensor, box or None, source tensor or None)``: one draw of the geometry, the
        input exactly as ``__call__`` renders it, and (``source_size > 0``) the same view at
        ``source_size`` px from the original pixels. Without a source size this is ``__call__``
        plus ``None``."""
        width, height = image.size
        top, left, flip = self._params()
        out = image.resize((self.resize, self.resize), Image.BILINEAR)
        tensor = self._finish(out.crop((left, top, left + self.crop, top + self.crop)), flip)
        source = None
        if self.source_size:
            region = self.region((width, height), top, left)
            side = self.source_size
            source = self._finish(image.resize((side, side), Image.BILINEAR, box=region), flip)
        return tensor, None if box is None else self.map_box(box, (width, height), top, left, flip), source

    def region(self, size: tuple[int, int], top: int, left: int) -> tuple[float, float, float, float]:
        """The part of a ``size = (W, H)`` image that a view at crop offset (top, left) shows,
        in the image's own pixels ``(x0, y0, x1, y1)`` (before any flip)."""
        width, height = size
        sx, sy = width / self.resize, height / self.resize
        return (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)

    def source_detail(self, size: tuple[int, int]) -> float:
        """How many of the source's pixels per side are the image's own (<= 1; 1 = all real
        detail, less = the view was upsampled to ``source_size`` because the image is small)."""
        if not self.source_size:
            return 0.0
        width, height = size
        native = min(width, height) * self.crop / self.resize
        return min(1.0, native / self.source_size)

    def map_box(self, box, size: tuple[int, int], top: int, left: int, flip: bool) -> torch.Tensor:
        """The box in output pixels for a given image size and crop/flip decision."""
        width, height = size
        sx, sy = self.resize / width, self.resize / height
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = x1 * sx - left, x2 * sx - left
        y1, y2 = y1 * sy - top, y2 * sy - top
        if flip:
            x1, x2 = self.crop - x2, self.crop - x1
        values = torch.tensor([x1, y1, x2, y2], dtype=torch.float32)
        return values.clamp_(0.0, float(self.crop))


def build_transform(train: bool, resize: int, crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    source_size: int = 0) -> BoxTransform:
    """The FLRDF training (``train=True``) or test transform; see ``BoxTransform``.
    ``source_size > 0``: ``views`` also renders the zoom source at that size."""
    return BoxTransform(train, resize, crop, mean, std, source_size)


def to_uint8(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Undo the transform's normalisation: (B, 3, H, W) tensors -> uint8 (B, H, W, 3) RGB arrays."""
    m = images.new_tensor(mean).view(1, 3, 1, 1)
    s = images.new_tensor(std).view(1, 3, 1, 1)
    x = (images.detach().float() * s + m).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
