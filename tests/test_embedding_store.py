"""The embedding store: appended in chunks, resumed after a kill, merged from shards."""

import numpy as np
import pytest

from face_match_age.files.embedding_store import EmbeddingStore, StoreError, merge_stores


def _photos(names: list[str], seed: int = 0) -> tuple[list[dict], list[np.ndarray | None]]:
    """A record and an embedding per name; a name containing 'blank' has no face."""
    rng = np.random.default_rng(seed)
    records, embeddings = [], []
    for name in names:
        if "blank" in name:
            records.append({"file": name, "error": "no face found"})
            embeddings.append(None)
        else:
            records.append({"file": name, "box": [1, 2, 30, 40], "age": 31.5, "age_std": 2.0})
            embeddings.append(rng.standard_normal(512).astype(np.float32))
    return records, embeddings


def test_two_chunks_load_as_one_array_in_order(tmp_path):
    first, second = _photos(["a.jpg", "blank.jpg", "b.jpg"], 1), _photos(["c.jpg"], 2)
    store = EmbeddingStore(tmp_path / "store")
    store.append(*first)
    store.append(*second)
    reopened = EmbeddingStore(tmp_path / "store")
    expected = np.stack([first[1][0], first[1][2], second[1][0]])
    np.testing.assert_array_equal(reopened.embeddings(), expected)
    assert [record["row"] for record in reopened.table()] == [0, None, 1, 2]


def test_a_photo_without_a_face_keeps_its_error_and_no_row(tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    store.append(*_photos(["blank.jpg"]))
    face = dict.fromkeys(("box", "detection_probability", "faces_found", "age", "age_std", "age_interval"))
    assert store.table() == [{"row": None, "file": "blank.jpg", **face, "error": "no face found", "stamp": None}]
    assert store.embeddings().shape == (0, 512)


def test_a_chunk_killed_before_its_manifest_entry_is_ignored_and_redone(tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    store.append(*_photos(["a.jpg", "b.jpg"], 1))
    manifest = (tmp_path / "store" / "manifest.json").read_text()
    store.append(*_photos(["c.jpg", "d.jpg"], 2))
    (tmp_path / "store" / "manifest.json").write_text(manifest)  # killed after the part files, before the manifest
    resumed = EmbeddingStore(tmp_path / "store")
    assert resumed.files() == {"a.jpg", "b.jpg"}
    resumed.append(*_photos(["c.jpg", "d.jpg"], 3))
    assert len(EmbeddingStore(tmp_path / "store")) == 4
    np.testing.assert_array_equal(resumed.embeddings()[2:], np.stack(_photos(["c.jpg", "d.jpg"], 3)[1]))


def test_a_photo_appended_again_supersedes_its_older_record_which_stays_readable(tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    store.append(*_photos(["a.jpg", "blank.jpg"], 1))
    again = _photos(["a.jpg"], 2)
    store.append(*again)
    reopened = EmbeddingStore(tmp_path / "store")
    assert [(record["file"], record["row"]) for record in reopened.table()] == [("blank.jpg", None), ("a.jpg", 1)]
    np.testing.assert_array_equal(reopened.rows([1]), np.stack(again[1]))
    assert len(reopened.embeddings()) == 2  # the first chunk is kept as written


def test_a_chunk_naming_a_photo_twice_is_refused(tmp_path):
    with pytest.raises(StoreError, match="same photo twice"):
        EmbeddingStore(tmp_path / "store").append(*_photos(["a.jpg", "a.jpg"]))


def test_a_store_of_another_dimension_is_refused(tmp_path):
    EmbeddingStore(tmp_path / "store").append(*_photos(["a.jpg"]))
    with pytest.raises(StoreError, match="512-d embeddings, not 128-d"):
        EmbeddingStore(tmp_path / "store", dimension=128)


def test_two_merged_shards_equal_one_run_over_all_photos(tmp_path):
    names = ["a.jpg", "blank.jpg", "b.jpg", "c.jpg", "d.jpg"]
    records, embeddings = _photos(names)
    single = EmbeddingStore(tmp_path / "single")
    single.append(records[:2], embeddings[:2])
    single.append(records[2:], embeddings[2:])
    EmbeddingStore(tmp_path / "shard1").append(records[:3], embeddings[:3])
    EmbeddingStore(tmp_path / "shard2").append(records[3:], embeddings[3:])
    merged = merge_stores([tmp_path / "shard1", tmp_path / "shard2"], tmp_path / "merged")
    np.testing.assert_array_equal(merged.embeddings(), single.embeddings())
    assert merged.table() == single.table()


def test_merging_shards_that_share_a_photo_is_refused_naming_it(tmp_path):
    EmbeddingStore(tmp_path / "shard1").append(*_photos(["a.jpg", "b.jpg"]))
    EmbeddingStore(tmp_path / "shard2").append(*_photos(["b.jpg", "c.jpg"]))
    with pytest.raises(StoreError, match=r"b.jpg is in two shards"):
        merge_stores([tmp_path / "shard1", tmp_path / "shard2"], tmp_path / "merged")
    assert not (tmp_path / "merged" / "manifest.json").exists()


def test_merging_into_an_existing_store_is_refused(tmp_path):
    EmbeddingStore(tmp_path / "shard1").append(*_photos(["a.jpg"]))
    EmbeddingStore(tmp_path / "merged").append(*_photos(["z.jpg"]))
    with pytest.raises(StoreError, match="already holds a store"):
        merge_stores([tmp_path / "shard1"], tmp_path / "merged")


def test_rows_gathers_embeddings_across_parts_in_the_order_asked(tmp_path):
    store = EmbeddingStore(tmp_path / "store", dimension=3)
    vectors = [np.full(3, value, dtype=np.float32) for value in range(5)]
    store.append([{"file": "a"}, {"file": "b"}], vectors[:2])
    store.append([{"file": "c"}, {"file": "d"}, {"file": "e"}], vectors[2:])
    assert store.rows([4, 0, 2]).tolist() == [[4.0] * 3, [0.0] * 3, [2.0] * 3]
    assert store.rows([]).shape == (0, 3)
    with pytest.raises(StoreError, match="row 5 is not one of them"):
        store.rows([5])
