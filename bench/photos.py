"""Photos for the benchmark scripts: scikit-image's astronaut, shifted, scaled and mirrored so that no
two are alike. (scikit-image is a dev dependency; these are never part of a dataset.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image

WHOLE_PHOTO = (0, 0, 512, 512)  # the astronaut in her setting: detection has work to do
FACE_CROP = (100, 0, 350, 250)  # a face with margin, as IMDB-WIKI's crops are


def astronaut_variants(count: int, box: tuple[int, int, int, int], sides: tuple[int, ...]) -> Iterator[Image.Image]:
    """`count` photos cut from `box` with small shifts, resized to the `sides` in turn, every other mirrored;
    made one at a time (10,000 photos of 400 pixels would be 4.8 GB at once)."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    left, top, right, bottom = box
    for number in range(count):
        photo = astronaut.crop((left + number % 9, top + number % 7, right - number % 5, bottom))
        photo = photo.resize((sides[number % len(sides)],) * 2)
        yield photo.transpose(Image.FLIP_LEFT_RIGHT) if number % 2 else photo


def write_astronaut_variants(
    folder: Path, count: int, box: tuple[int, int, int, int], sides: tuple[int, ...]
) -> list[Path]:
    """astronaut_variants written as JPEGs into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, photo in enumerate(astronaut_variants(count, box, sides)):
        paths.append(folder / f"photo_{number:04d}.jpg")
        photo.save(paths[-1], quality=92)
    return paths


def astronaut_photos_of_varied_sizes(count: int, seed: int = 0) -> list[Image.Image]:
    """`count` crops of the astronaut photo, rescaled to varied sizes and aspect ratios as IMDB-WIKI's photos
    vary: longest side 120 to 700 pixels, width / height 0.6 to 1.6, her face whole or cut by an edge."""
    import numpy as np
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        width, height = (int(v) for v in rng.integers(200, 513, size=2))
        left, top = int(rng.integers(0, 513 - width)), int(rng.integers(0, min(100, 512 - height) + 1))
        aspect, longest = rng.uniform(0.6, 1.6), rng.uniform(120, 700)
        size = (round(longest * min(1, aspect)), round(longest * min(1, 1 / aspect)))
        photos.append(astronaut.crop((left, top, left + width, top + height)).resize(size, Image.BILINEAR))
    return photos
