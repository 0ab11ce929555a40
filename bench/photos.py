"""Photos for the benchmark scripts: scikit-image's astronaut, shifted, scaled and mirrored so that no
two are alike. (scikit-image is a dev dependency; these are never part of a dataset.)"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

WHOLE_PHOTO = (0, 0, 512, 512)  # the astronaut in her setting: detection has work to do
FACE_CROP = (100, 0, 350, 250)  # a face with margin, as IMDB-WIKI's crops are


def write_astronaut_variants(
    folder: Path, count: int, box: tuple[int, int, int, int], sides: tuple[int, ...]
) -> list[Path]:
    """`count` JPEGs cut from `box` with small shifts, resized to the `sides` in turn, every other mirrored."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    folder.mkdir(parents=True, exist_ok=True)
    left, top, right, bottom = box
    paths = []
    for number in range(count):
        photo = astronaut.crop((left + number % 9, top + number % 7, right - number % 5, bottom))
        photo = photo.resize((sides[number % len(sides)],) * 2)
        if number % 2:
            photo = photo.transpose(Image.FLIP_LEFT_RIGHT)
        paths.append(folder / f"photo_{number:04d}.jpg")
        photo.save(paths[-1], quality=92)
    return paths
