"""The one match rule (face_match_age/match_rule.py): a similarity strictly above the threshold, fixed or per
predicted age gap, compared in float32; its number and array forms agree, and pair mode and folder mode give
the same verdict for the same photos at a similarity exactly on the threshold."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

import infer
from face_match_age.inference.analyzer import FaceAnalyzer
from face_match_age.match_rule import (
    AGE_GAP_BANDS,
    CalibrationError,
    MatchRule,
    above,
    cosine_similarities,
    cosine_similarity,
)

BAND_THRESHOLDS = {"0-5": 0.6, "5-10": None, "10-20": 0.4, "20+": 0.3}  # "5-10": measured without negatives


def _calibration(overall: float, bands: dict) -> dict:
    return {
        "target_far": 0.01,
        "overall": {"threshold": overall},
        "bands": {name: {"threshold": threshold, "pairs": 50} for name, threshold in bands.items()},
    }


@pytest.fixture
def calibrated(tmp_path) -> MatchRule:
    (tmp_path / "calibration.json").write_text(json.dumps(_calibration(0.5, BAND_THRESHOLDS)))
    return MatchRule.from_calibration(tmp_path / "calibration.json")


# --- the rule itself -------------------------------------------------------------------------------------


def test_a_similarity_on_the_threshold_is_not_a_match():
    rule = MatchRule(0.5)
    assert rule.is_match(0.5) is False
    assert rule.is_match(float(np.nextafter(np.float32(0.5), np.float32(1)))) is True
    assert rule.is_match(np.array([0.5, 0.6, np.nan])).tolist() == [False, True, False]  # NaN: no similarity


def test_similarity_and_threshold_compare_in_float32():
    # 0.7 + 1e-9 is above 0.7 in float64, but both are the same float32 number: not above it.
    rule = MatchRule(0.7)
    assert rule.is_match(0.7 + 1e-9) is False
    assert not rule.is_match(np.array([0.7 + 1e-9])).any()
    assert not rule.is_match(torch.tensor([0.7 + 1e-9], dtype=torch.float64)).any()
    assert rule.is_match(0.7 + 1e-7) is True  # the next float32 above 0.7 is 0.70000005


@pytest.mark.parametrize("kind", ["fixed", "calibrated"])
def test_numbers_and_arrays_get_the_same_verdicts_and_thresholds(kind, calibrated):
    rule = MatchRule(0.5) if kind == "fixed" else calibrated
    rng = np.random.default_rng(0)
    thresholds = [0.3, 0.4, 0.5, 0.6]
    # similarities on, one float32 step around, and far from every threshold; gaps in every band, on band edges,
    # and unknown
    on = np.array(thresholds, dtype=np.float32)
    similarities = np.concatenate(
        [on, np.nextafter(on, np.float32(1)), np.nextafter(on, np.float32(-1)), rng.uniform(-1, 1, 20)]
    )
    gaps = np.array([0, 4.99, 5, 9.5, 10, 19.99, 20, 45, np.nan, -12])
    similarity, gap = (grid.ravel() for grid in np.meshgrid(similarities, gaps))
    verdicts, per_pair = rule.judge(similarity, gap)
    one_by_one = [rule.judge(float(s), None if np.isnan(g) else float(g)) for s, g in zip(similarity, gap)]
    assert verdicts.tolist() == [verdict for verdict, _ in one_by_one]
    assert per_pair.dtype == np.float32
    np.testing.assert_array_equal(per_pair, np.float32([threshold for _, threshold in one_by_one]))
    # without gaps (a fixed rule, or a calibration's overall threshold): numbers, an array, a tensor (a tile)
    without_gaps = [rule.is_match(float(s)) for s in similarity]
    assert rule.is_match(similarity).tolist() == without_gaps
    assert rule.is_match(torch.from_numpy(similarity)).tolist() == without_gaps


def test_a_calibration_chooses_the_threshold_of_the_age_gap_band(calibrated):
    assert calibrated.threshold_for(12)[0] == 0.4
    assert calibrated.threshold_for(12)[1]["band"] == "10-20"
    assert calibrated.threshold_for(4.99)[0] == 0.6
    assert calibrated.threshold_for(7)[0] == 0.5  # a band without a threshold: the overall one
    threshold, why = calibrated.threshold_for(None)
    assert (threshold, why["band"]) == (0.5, None)
    assert "overall" in why["reason"]
    assert calibrated.lowest == 0.3
    assert calibrated.is_match(0.45, 12) is True
    assert calibrated.is_match(0.45, 2) is False
    assert calibrated.by_age_gap and not MatchRule(0.7).by_age_gap


def test_a_gap_is_read_as_results_write_it():
    # Pair mode rounds the gap of 35.12 and 30.12 to 5.0; a folder subtracts the two ages: 5.000000000000004
    # here, 4.999999999999998 for other ages. Both are 5 years: the "5-10" band in either mode.
    rule = MatchRule(0.5, _calibration(0.5, {"0-5": 0.6, "5-10": 0.4, "10-20": 0.4, "20+": 0.3}), "c.json")
    gaps = np.array([35.12 - 30.12, 5.0, 5 - 1e-12])
    assert rule.judge(np.zeros(3), gaps)[1].tolist() == [np.float32(0.4)] * 3
    assert rule.threshold_for(5 - 1e-12)[0] == 0.4


def test_the_rule_as_batch_json_records_it(calibrated):
    assert MatchRule(0.7).describe() == 0.7
    assert calibrated.describe()["rule"]["bands"]["10-20"]["threshold"] == 0.4
    assert calibrated.describe()["calibration"].endswith("calibration.json")


@pytest.mark.parametrize(("threshold", "error"), [("0.7", TypeError), (True, TypeError), (1.5, ValueError)])
def test_a_threshold_must_be_a_cosine_similarity(threshold, error):
    with pytest.raises(error, match=r"cosine similarity in \[-1, 1\]"):
        MatchRule(threshold)


def test_an_unusable_calibration_file_is_a_calibration_error(tmp_path):
    with pytest.raises(CalibrationError, match="no calibration file"):
        MatchRule.from_calibration(tmp_path / "missing.json")
    (tmp_path / "partial.json").write_text(json.dumps(_calibration(0.5, {"0-5": 0.6})))
    with pytest.raises(CalibrationError, match="not a calibration file"):
        MatchRule.from_calibration(tmp_path / "partial.json")


def test_a_similarity_does_not_depend_on_the_product_it_is_computed_in():
    """A pair alone (pair mode) and the same pair in a large tile (folder mode) get the same float32 number."""
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((300, 512)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings[1] = (0.8 * embeddings[0] + 0.6 * embeddings[1]) / np.linalg.norm(
        0.8 * embeddings[0] + 0.6 * embeddings[1]
    )
    tile = cosine_similarities(torch.from_numpy(embeddings), torch.from_numpy(embeddings))
    assert tile.dtype == torch.float32
    pairs = rng.integers(0, 300, (200, 2))
    alone = np.float32([cosine_similarity(embeddings[i], embeddings[j]) for i, j in pairs])
    np.testing.assert_array_equal(tile.numpy()[pairs[:, 0], pairs[:, 1]], alone)
    np.testing.assert_array_equal(cosine_similarities(embeddings[:5], embeddings[:7]), tile.numpy()[:5, :7])


def test_above_takes_numbers_arrays_and_tensors_alike():
    values = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    assert above(values, 0.5).tolist() == [False, False, True]
    assert above(torch.from_numpy(values), 0.5).tolist() == [False, False, True]
    assert above(values, np.array([0.0, 0.4, 0.95])).tolist() == [True, True, False]
    assert above(0.9, 0.5) is True


# --- pair mode and folder mode agree on the threshold -------------------------------------------------------


@pytest.fixture(scope="module")
def two_photos(photo_dir, tmp_path_factory, _vggface2_file):
    """A folder of two real photos of one face and their similarity as FaceAnalyzer computes it."""
    folder = tmp_path_factory.mktemp("two_photos")
    for name in ("astronaut.jpg", "astronaut_edit.jpg"):
        shutil.copy(photo_dir / name, folder / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(_vggface2_file[0]))
        analyzer = FaceAnalyzer(with_age=False, device="cpu")
        first, second = analyzer.analyze_many(sorted(folder.iterdir()))
    return folder, cosine_similarity(first.face.embedding, second.face.embedding)


def _pair_verdict(folder, out, rule_options) -> bool:
    code = infer.main(
        [str(folder / "astronaut.jpg"), str(folder / "astronaut_edit.jpg"), str(out), "--json", *rule_options]
    )
    assert code == 0
    return json.loads((out / "astronaut_vs_astronaut_edit_data.json").read_text())["verification"]["is_match"]


def _folder_verdicts(folder, out, rule_options) -> tuple[bool, bool]:
    """(whether the pair is in matches.csv, and with --top-k 1 the is_match of both photos' rows)."""
    assert infer.main(["--folder", str(folder), str(out), *rule_options]) == 0
    with open(out / "matches.csv", newline="") as handle:
        matched = len(list(csv.DictReader(handle))) == 1
    assert infer.main(["--folder", str(folder), str(out), "--top-k", "1", *rule_options]) == 0
    with open(out / "matches.csv", newline="") as handle:
        top = {row["is_match"] for row in csv.DictReader(handle)}
    assert len(top) == 1  # a -> b and b -> a
    return matched, top.pop() == "True"


@pytest.mark.parametrize("kind", ["fixed", "calibrated"])
def test_pair_mode_and_folder_mode_agree_on_a_similarity_exactly_on_the_threshold(
    kind, two_photos, tmp_path, torch_home_with_vggface2, age_checkpoint
):
    folder, similarity = two_photos
    model = (
        ["--device", "cpu", "--ckpt", str(age_checkpoint)] if kind == "calibrated" else ["--device", "cpu", "--no-age"]
    )
    below = float(np.nextafter(np.float32(similarity), np.float32(-1)))  # the float32 number just below
    for threshold, expected in ((similarity, False), (below, True)):
        if kind == "fixed":
            rule_options = ["--threshold", repr(threshold)]
        else:  # every band and the overall threshold on the similarity: the pair's band decides in both modes
            calibration = tmp_path / f"calibration_{threshold!r}.json"
            calibration.write_text(
                json.dumps(_calibration(threshold, {name: threshold for name, _, _ in AGE_GAP_BANDS}))
            )
            rule_options = ["--calibration", str(calibration)]
        pair = _pair_verdict(folder, tmp_path / f"pair_{threshold!r}", [*model, *rule_options])
        in_matches, top_k = _folder_verdicts(folder, tmp_path / "folder", [*model, *rule_options])
        assert pair == in_matches == top_k == expected, (threshold, pair, in_matches, top_k)
