"""Training and test transforms that carry the ground-truth box along with the image.

FLRDF.md recipe: train = resize to a square (aspect not kept, as FGVC code does),
random crop, random horizontal flip; test = the same resize and a centre crop.
The box is scaled, shifted, flipped and clipped exactly like the pixels, so
localization can be scored in the network's input coordinates.
Randomness comes from torch's RNG (seeded per DataLoader worker by torch).
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

    def __init__(self, train: bool, resize: int, crop: int, mean: Sequence[float], std: Sequence[float]):
        if not (isinstance(resize, int) and isinstance(crop, int)) or resize <= 0 or crop <= 0:
            raise ValueError(f"resize and crop must be positive integers, got resize={resize!r} crop={crop!r}")
        if crop > resize:
            raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values each, std positive; got mean={mean!r} std={std!r}")
        self.train, self.resize, self.crop = bool(train), resize, crop
        self.mean, self.std = list(map(float, mean)), list(map(float, std))

    def __repr__(self) -> str:
        kind = "train" if self.train else "test"
        return f"BoxTransform({kind}, resize={self.resize}, crop={self.crop})"

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

    def __call__(self, image: Image.Image, box=None):
        width, height = image.size
        top, left, flip = self._params()
        out = image.resize((self.resize, self.resize), Image.BILINEAR)
        out = out.crop((left, top, left + self.crop, top + self.crop))
        if flip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        tensor = TF.normalize(TF.to_tensor(out), self.mean, self.std)
        if box is None:
            return tensor, None
        return tensor, self.map_box(box, (width, height), top, left, flip)

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


def build_transform(train: bool, resize: int, crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> BoxTransform:
    """The FLRDF training (``train=True``) or test transform; see ``BoxTransform``."""
    return BoxTransform(train, resize, crop, mean, std)


def to_uint8(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Undo the transform's normalisation: (B, 3, H, W) tensors -> uint8 (B, H, W, 3) RGB arrays."""
    m = images.new_tensor(mean).view(1, 3, 1, 1)
    s = images.new_tensor(std).view(1, 3, 1, 1)
    x = (images.detach().float() * s + m).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
