"""face-match-age: age estimation and cross-age face verification. The library behind the scripts at the
repository root and the installed `face-match-age` command; never run itself.

    from face_match_age import FaceAnalyzer   # the Python API (inference/analyzer.py)
    from face_match_age import Config         # every setting, its default and why (settings.py)

detection/    finding faces and turning photos and face crops into tensors
network/      the age network, its distribution maths and the pretrained backbone weights
inference/    the Python API (FaceAnalyzer), infer.py's batch modes and the annotated picture
evaluation/   metrics on arrays and the per-age-gap verification thresholds
preparation/  data_prep.py's stages: archives, dataset labels, face crops, splits
training/     how train.py saves its progress
files/        files in and out: downloads, CSV tables, atomic outputs, checkpoint files
service/      `face-match-age serve`: the HTTP service, its micro-batching model worker and its page
match_rule.py when two faces are one person: the similarity, the threshold (fixed or per age gap), the verdict
settings.py   the one configuration: every default, the shared command line, config.json
cli.py        infer.py's command line, installed as the `face-match-age` command
device.py     the one device and precision chooser

The public names load on first use, so `import face_match_age.settings` (or the command's --help) does not wait
for torch.
"""

import importlib

_PUBLIC = {"FaceAnalyzer": "face_match_age.inference.analyzer", "Config": "face_match_age.settings"}
__all__ = sorted(_PUBLIC)  # noqa: PLE0605  a list, built from _PUBLIC so that the two never differ


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'face_match_age' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
