"""Identity clusters: planted people come back as clusters with a stable numbering, the cluster table gives
each person's size and age range, and each person's timeline image shows their faces youngest first."""

import io

import numpy as np
import pytest
from PIL import Image

from face_match_age.inference import identity_clusters
from face_match_age.inference.identity_clusters import (
    cluster_labels,
    cluster_table,
    save_cluster_timelines,
    timeline_members,
)
from face_match_age.inference.similarity_search import Matches, threshold_pairs
from face_match_age.reports.contact_sheet import MAX_TILES, PADDING, THUMB_SIDE, TITLE_SIZE, Tile, contact_sheet

THRESHOLD = 0.7  # config.py's verification_threshold
PEOPLE = (5, 3, 1)  # photos of each planted person
STRANGERS = 20


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, list[set[int]]]:
    """Noisy copies (cosine ~0.95 to their person) of three people, and strangers, in shuffled rows; with
    the planted groups of rows, strangers and the one-photo person as groups of one."""
    rng = np.random.default_rng(0)
    people = _unit(rng.standard_normal((len(PEOPLE), 512)))
    owners = np.repeat(np.arange(len(PEOPLE)), PEOPLE)
    copies = _unit(0.95 * people[owners] + np.sqrt(1 - 0.95**2) * _unit(rng.standard_normal((len(owners), 512))))
    embeddings = np.concatenate([copies, _unit(rng.standard_normal((STRANGERS, 512)))])
    owners = np.concatenate([owners, np.arange(len(PEOPLE), len(PEOPLE) + STRANGERS)])
    shuffle = rng.permutation(len(embeddings))
    embeddings, owners = embeddings[shuffle], owners[shuffle]
    groups = [set(np.flatnonzero(owners == owner).tolist()) for owner in np.unique(owners)]
    return embeddings, groups


def _groups(labels: np.ndarray) -> list[set[int]]:
    return [set(np.flatnonzero(labels == label).tolist()) for label in np.unique(labels)]


def test_clusters_of_planted_embeddings_are_exactly_the_planted_people(planted):
    embeddings, groups = planted
    labels = cluster_labels(len(embeddings), threshold_pairs(embeddings, THRESHOLD))
    assert sorted(map(sorted, _groups(labels))) == sorted(map(sorted, groups))


def test_clusters_are_numbered_largest_first(planted):
    embeddings, groups = planted
    labels = cluster_labels(len(embeddings), threshold_pairs(embeddings, THRESHOLD))
    sizes = np.bincount(labels)
    assert sizes.tolist() == sorted((len(group) for group in groups), reverse=True)


def test_cluster_numbering_does_not_depend_on_the_order_of_the_matches(planted):
    embeddings, _ = planted
    matches = threshold_pairs(embeddings, THRESHOLD)
    order = np.random.default_rng(1).permutation(len(matches.first))
    swapped = Matches(matches.second[order], matches.first[order], matches.similarity[order])
    assert cluster_labels(len(embeddings), swapped).tolist() == cluster_labels(len(embeddings), matches).tolist()


def test_clusters_of_equal_size_are_numbered_by_their_smallest_row():
    matches = Matches(np.array([5, 1]), np.array([6, 2]), np.array([0.9, 0.9]))
    assert cluster_labels(7, matches).tolist() == [2, 0, 0, 3, 4, 1, 1]


def test_a_chain_of_matches_is_one_cluster_even_where_its_ends_do_not_match():
    first, second = np.eye(2, 512, dtype=np.float32)
    between = _unit(first + second)  # cosine 0.71 to each end; the ends are orthogonal
    embeddings = np.stack([first, between, second])
    matches = threshold_pairs(embeddings, THRESHOLD)
    assert list(zip(matches.first.tolist(), matches.second.tolist(), strict=True)) == [(0, 1), (1, 2)]
    assert cluster_labels(3, matches).tolist() == [0, 0, 0]


