"""A pair's result from two analysed photos: a fixed or calibrated match rule, failures kept as exceptions."""

import numpy as np
import pytest
from synthetic import write_band_calibration

from config import Config
from face_match_age.detection.faces import DetectedFaces, NoFaceError, require_faces
from face_match_age.detection.imaging import ImageLoadError
from face_match_age.inference.analyzer import FaceAnalyzer, FaceRecord, PhotoAnalysis, pair_result
from face_match_age.match_rule import MatchRule


def _analysed(source: str, age: float, embedding) -> PhotoAnalysis:
    face = FaceRecord([0, 0, 10, 10], 0.99, age, 1.0, [age - 2, age + 2], np.asarray(embedding, dtype=np.float32))
    return PhotoAnalysis(source, (100, 100), [face], chosen=0, faces_found=1)


@pytest.fixture
def calibration_file(tmp_path):
    return write_band_calibration(tmp_path)


def test_a_fixed_threshold_is_used_as_given_without_a_source():
    result = pair_result(_analysed("a", 30, [1, 0]), _analysed("b", 31, [1, 0]), MatchRule(0.7)).to_json()
    assert result["verification"] == {
        "is_match": True,
        "similarity": 1.0,
        "threshold_used": 0.7,
        "threshold_source": None,
    }


def test_a_calibration_chooses_the_threshold_of_the_age_gap_band(calibration_file):
    result = pair_result(
        _analysed("a", 30, [1, 0]), _analysed("b", 42, [0, 1]), MatchRule.from_calibration(calibration_file)
    ).to_json()
    assert result["verification"]["threshold_used"] == pytest.approx(0.4)  # gap 12: the "10-20" band
    assert result["verification"]["threshold_source"]["band"] == "10-20"
    assert result["verification"]["is_match"] is False


def test_a_pair_record_starts_with_the_photos_as_given():
    files = ("x/a.jpg", "y/b.jpg")
    row = pair_result(_analysed("a", 30, [1, 0]), _analysed("b", 31, [1, 0]), MatchRule(0.7), files=files).to_json()
    assert list(row)[:4] == ["file_1", "file_2", "face_1", "face_2"]
    assert (row["file_1"], row["file_2"]) == files


def test_a_failed_photo_gives_its_message_and_no_verdict():
    failed = PhotoAnalysis("b.jpg", failure=NoFaceError("no face found in b.jpg"))
    result = pair_result(_analysed("a", 30, [1, 0]), failed, MatchRule(0.7))
    assert result.verification is None
    assert result.error == "no face found in b.jpg"


def test_no_faces_raise_no_face_error_saying_when_the_photo_is_too_small():
    empty = DetectedFaces(np.empty((0, 4)), np.empty(0), np.empty((0, 3, 160, 160)))
    with pytest.raises(NoFaceError, match=r"no face found in tiny.png \(at 10x10 pixels it is too small"):
        require_faces(empty, (10, 10), Config(), "tiny.png")


def test_each_failed_photo_keeps_the_type_of_its_failure(torch_home_with_vggface2, photo_dir, tmp_path):
    analyzer = FaceAnalyzer(with_age=False)
    missing, coffee = tmp_path / "missing.jpg", photo_dir / "coffee.jpg"
    failures = [analysis.failure for analysis in analyzer.analyze_many([missing, coffee], compute=False)]
    assert isinstance(failures[0], ImageLoadError)
    assert isinstance(failures[1], NoFaceError)
