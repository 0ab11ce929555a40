"""What an inference option (bf16, channels-last, compilation) changes in the answers, against float32 eager.

    from face_match_age.inference.numerics import numeric_change
    change = numeric_change(functools.partial(FaceAnalyzer, config), {"precision": "bf16"}, photos)
    change.similarity, change.age, change.verdict_flipped

Both analyzers load the same weight files and see the same face crops (cut once, by the float32 detector),
so every difference comes from the option. Meaningful only with weights whose BatchNorm statistics are
calibrated (trained, or as tests/fake_networks.py makes them): with the initial statistics every face gives
nearly the same output and nothing can change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from face_match_age.detection.faces import detect_faces_batch
from face_match_age.detection.imaging import ImageInput, load_image
from face_match_age.inference.analyzer import FaceAnalyzer
from face_match_age.match_rule import MatchRule, cosine_similarities
from face_match_age.network.age_network import expected_age

# How FaceAnalyzer runs its networks when no option is applied: the baseline every option is compared with.
FP32_EAGER = {"precision": "32", "channels_last": False, "compile_networks": False}


@dataclass(frozen=True)
class NumericChange:
    """The largest changes an option made, over every face and every pair of faces."""

    faces: int
    similarity: float  # largest |change| of the cosine similarity of a pair of faces
    age: float | None  # largest |change| of a face's expected age, years; None without an age model
    verdict_flipped: bool  # whether any pair changed sides of the threshold
    pairs: int
    matches: int  # pairs above the threshold in float32 eager: a flip can only show where both verdicts occur


def numeric_change(
    make_analyzer: Callable[..., FaceAnalyzer],
    option: dict,
    photos: Iterable[ImageInput],
    threshold: float | None = None,
) -> NumericChange:
    """Run every face of `photos` through fp32 eager and through `option` (FaceAnalyzer keyword arguments,
    e.g. {"precision": "bf16"}), both built by make_analyzer(**keywords) (e.g. a functools.partial of
    FaceAnalyzer naming config, weights and device). `threshold`: the verdict's (default: the config's)."""
    reference = make_analyzer(**FP32_EAGER)
    candidate = make_analyzer(**(FP32_EAGER | option))
    crops = face_crops(reference, photos)
    threshold = reference.config.verification_threshold if threshold is None else threshold
    return compare_outputs(reference.network_outputs(crops), candidate.network_outputs(crops), threshold)


def face_crops(analyzer: FaceAnalyzer, photos: Iterable[ImageInput]) -> torch.Tensor:
    """Every face MTCNN finds in `photos`, as crops for FaceAnalyzer.network_outputs."""
    images = [load_image(photo) for photo in photos]
    found = [faces.crops for faces in detect_faces_batch(analyzer.detector, images, analyzer.config) if len(faces)]
    if not found:
        raise ValueError("no face found in any of the photos; numerics need faces")
    return torch.cat(found)


def compare_outputs(reference: tuple, candidate: tuple, threshold: float) -> NumericChange:
    """NumericChange between two FaceAnalyzer.network_outputs of the same crops."""
    reference_probabilities, reference_embeddings = reference
    candidate_probabilities, candidate_embeddings = candidate
    upper = np.triu_indices(len(reference_embeddings), k=1)  # every pair once, no face with itself
    reference_similarity = cosine_similarities(reference_embeddings, reference_embeddings)[upper]
    candidate_similarity = cosine_similarities(candidate_embeddings, candidate_embeddings)[upper]
    rule = MatchRule(threshold)
    age = None
    if reference_probabilities is not None:
        ages = [expected_age(p.clamp_min(1e-12).log()) for p in (reference_probabilities, candidate_probabilities)]
        age = float((ages[0] - ages[1]).abs().max())
    return NumericChange(
        faces=len(reference_embeddings),
        similarity=float(np.abs(reference_similarity - candidate_similarity).max(initial=0.0)),
        age=age,
        verdict_flipped=bool((rule.is_match(reference_similarity) != rule.is_match(candidate_similarity)).any()),
        pairs=len(reference_similarity),
        matches=int(rule.is_match(reference_similarity).sum()),
    )


def calibrate_batchnorm(network: torch.nn.Module, seed: int = 0) -> None:
    """Give a randomly initialised network realistic BatchNorm statistics, for numerics (and tests) without
    trained weights. With the initial ones (mean 0, variance 1) activations saturate in eval mode and every
    input gets the same output, so no option could change anything."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batches
    network.train()
    with torch.no_grad():
        for _ in range(2):
            network(torch.rand(8, 3, 160, 160, generator=generator) * 2 - 1)
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    network.eval()
