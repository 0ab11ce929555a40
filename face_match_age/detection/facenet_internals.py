"""facenet-pytorch's private detection helpers, in one place: every other module imports them from here.

They live in facenet_pytorch.models.utils.detect_face, which is not a public API: batched_mtcnn.py rebuilds
MTCNN's pyramid from them (one PNet call for photos of several sizes) and faces.py cuts face crops with
extract_face exactly as MTCNN does. pyproject.toml pins the release they were written against
(facenet-pytorch==PINNED_VERSION); tests/test_facenet_internals.py checks that each helper is there with the
parameters used here, so a release that renames or reshapes one fails there, by name, not deep in a run.
"""

from __future__ import annotations

import importlib
import importlib.metadata

PINNED_VERSION = "2.5.3"  # pyproject.toml's facenet-pytorch==2.5.3
SOURCE = "facenet_pytorch.models.utils.detect_face"
# Each helper used, with the parameters it had in PINNED_VERSION (in order).
EXPECTED_PARAMETERS = {
    "batched_nms_numpy": ("boxes", "scores", "idxs", "threshold", "method"),
    "bbreg": ("boundingbox", "reg"),
    "extract_face": ("img", "box", "image_size", "margin", "save_path"),
    "fixed_batch_process": ("im_data", "model"),
    "generateBoundingBox": ("reg", "probs", "scale", "thresh"),
    "imresample": ("img", "sz"),
    "rerec": ("bboxA",),
}


def installed_version() -> str:
    return importlib.metadata.version("facenet-pytorch")


def _helper(name: str):
    try:
        return getattr(importlib.import_module(SOURCE), name)
    except (ImportError, AttributeError):
        raise ImportError(
            f"facenet-pytorch {installed_version()} has no {SOURCE}.{name}, a private helper this package uses; "
            f"install the pinned facenet-pytorch=={PINNED_VERSION} (uv sync)"
        ) from None


batched_nms_numpy = _helper("batched_nms_numpy")
bbreg = _helper("bbreg")
extract_face = _helper("extract_face")
fixed_batch_process = _helper("fixed_batch_process")
generateBoundingBox = _helper("generateBoundingBox")  # noqa: N816 (facenet-pytorch's name)
imresample = _helper("imresample")
rerec = _helper("rerec")
