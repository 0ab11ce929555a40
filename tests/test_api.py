"""The Python API: FaceAnalyzer returns plain data, and the seed's own API snippet keeps working."""

import json

import numpy as np
import pytest
import torch

from face_match_age.inference.analyzer import FaceAnalyzer, NoFaceError


def test_face_analyzer_returns_plain_data(torch_home_with_vggface2, age_checkpoint, photo_dir, astronaut):
    analyzer = FaceAnalyzer(age_checkpoint=age_checkpoint)
    assert not analyzer.age_model.training
    assert not analyzer.verifier.training
    faces = analyzer.detect(np.asarray(astronaut))  # numpy arrays work like paths and PIL images
    assert len(faces) == 1
    assert faces[0]["detection_probability"] > 0.9
    ages = analyzer.predict_age(photo_dir / "astronaut.jpg")
    assert ages[0]["box"] == faces[0]["box"]
    assert 0 <= ages[0]["age"] <= 100
    embedding = analyzer.embed(astronaut)
    assert embedding.shape == (512,)
    assert np.isclose(np.linalg.norm(embedding), 1.0, atol=1e-4)
    result = analyzer.compare(photo_dir / "astronaut.jpg", astronaut, threshold=0.5)
    json.dumps(result)  # plain data all the way down
    assert result["verification"]["threshold_used"] == 0.5
    assert result["verification"]["similarity"] == pytest.approx(1.0, abs=0.01)  # the same photo, once as JPEG


def test_no_face_is_an_exception_in_the_api(torch_home_with_vggface2, coffee):
    analyzer = FaceAnalyzer(with_age=False)
    with pytest.raises(NoFaceError, match="no face found"):
        analyzer.embed(coffee)
    with pytest.raises(RuntimeError, match="with_age=False"):
        analyzer.predict_age(coffee)


def test_tta_averages_a_face_with_its_mirror(torch_home_with_vggface2, age_checkpoint, astronaut):
    from face_match_age.detection.faces import detect_faces
    from face_match_age.detection.imaging import face_to_tensor
    from face_match_age.network.age_network import expected_age

    analyzers = [FaceAnalyzer(age_checkpoint=age_checkpoint, tta=tta) for tta in (False, True)]
    for analyzer in analyzers:  # sharpen the random head so that a mirror image changes the answer
        torch.manual_seed(1)
        analyzer.age_model.head[-1].weight.data.normal_(0, 0.5)
    plain, averaged = (analyzer.analyze(astronaut).face for analyzer in analyzers)
    face = face_to_tensor(detect_faces(analyzers[0].detector, astronaut, analyzers[0].config).crops[0]).unsqueeze(0)
    with torch.inference_mode():
        model = analyzers[0].age_model
        probabilities = (model(face).softmax(1) + model(face.flip(-1)).softmax(1)) / 2
    assert plain.age == pytest.approx(expected_age(model(face)).item(), abs=0.01)
    assert averaged.age == pytest.approx(expected_age(probabilities.log()).item(), abs=0.01)
    assert abs(averaged.age - plain.age) > 0.05
    assert np.isclose(np.linalg.norm(averaged.embedding), 1.0, atol=1e-4)


def test_the_seed_api_snippet_still_works(torch_home_with_vggface2, age_checkpoint, photo_dir):
    # The seed's snippet (MTCNN, InceptionResnetV1, load_from_checkpoint; docs/python-api.md), with the
    # checkpoint path and photos of this test.
    from facenet_pytorch import MTCNN, InceptionResnetV1
    from PIL import Image

    from model import AgeEstimationModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mtcnn = MTCNN(device=device)
    age_model = AgeEstimationModel.load_from_checkpoint(age_checkpoint).to(device).eval()
    verif_model = InceptionResnetV1(pretrained="vggface2").to(device).eval()
    img1 = Image.open(photo_dir / "astronaut.jpg").convert("RGB")
    img2 = Image.open(photo_dir / "astronaut_edit.jpg").convert("RGB")
    face1 = mtcnn(img1).unsqueeze(0).to(device)
    face2 = mtcnn(img2).unsqueeze(0).to(device)
    with torch.no_grad():
        age1 = age_model(face1).softmax(1) @ torch.arange(101.0).to(device)
        age2 = age_model(face2).softmax(1) @ torch.arange(101.0).to(device)
        similarity = torch.nn.functional.cosine_similarity(verif_model(face1), verif_model(face2)).item()
    assert 0 <= age1.item() <= 100
    assert 0 <= age2.item() <= 100
    assert -1 <= similarity <= 1
