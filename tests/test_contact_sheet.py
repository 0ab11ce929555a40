import io

from PIL import Image

from face_match_age.reports.contact_sheet import (
    COLUMNS,
    MAX_TILES,
    THUMB_SIDE,
    Tile,
    contact_sheet,
    save_contact_sheet,
    thumbnail,
)


def _pair_tiles(count: int, astronaut: Image.Image) -> list[Tile]:
    return [Tile([astronaut, None], [f"pair {n}", "similarity 0.812"]) for n in range(count)]


def test_a_sheet_of_a_huge_run_is_no_larger_than_one_of_max_tiles(astronaut):
    full = contact_sheet(_pair_tiles(MAX_TILES, astronaut), "pairs")
    huge = contact_sheet(_pair_tiles(10 * MAX_TILES, astronaut), "pairs")
    assert huge.size == full.size


def test_tiles_are_laid_out_in_rows_of_the_given_columns(astronaut):
    one_row = contact_sheet(_pair_tiles(COLUMNS, astronaut))
    two_rows = contact_sheet(_pair_tiles(COLUMNS + 1, astronaut))
    assert two_rows.width == one_row.width
    assert two_rows.height == 2 * one_row.height


def test_a_pair_tile_is_twice_as_wide_as_a_single_face_tile(astronaut):
    pairs = contact_sheet([Tile([astronaut, astronaut])])
    singles = contact_sheet([Tile([astronaut])])
    assert pairs.width > 2 * THUMB_SIDE
    assert singles.width < 2 * THUMB_SIDE


def test_an_empty_run_still_gives_a_readable_sheet(tmp_path):
    path = save_contact_sheet([], tmp_path / "empty.jpg", "no pairs")
    with Image.open(path) as sheet:
        assert sheet.format == "JPEG"
        assert sheet.width > 0


def test_a_saved_sheet_decodes_as_the_jpeg_of_the_drawn_sheet(tmp_path, astronaut):
    tiles = _pair_tiles(3, astronaut)
    path = save_contact_sheet(tiles, tmp_path / "sheet.jpg", "three pairs")
    with Image.open(io.BytesIO(path.read_bytes())) as saved:
        assert saved.format == "JPEG"
        assert saved.size == contact_sheet(tiles, "three pairs").size
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_thumbnail_keeps_the_face_proportions_inside_a_square(astronaut):
    tall = thumbnail(astronaut, box=(100, 0, 200, 400))  # a 100 x 400 box
    assert tall.size == (THUMB_SIDE, THUMB_SIDE)
    left_margin = tall.getpixel((2, THUMB_SIDE // 2))
    assert left_margin == (225, 225, 225)  # padded, not stretched


def test_long_captions_are_shortened_to_their_tile(astronaut):
    long_name = "a_very_long_file_name_" * 10 + ".jpg"
    sheet = contact_sheet([Tile([astronaut], [long_name]), Tile([astronaut], ["short"])], columns=2)
    tile_width = sheet.width // 2
    right_edge_of_first_tile = sheet.crop((tile_width - 3, 0, tile_width, sheet.height))
    assert right_edge_of_first_tile.getextrema() == ((255, 255), (255, 255), (255, 255))  # the text stops before it


def test_a_sheet_of_one_tile_widens_to_show_its_whole_title(astronaut):
    title = "Worst false accepts: 1 at threshold 0.700 (red)"
    untitled = contact_sheet([Tile([astronaut])])
    titled = contact_sheet([Tile([astronaut])], title)
    assert titled.width > untitled.width
    assert titled.width <= COLUMNS * untitled.width  # never wider than a full row
