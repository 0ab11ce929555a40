"""The contact sheet an infer.py batch writes beside its results (face_match_age/reports/batch_sheet.py)."""

import itertools
import shutil

import pytest
from PIL import Image

import infer
from face_match_age.detection import imaging
from face_match_age.reports import batch_sheet
from face_match_age.reports.contact_sheet import EMPTY_FACE, PADDING, THUMB_SIDE, TITLE_SIZE, Tile, contact_sheet


@pytest.fixture
def photos(photo_dir, tmp_path):
    """A folder of the test photos, which a test may delete from after its batch."""
    folder = tmp_path / "imgs"
    shutil.copytree(photo_dir, folder)
    return folder


def _pairs_csv(folder, rows):
    path = folder / "pairs.csv"
    path.write_text("img1,img2\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def _every_pair_csv(folder):
    """Every pair of the folder's photos: 4 photos, 6 pairs."""
    names = sorted(path.name for path in folder.glob("*.jpg"))
    return _pairs_csv(folder, itertools.combinations(names, 2))


def _run(*args, checkpoint):
    return infer.main([*map(str, args), "--ckpt", str(checkpoint)])


def _sheet(out):
    with Image.open(out / batch_sheet.SHEET_NAME) as sheet:
        sheet.load()
        return sheet


def _size_of(tiles: int):
    """The size of a pair sheet of `tiles` tiles, as the shared layout draws it."""
    return contact_sheet([Tile([None, None])] * tiles, "a title").size


def _row(index, similarity=None, is_match=False, ages=(30.0, 40.0)):
    verification = None if similarity is None else {"is_match": is_match, "similarity": similarity}
    faces = [{"age": age, "box": [0, 0, 10, 10]} for age in ages]
    return {"pair_index": index, "verification": verification, "face_1": faces[0], "face_2": faces[1]}


def test_a_batch_ends_with_a_jpeg_sheet_with_a_tile_per_pair(
    photos, tmp_path, torch_home_with_vggface2, age_checkpoint, capsys
):
    pairs = [
        ("astronaut.jpg", "astronaut_edit.jpg"),
        ("astronaut.jpg", "missing.jpg"),
        ("astronaut_edit.jpg", "two_people.jpg"),
        ("two_people.jpg", "coffee.jpg"),
    ]
    out = tmp_path / "out"
    assert _run("--pairs", _pairs_csv(photos, pairs), out, checkpoint=age_checkpoint) == infer.EXIT_PAIRS_FAILED
    assert f"contact sheet of the pairs -> {out / batch_sheet.SHEET_NAME}" in capsys.readouterr().out
    sheet = _sheet(out)
    assert sheet.format == "JPEG"
    assert sheet.size == _size_of(4)


def test_a_batch_of_more_pairs_than_the_tile_limit_opens_and_shows_only_the_limit(
    photos, tmp_path, torch_home_with_vggface2, age_checkpoint, monkeypatch
):
    monkeypatch.setattr(batch_sheet, "MAX_TILES", 2)
    opened = []
    monkeypatch.setattr(batch_sheet, "load_image", lambda path: opened.append(path) or imaging.load_image(path))
    pairs = _every_pair_csv(photos)
    assert _run("--pairs", pairs, tmp_path / "out", checkpoint=age_checkpoint) == infer.EXIT_PAIRS_FAILED  # 6 pairs
    assert _sheet(tmp_path / "out").size == _size_of(2)
    assert len(opened) <= 2 * 2


def test_a_resumed_batch_ends_with_the_sheet_of_an_uninterrupted_one(
    photos, tmp_path, torch_home_with_vggface2, age_checkpoint
):
    command = ["--pairs", _every_pair_csv(photos), "--inference-batch-size", "1"]
    _run(*command, tmp_path / "whole", checkpoint=age_checkpoint)
    out = tmp_path / "killed"
    shutil.copytree(tmp_path / "whole", out)
    (out / batch_sheet.SHEET_NAME).unlink()
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl").write_bytes(b"".join(lines[:2]))  # killed after two rows
    _run(*command, out, checkpoint=age_checkpoint)
    sheet = (out / batch_sheet.SHEET_NAME).read_bytes()
    assert sheet == (tmp_path / "whole" / batch_sheet.SHEET_NAME).read_bytes()


def test_a_batch_where_every_pair_failed_still_gets_its_sheet(
    photos, tmp_path, torch_home_with_vggface2, age_checkpoint
):
    pairs_csv = _pairs_csv(photos, [("coffee.jpg", "missing.jpg"), ("gone.jpg", "coffee.jpg")])
    assert _run("--pairs", pairs_csv, tmp_path / "out", checkpoint=age_checkpoint) == infer.EXIT_PAIRS_FAILED
    assert _sheet(tmp_path / "out").size == _size_of(2)


def test_a_photo_deleted_since_its_batch_leaves_an_empty_face_slot(
    photos, tmp_path, torch_home_with_vggface2, age_checkpoint
):
    pairs_csv = _pairs_csv(photos, [("astronaut.jpg", "astronaut_edit.jpg")])
    out = tmp_path / "out"
    assert _run("--pairs", pairs_csv, out, checkpoint=age_checkpoint) == infer.EXIT_OK
    (photos / "astronaut.jpg").unlink()
    assert _run("--pairs", pairs_csv, out, checkpoint=age_checkpoint) == infer.EXIT_OK  # rebuilds the sheet
    top = TITLE_SIZE + 2 * PADDING + PADDING + THUMB_SIDE // 2  # the middle of the first tile's faces
    slots = (PADDING + THUMB_SIDE // 2, 2 * PADDING + THUMB_SIDE + THUMB_SIDE // 2)
    gone, kept = (_sheet(out).getpixel((left, top)) for left in slots)
    assert max(abs(a - b) for a, b in zip(gone, EMPTY_FACE)) < 8
    assert max(abs(a - b) for a, b in zip(kept, EMPTY_FACE)) >= 8


def test_the_sheet_shows_matches_by_similarity_then_non_matches_then_failures():
    rows = [
        _row(0),
        _row(1, 0.2),
        _row(2, 0.8, is_match=True),
        _row(3, 0.6),
        _row(4, 0.95, is_match=True),
        _row(5),
    ]
    order = [row["pair_index"] for row in batch_sheet.sheet_rows(rows, limit=10)]
    assert order == [4, 2, 3, 1, 0, 5]


def test_past_the_limit_each_verdict_keeps_a_share_of_the_sheet():
    matches = [_row(index, 0.9 - index / 100, is_match=True) for index in range(10)]
    rows = [*matches, _row(10, 0.3), _row(11)]
    order = [row["pair_index"] for row in batch_sheet.sheet_rows(rows, limit=5)]
    assert order == [0, 1, 2, 10, 11]


def test_a_caption_names_the_photos_and_says_the_verdict_and_ages():
    row = _row(0, 0.81234, is_match=True) | {"file_1": "imgs/a.jpg", "file_2": "b.jpg", "label": 1}
    row["verification"]["threshold_used"] = 0.7
    assert batch_sheet.pair_caption(row, ()) == [
        "a.jpg | b.jpg",
        "match: similarity 0.812 (threshold 0.70)",
        "ages 30 / 40   label 1",
    ]


def test_a_caption_without_ages_or_verification_says_why_with_file_names(tmp_path):
    missing = tmp_path / "missing.jpg"
    row = _row(0, ages=(None, None)) | {"file_1": "a.jpg", "file_2": "missing.jpg", "label": None}
    row["error"] = f"cannot read image {missing}: no such file"
    caption = batch_sheet.pair_caption(row, (tmp_path / "a.jpg", missing))
    assert caption[1] == "failed: cannot read image missing.jpg: no such file"
    assert caption[2] == "ages - / -"
