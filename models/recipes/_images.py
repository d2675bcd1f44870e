"""Real photos shipped in wheels, and the crops and normalisation the image recipes share.

Photos are read straight from the installed packages' data folders with PIL (never through ``skimage.data``,
whose fetchers may reach for the network). Grey and RGBA images are converted to RGB.

Crops follow torchvision's conventions, re-implemented with PIL and numpy (torchvision does not load beside
the zoo's torch): a centre square crop, and ``RandomResizedCrop`` (area fraction ``scale``, aspect ratio
log-uniform in ``ratio``, ten tries, then the centre crop fallback) with an optional horizontal flip. Resizing
is PIL bilinear, which anti-aliases when shrinking, as torchvision does for PIL images. ImageNet normalisation
is ``(x / 255 - mean) / std`` per RGB channel, laid out CHW.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _build import package_file
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PHOTOS: dict[str, tuple[str, str]] = {
    # name: (package, path inside the package)
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "cell": ("skimage", "data/cell.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "clock_motion": ("skimage", "data/clock_motion.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "color": ("skimage", "data/color.png"),
    "colorwheel": (
        "skimage",
        "data/color.png",
    ),  # skimage.data.colorwheel() loads color.png: same photo as "color"
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "horse": ("skimage", "data/horse.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "ihc": ("skimage", "data/ihc.png"),
    "logo": ("skimage", "data/logo.png"),
    "microaneurysms": ("skimage", "data/microaneurysms.png"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "page": ("skimage", "data/page.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "text": ("skimage", "data/text.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "Minduka_Present_Blue_Pack": ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
    "matplotlib_logo": ("matplotlib", "mpl-data/sample_data/logo2.png"),
}

# The 16 calibration / 8 evaluation photos of zoo.md (mobilenet_v2_imagenet, reused by nudenet_yolov8n).
CALIBRATION_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "coins",
    "hubble_deep_field",
    "ihc",
    "moon",
    "motorcycle_left",
    "retina",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "cell",
    "clock_motion",
    "color",
)
EVALUATION_PHOTOS = (
    "chelsea",
    "motorcycle_right",
    "horse",
    "microaneurysms",
    "china",
    "flower",
    "grace_hopper",
    "Minduka_Present_Blue_Pack",
)


def photo_path(name: str) -> Path:
    """Returns the file of a named photo inside its package (see PHOTOS)."""
    package, relative = PHOTOS[name]
    return package_file(package, relative)


def load_rgb(name: str) -> Image.Image:
    """Loads a named photo as an 8-bit RGB PIL image (grey, palette and alpha images converted)."""
    with Image.open(photo_path(name)) as image:
        if image.mode in ("I;16", "I", "F"):
            array = np.asarray(image, dtype=np.float64)
            span = max(array.max() - array.min(), 1e-12)
            image = Image.fromarray(((array - array.min()) / span * 255).round().astype(np.uint8))
        return image.convert("RGB")


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Returns the largest centred square of the image, resized to size x size (bilinear)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))


def random_resized_box(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Draws a crop box (left, top, right, bottom) as torchvision's RandomResizedCrop.get_params does."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def random_resized_crop(
    image: Image.Image,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float],
    flip_probability: float = 0.5,
) -> Image.Image:
    """Returns one random-resized crop (bilinear, size x size), horizontally flipped with the given
    probability."""
    box = random_resized_box(rng, image.width, image.height, scale)
    crop = image.resize((size, size), Image.BILINEAR, box=box)
    if rng.uniform() < flip_probability:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return crop


def crops_of(
    image: Image.Image, rng: np.random.Generator, size: int, n_random: int, scale: tuple[float, float]
) -> list[Image.Image]:
    """Returns the centre square crop followed by n_random random-resized crops of one image."""
    return [center_square(image, size)] + [
        random_resized_crop(image, rng, size, scale) for _ in range(n_random)
    ]


def round_robin_crops(
    names: Sequence[str], count: int, rng: np.random.Generator, size: int, scale: tuple[float, float]
) -> tuple[list[Image.Image], list[str]]:
    """Returns count random-resized crops taken from the named photos in turn, and a label per crop."""
    images = {name: load_rgb(name) for name in names}
    crops, labels = [], []
    for i in range(count):
        name = names[i % len(names)]
        crops.append(random_resized_crop(images[name], rng, size, scale))
        labels.append(f"{name}:random{i // len(names)}")
    return crops, labels


def to_chw(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Returns a float32 (3, H, W) array: RGB / 255, minus mean, divided by std, per channel."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))