@pytest.mark.parametrize("step", [1, 2, 5])
def test_matches_joined_a_few_at_a_time_give_the_clusters_of_all_at_once(monkeypatch, step):
    # Random sparse matches over 60 rows: chains that only meet across steps, many groups and singletons.
    rng = np.random.default_rng(3)
    matches = Matches(rng.integers(0, 60, 45), rng.integers(0, 60, 45), np.full(45, 0.9))
    whole = cluster_labels(60, matches)
    monkeypatch.setattr(identity_clusters, "EDGES_PER_STEP", step)
    assert cluster_labels(60, matches).tolist() == whole.tolist()
    assert len(np.unique(whole)) > 5  # the example has several clusters to get wrong


def test_clustering_a_million_rows_never_builds_a_rows_by_rows_matrix():
    # A dense million x million matrix would need a terabyte: this only passes when memory follows the matches.
    matches = Matches(np.array([0, 999_998]), np.array([999_999, 999_999]), np.array([0.9, 0.9]))
    labels = cluster_labels(1_000_000, matches)
    assert np.bincount(labels)[0] == 3


def test_a_match_naming_a_row_beyond_count_is_refused():
    with pytest.raises(ValueError, match="only 3 rows"):
        cluster_labels(3, Matches(np.array([0]), np.array([3]), np.array([0.9])))


def _records(ages: list[float | None], names: list[str] | None = None) -> list[dict]:
    names = names or [f"photo_{row:03d}.jpg" for row in range(len(ages))]
    return [
        {"row": row, "file": name, "box": [4, 4, 60, 60], "age": age, "age_std": None, "error": None}
        for row, (age, name) in enumerate(zip(ages, names, strict=True))
    ]


def test_cluster_table_gives_each_clusters_size_age_range_and_example():
    labels = np.array([1, 0, 0, 2, 0])
    records = _records([50.0, 31.26, 24.04, 40.0, 28.5])
    table = cluster_table(labels, records, {0: "clusters/cluster_00000.jpg"})
    assert table[0] == {
        "cluster": 0,
        "size": 3,
        "age_min": 24.0,
        "age_max": 31.3,
        "example": "photo_001.jpg",
        "timeline": "clusters/cluster_00000.jpg",
    }
    assert table[1]["timeline"] == ""
    assert [row["size"] for row in table] == [3, 1, 1]


def test_cluster_table_leaves_the_age_range_empty_without_an_age_model():
    table = cluster_table(np.array([0, 0]), _records([None, None]))
    assert table[0]["age_min"] is None
    assert table[0]["age_max"] is None


