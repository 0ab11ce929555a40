"""Contact sheets: a grid of captioned tiles (one face, or the two faces of a pair) that a person scans at a
glance. A sheet's size is bounded whatever the size of the run behind it: at most `max_tiles` tiles of a
fixed size, so a sheet of a million-pair batch is as small as one of ten pairs (callers choose which tiles
matter: the worst errors, the matches first, a random sample)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from face_match_age.files.output_files import write_atomically

THUMB_SIDE = 128  # pixels of each face thumbnail: enough to judge a crop or an age at a glance
MAX_TILES = 48  # the most tiles on one sheet; with COLUMNS this bounds the sheet to 8 x 6 tiles
COLUMNS = 8
CAPTION_LINES = 3
CAPTION_SIZE = 14  # font size (pixels) of the caption lines
TITLE_SIZE = 20
PADDING = 6
BACKGROUND, EMPTY_FACE, TEXT = (255, 255, 255), (225, 225, 225), (20, 20, 20)


@dataclass
class Tile:
    """One cell of a sheet: its face thumbnails side by side (None draws an empty square, e.g. a photo
    without a face), the caption lines under them, and an optional frame colour (e.g. green for a match)."""

    faces: Sequence[Image.Image | None]
    caption: Sequence[str] = ()
    frame: tuple[int, int, int] | None = None


def contact_sheet(
    tiles: Sequence[Tile], title: str = "", columns: int = COLUMNS, max_tiles: int = MAX_TILES
) -> Image.Image:
    """The sheet of the first `max_tiles` tiles, `columns` per row, under `title` (a line saying how many
    tiles were left out is added when there are more)."""
    shown = list(tiles[:max_tiles])
    if len(tiles) > len(shown):
        title = f"{title}  (first {len(shown)} of {len(tiles)})".strip()
    faces_per_tile = max((len(tile.faces) for tile in shown), default=1)
    tile_width = faces_per_tile * THUMB_SIDE + (faces_per_tile - 1) * PADDING + 2 * PADDING
    tile_height = THUMB_SIDE + CAPTION_LINES * (CAPTION_SIZE + 2) + 3 * PADDING
    used_columns = max(1, min(columns, len(shown)))
    rows = max(1, math.ceil(len(shown) / used_columns))
    title_font = ImageFont.load_default(size=TITLE_SIZE)
    title_height = TITLE_SIZE + 2 * PADDING if title else 0
    # A sheet of a few tiles widens for its title, up to a full row: the title says what the tiles are.
    title_width = math.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=title_font))
    width = max(used_columns * tile_width, min(title_width + 2 * PADDING, columns * tile_width))
    sheet = Image.new("RGB", (width, title_height + rows * tile_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((PADDING, PADDING), _fit(draw, title, title_font, width - 2 * PADDING), fill=TEXT, font=title_font)
    for index, tile in enumerate(shown):
        left = (index % used_columns) * tile_width
        top = title_height + (index // used_columns) * tile_height
        _draw_tile(sheet, draw, tile, left, top, tile_width, tile_height)
    if not shown:
        draw.text((PADDING, title_height + PADDING), "nothing to show", fill=TEXT, font=_caption_font())
    return sheet


def save_contact_sheet(tiles: Sequence[Tile], path: Path, title: str = "", **layout) -> Path:
    """Write the sheet as a JPEG, atomically (a crash never leaves half a picture)."""
    sheet = contact_sheet(tiles, title, **layout)
    return write_atomically(Path(path), lambda tmp: sheet.save(tmp, format="JPEG", quality=90))


def thumbnail(image: Image.Image, box: Sequence[float] | None = None) -> Image.Image:
    """A THUMB_SIDE square of `image` (of its `box`, x1 y1 x2 y2 in its pixels, when given), fitted, not
    stretched, so faces keep their proportions."""
    if box is not None:
        x1, y1, x2, y2 = (round(v) for v in box)
        image = image.crop((max(0, x1), max(0, y1), min(image.width, x2), min(image.height, y2)))
    return ImageOps.pad(image.convert("RGB"), (THUMB_SIDE, THUMB_SIDE), color=EMPTY_FACE)


def _draw_tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, tile: Tile, left: int, top: int, width: int, height):
    if tile.frame is not None:
        draw.rectangle((left + 1, top + 1, left + width - 2, top + height - 2), outline=tile.frame, width=3)
    for slot, face in enumerate(tile.faces):
        corner = (left + PADDING + slot * (THUMB_SIDE + PADDING), top + PADDING)
        if face is None:
            draw.rectangle((*corner, corner[0] + THUMB_SIDE - 1, corner[1] + THUMB_SIDE - 1), fill=EMPTY_FACE)
        else:
            sheet.paste(thumbnail(face) if face.size != (THUMB_SIDE, THUMB_SIDE) else face, corner)
    font = _caption_font()
    for line_number, line in enumerate(list(tile.caption)[:CAPTION_LINES]):
        y = top + 2 * PADDING + THUMB_SIDE + line_number * (CAPTION_SIZE + 2)
        draw.text((left + PADDING, y), _fit(draw, line, font, width - 2 * PADDING), fill=TEXT, font=font)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, shortened with an ellipsis until it fits `width` pixels (a long file name must not run into
    the next tile)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _caption_font():
    return ImageFont.load_default(size=CAPTION_SIZE)