def test_timeline_order_is_youngest_first_then_unaged_photos_by_name():
    rows = [10, 11, 12, 13, 14]
    ages = [40.0, None, 20.0, None, 30.0]
    files = ["a.jpg", "z.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert timeline_members(rows, ages, files) == [12, 14, 10, 13, 11]


def test_a_long_timeline_is_sampled_evenly_keeping_the_youngest_and_the_oldest():
    ages = np.random.default_rng(2).uniform(1, 90, size=500).tolist()
    files = [f"{row}.jpg" for row in range(500)]
    chosen = timeline_members(list(range(500)), ages, files)
    chosen_ages = [ages[row] for row in chosen]
    assert len(chosen) == MAX_TILES
    assert len(set(chosen)) == MAX_TILES
    assert chosen_ages[0] == min(ages)
    assert chosen_ages[-1] == max(ages)
    assert chosen_ages == sorted(chosen_ages)


def _colour_photos(folder, colours: list[tuple[int, int, int]]) -> list[str]:
    names = []
    for index, colour in enumerate(colours):
        name = f"person/photo_{index:03d}.jpg"
        (folder / "person").mkdir(exist_ok=True)
        Image.new("RGB", (64, 64), colour).save(folder / name, quality=95)
        names.append(name)
    return names


def _tile_centre(sheet: Image.Image, index: int) -> tuple[int, int, int]:
    """The colour at the centre of face `index` of a one-row sheet (contact_sheet's layout)."""
    tile_width = THUMB_SIDE + 2 * PADDING
    top = TITLE_SIZE + 2 * PADDING + PADDING
    return sheet.getpixel((index * tile_width + PADDING + THUMB_SIDE // 2, top + THUMB_SIDE // 2))


def _close(colour, expected) -> bool:
    return max(abs(a - b) for a, b in zip(colour, expected, strict=True)) < 20  # JPEG shifts colours a little


def _decoded(path) -> Image.Image:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert image.format == "JPEG"
        return image.convert("RGB")


def test_a_timeline_shows_the_faces_youngest_first(tmp_path):
    red, green, blue = (220, 20, 20), (20, 200, 20), (20, 20, 220)
    records = _records([50.0, 20.0, 35.0], _colour_photos(tmp_path, [red, green, blue]))
    written = save_cluster_timelines(np.array([0, 0, 0]), records, tmp_path, tmp_path / "clusters")
    sheet = _decoded(written[0])
    assert _close(_tile_centre(sheet, 0), green)
    assert _close(_tile_centre(sheet, 1), blue)
    assert _close(_tile_centre(sheet, 2), red)


def test_timelines_are_written_only_for_clusters_of_two_photos_or_more(tmp_path):
    records = _records([30.0] * 6, _colour_photos(tmp_path, [(120, 120, 120)] * 6))
    written = save_cluster_timelines(np.array([0, 1, 0, 2, 1, 0]), records, tmp_path, tmp_path / "clusters")
    assert sorted(written) == [0, 1]
    assert sorted(path.name for path in (tmp_path / "clusters").iterdir()) == ["cluster_00000.jpg", "cluster_00001.jpg"]


def test_timelines_stop_at_the_limit_keeping_the_largest_clusters(tmp_path):
    records = _records([30.0] * 6, _colour_photos(tmp_path, [(120, 120, 120)] * 6))
    written = save_cluster_timelines(np.array([0, 1, 0, 2, 1, 0]), records, tmp_path, tmp_path / "clusters", limit=1)
    assert list(written) == [0]


def test_no_clusters_of_two_write_nothing_and_create_no_folder(tmp_path):
    records = _records([30.0, 40.0], _colour_photos(tmp_path, [(120, 120, 120)] * 2))
    assert save_cluster_timelines(np.array([0, 1]), records, tmp_path, tmp_path / "clusters") == {}
    assert not (tmp_path / "clusters").exists()


def test_a_huge_cluster_gives_a_timeline_no_larger_than_a_full_sheet(tmp_path, monkeypatch):
    opened = []
    load_image = identity_clusters.load_image

    def counted_load_image(path):
        opened.append(path)
        return load_image(path)

    monkeypatch.setattr(identity_clusters, "load_image", counted_load_image)
    records = _records(list(np.linspace(20, 70, 120)), _colour_photos(tmp_path, [(120, 120, 120)] * 120))
    written = save_cluster_timelines(np.zeros(120, np.int64), records, tmp_path, tmp_path / "clusters")
    full_sheet = contact_sheet([Tile([None], ["age", "name"])] * MAX_TILES, "a title")
    assert _decoded(written[0]).size == full_sheet.size
    assert len(opened) == MAX_TILES
    assert len(set(opened)) == MAX_TILES  # each photo shown is opened once


def test_a_photo_gone_since_it_was_embedded_leaves_an_empty_tile(tmp_path):
    red, green = (220, 20, 20), (20, 200, 20)
    records = _records([20.0, 30.0], _colour_photos(tmp_path, [red, green]))
    (tmp_path / records[0]["file"]).unlink()
    sheet = _decoded(save_cluster_timelines(np.array([0, 0]), records, tmp_path, tmp_path / "clusters")[0])
    assert _close(_tile_centre(sheet, 0), (225, 225, 225))  # contact_sheet's empty face
    assert _close(_tile_centre(sheet, 1), green)


def test_a_sampled_timeline_says_so_in_its_title(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(identity_clusters, "save_contact_sheet", lambda tiles, path, title: titles.append(title))
    records = _records(list(np.linspace(23, 61, 57)), [f"{row}.jpg" for row in range(57)])
    save_cluster_timelines(np.zeros(57, np.int64), records, tmp_path, tmp_path / "clusters")
    assert titles == [f"cluster 0: 57 photos, ages 23-61 ({MAX_TILES} shown, evenly spaced by age)"]
