"""FaceAnalyzer: the Python API for detection, age and verification; infer.py is a thin layer over it.

    from face_match_age.inference.analyzer import FaceAnalyzer
    analyzer = FaceAnalyzer()                          # loads MTCNN, the age model and VGGFace2 once
    result = analyzer.compare("a.jpg", "b.jpg")        # a pair record: faces, ages, verification
    analyzer.detect(photo), analyzer.predict_age(photo), analyzer.embed(photo)

Photos may be paths, bytes, PIL images or uint8 numpy arrays. Every result is plain Python data
(lists, floats, dicts) that serialises to JSON as is: the records of the one result schema
(inference/records.py: FaceResult, PairResult), as every mode of infer.py writes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from face_match_age.detection.faces import (
    NoFaceError,
    build_face_detector,
    detect_faces_batch,
    require_faces,
    select_face,
)
from face_match_age.detection.imaging import ImageInput, ImageLoadError, face_to_tensor, load_image
from face_match_age.device import autocast_dtype, resolve_device, resolve_inference_precision
from face_match_age.inference.prefetch import prefetched
from face_match_age.inference.records import FaceResult, PairResult, Verification
from face_match_age.match_rule import MatchRule, cosine_similarities, cosine_similarity
from face_match_age.network.age_network import (
    age_interval,
    age_std,
    expected_age,
    load_age_model,
)
from face_match_age.network.weights import ensure_weights, load_backbone, weights_identity
from face_match_age.settings import INFERENCE_PRECISION_CHOICES, Config, precision_value

VERIFICATION_WEIGHTS = "vggface2"  # the frozen identity model; age training never changes it
VERIFY_WEIGHTS_HINT = "or, with infer.py, name a weights file with --verify-weights PATH"


def verification_weights_identity(verify_weights: Path | None) -> dict:
    """weights_identity of the verification weights FaceAnalyzer(verify_weights=...) loads: the file named, or
    the default one (downloaded first when missing, as the analyzer would)."""
    path = verify_weights or ensure_weights(VERIFICATION_WEIGHTS, VERIFY_WEIGHTS_HINT)
    return weights_identity(path)


@dataclass
class FaceRecord:
    """One detected face as the analysis holds it: where it is, its age and identity embedding when computed.
    What results report of it is its `result` (records.FaceResult), in the names every mode writes."""

    box: list[int]  # x1, y1, x2, y2 in the original photo's pixels
    detection_probability: float
    age: float | None = None
    age_std: float | None = None
    age_interval: list[float] | None = None  # central 90% of the predicted age distribution
    embedding: np.ndarray | None = field(default=None, repr=False)

    def result(self, faces_found: int) -> FaceResult:
        """The face as results report it; `faces_found`: how many faces its photo held."""
        x1, y1, x2, y2 = self.box
        interval = None if self.age_interval is None else (self.age_interval[0], self.age_interval[1])
        return FaceResult((x1, y1, x2, y2), self.detection_probability, faces_found, self.age, self.age_std, interval)

    def computed_embedding(self) -> np.ndarray:
        """The embedding, which the networks set (an analysis with compute=True)."""
        if self.embedding is None:
            raise ValueError("this face's embedding was not computed: analyze it with compute=True")
        return self.embedding


@dataclass
class PhotoAnalysis:
    """What one photo gave: its faces, the one chosen by the face-selection rule, or why it failed."""

    source: str
    size: tuple[int, int] | None = None
    faces: list[FaceRecord] = field(default_factory=list)
    chosen: int | None = None
    failure: ValueError | None = None  # ImageLoadError or NoFaceError: kept, so one photo never stops the others
    worker_rank: int = 0
    faces_found: int = 0  # detected in the photo, even when only the chosen one is kept

    @property
    def face(self) -> FaceRecord | None:
        return None if self.chosen is None else self.faces[self.chosen]

    def found_face(self) -> FaceRecord:
        """The chosen face; the failure (ImageLoadError, NoFaceError) raised when there is none."""
        if self.failure is not None:
            raise self.failure
        assert self.face is not None  # FaceAnalyzer._keep_faces chooses a face wherever it sets no failure
        return self.face

    @property
    def error(self) -> str | None:
        """The failure's message, as results report it."""
        return None if self.failure is None else str(self.failure)

    def face_results(self) -> tuple[FaceResult, ...]:
        """Every face kept, as results report it (records.FaceResult, with the photo's faces_found)."""
        return tuple(face.result(self.faces_found) for face in self.faces)

    def chosen_result(self) -> FaceResult | None:
        """The chosen face as results report it; None when there is none."""
        return None if self.face is None else self.face.result(self.faces_found)


class FaceAnalyzer:
    """Loads the detector, the age model and the verification model once, in eval mode.

    age_checkpoint: the trained age model (default: config.best_checkpoint); with_age=False skips it.
    verify_weights: an InceptionResnetV1 weight file; default: VGGFace2 from $TORCH_HOME/checkpoints.
    device: "auto" (cuda, then mps, then cpu), or a torch device string such as "cuda:1".
    tta: average each face with its mirror image, for age and for the embedding.
    precision: "auto", "32", "bf16" or "16" for the two networks (MTCNN stays float32); channels_last: their
    memory format; compile_networks: torch.compile them. None takes the config's inference_precision,
    channels_last and compile_networks. A precision the device cannot run well is a PrecisionError
    (face_match_age.device.decide_inference_precision says which); `precision` holds the one chosen.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        age_checkpoint: Path | None = None,
        with_age: bool = True,
        verify_weights: Path | None = None,
        device: str = "auto",
        tta: bool = False,
        precision: str | None = None,
        channels_last: bool | None = None,
        compile_networks: bool | None = None,
    ) -> None:
        _check_options(config, device, precision, age_checkpoint, verify_weights)
        self.config = config or Config()
        self.device = resolve_device(str(device))
        self.precision = resolve_inference_precision(precision or self.config.inference_precision, self.device)
        self.channels_last = self.config.channels_last if channels_last is None else channels_last
        self.compiled = self.config.compile_networks if compile_networks is None else compile_networks
        self.tta = tta
        self.detector = build_face_detector(self.config, self.device)
        self.age_checkpoint = Path(age_checkpoint or self.config.best_checkpoint) if with_age else None
        self.age_model = None if self.age_checkpoint is None else load_age_model(self.age_checkpoint, self.device)
        # Faces reach each network at its own size: the age model's as its checkpoint records it (a model trained
        # with --img-size 128 sees 128x128 faces, as in training), the verification model's at img_size.
        trained = getattr(self.age_model, "trained_img_size", None)
        self.age_input_size = (trained or self.config.img_size) if self.age_model is not None else None
        self.verify_weights = str(verify_weights) if verify_weights else VERIFICATION_WEIGHTS
        self.verifier = load_backbone(
            VERIFICATION_WEIGHTS,
            weights_file=verify_weights,
            hint=VERIFY_WEIGHTS_HINT,
        )
        self.verifier = self.verifier.to(self.device).eval()
        self._verify, self._age = (self._prepared(network) for network in (self.verifier, self.age_model))

    def _prepared(self, network: torch.nn.Module | None):
        """The network's forward pass as the options ask: its weights turned channels-last in place (the
        module stays the same object), wrapped by torch.compile."""
        if network is None:
            return None
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        return torch.compile(network) if self.compiled else network

    @property
    def network_settings(self) -> dict:
        """How the networks run, for results: a rerun with other settings is another batch."""
        return {"precision": self.precision, "channels_last": self.channels_last, "compile": self.compiled}

    # --- single photos -------------------------------------------------------------------------
    def detect(self, photo: ImageInput) -> list[dict]:
        """Every face MTCNN found, as records.FaceResult's dicts: box (original pixels), detection_probability,
        faces_found; the age fields null."""
        analysis = self.analyze(photo, all_faces=True, compute=False)
        analysis.found_face()  # raises the photo's failure, if any
        return [face.to_json() for face in analysis.face_results()]

    def predict_age(self, photo: ImageInput, all_faces: bool = False) -> list[dict]:
        """Age of the chosen face (or of every face), as records.FaceResult's dicts: age, age_std, age_interval,
        box, detection_probability, faces_found."""
        if self.age_model is None:
            raise RuntimeError("this FaceAnalyzer was built with with_age=False")
        analysis = self.analyze(photo, all_faces=all_faces)
        face = analysis.found_face()
        faces = analysis.faces if all_faces else [face]
        return [face.result(analysis.faces_found).to_json() for face in faces]

    def embed(self, photo: ImageInput) -> np.ndarray:
        """The unit-length 512-d VGGFace2 embedding of the chosen face."""
        return self.analyze(photo).found_face().computed_embedding()

    def compare(
        self,
        photo_1: ImageInput,
        photo_2: ImageInput,
        threshold: float | None = None,
        all_faces: bool = False,
        rule: MatchRule | None = None,
    ) -> dict:
        """Ages of both chosen faces and whether they are the same person: records.PairResult's dict (see
        pair_result); with all_faces, every face of one photo against every face of the other. `threshold`: a
        cosine similarity in [-1, 1] (default: the config's verification_threshold); `rule`: a MatchRule
        instead (such as MatchRule.from_calibration(path), a threshold per predicted age gap)."""
        if rule is None:
            rule = MatchRule(self.config.verification_threshold if threshold is None else threshold)
        elif threshold is not None:
            raise ValueError("give compare a threshold or a rule, not both")
        first, second = self.analyze_many([photo_1, photo_2], all_faces=all_faces)
        return pair_result(first, second, rule).to_json()

    def analyze(self, photo: ImageInput, all_faces: bool = False, compute: bool = True) -> PhotoAnalysis:
        return next(self.analyze_many([photo], all_faces=all_faces, compute=compute))

    # --- many photos ---------------------------------------------------------------------------
    def analyze_many(
        self,
        photos: Iterable[ImageInput],
        all_faces: bool = False,
        compute: bool = True,
        photos_per_chunk: int = 16,
        names: Iterable[str] | None = None,
        overlap: bool = False,
    ) -> Generator[PhotoAnalysis, None, None]:
        """Analyse photos in input order, each once; a chunk of photos shares MTCNN calls and forward
        passes. A photo that fails yields an analysis with `error` set instead of stopping the others.
        `names` label the photos in results and errors (default: the path, or the object's type).
        overlap: read and detect the next chunk in a background thread while the networks process this one
        (the same analyses in the same order; `photos` is then iterated in that thread). Closing the
        generator early (contextlib.closing, Ctrl-C) stops that thread. bench/overlap.py measures the gain."""

        if isinstance(photos, (str, Path, bytes, Image.Image, np.ndarray)):  # iterable, but one photo
            raise TypeError("analyze_many takes a list (or other iterable) of photos; for one photo use analyze")

        def detected_chunks() -> Generator[tuple[list[PhotoAnalysis], list[torch.Tensor]], None, None]:
            for chunk in _chunks(photos, names, photos_per_chunk):
                yield self._detect_chunk(chunk, all_faces)

        chunks = prefetched(detected_chunks, depth=1) if overlap else detected_chunks()
        with contextlib.closing(chunks):
            for analyses, crops in chunks:
                if compute and crops:
                    self._attach_network_outputs([a for a in analyses if a.faces], crops)
                yield from analyses

    @torch.inference_mode()  # thread-local: set here, since with overlap this runs in the prefetch thread
    def _detect_chunk(self, chunk, all_faces: bool) -> tuple[list[PhotoAnalysis], list[torch.Tensor]]:
        """Read and detect a chunk of (photo, name): its analyses (faces found, failures set) and the crops
        worth the networks' time, in the order of the analyses that have faces."""
        analyses: list[PhotoAnalysis] = []
        images: list[Image.Image | None] = []
        for photo, name in chunk:
            analysis = PhotoAnalysis(source=name)
            try:
                image = load_image(photo)
                images.append(image)
                analysis.size = image.size
            except ImageLoadError as error:  # unreadable, truncated, too large...
                analysis.failure = error
                images.append(None)
            analyses.append(analysis)
        readable = [(i, image) for i, image in enumerate(images) if image is not None]
        detected = detect_faces_batch(self.detector, [image for _, image in readable], self.config)
        crops = [self._keep_faces(analyses[i], found, all_faces) for (i, _), found in zip(readable, detected)]
        return analyses, [c for c in crops if c is not None]

    def _keep_faces(self, analysis: PhotoAnalysis, found, all_faces: bool) -> torch.Tensor | None:
        """Record the detected faces on `analysis`; returns the crops worth the networks' time."""
        size = analysis.size
        assert size is not None  # set when its photo was read, and only photos read reach detection
        try:
            require_faces(found, size, self.config, analysis.source)
        except NoFaceError as error:
            analysis.failure = error
            return None
        analysis.faces_found = len(found)
        analysis.faces = [
            FaceRecord([int(round(v)) for v in box], float(p)) for box, p in zip(found.boxes, found.probabilities)
        ]
        analysis.chosen = select_face(found.boxes, found.probabilities, self.config.face_selection, size)
        if all_faces:
            return found.crops
        analysis.faces, chosen = [analysis.faces[analysis.chosen]], analysis.chosen
        analysis.chosen = 0  # only the chosen face is kept, and worth the networks' time
        return found.crops[chosen : chosen + 1]

    @torch.inference_mode()
    def _attach_network_outputs(self, analyses: list[PhotoAnalysis], crops: list[torch.Tensor]) -> None:
        probabilities, embeddings = self.network_outputs(torch.cat(crops))
        ages = None if probabilities is None else _age_summaries(probabilities)
        faces = [face for analysis in analyses for face in analysis.faces]
        for index, face in enumerate(faces):
            face.embedding = embeddings[index]
            if ages is not None:
                face.age, face.age_std, face.age_interval = ages[index]

    @torch.inference_mode()
    def network_outputs(self, crops: torch.Tensor) -> tuple[torch.Tensor | None, np.ndarray]:
        """For face crops as detection cuts them: (age probabilities, N x 101 float32 on the CPU, or None
        without an age model; unit embeddings, N x 512 numpy), in batches of config.inference_batch_size."""
        probability_batches: list[torch.Tensor] = []
        embedding_batches: list[np.ndarray] = []
        size = self.config.inference_batch_size
        # The age model's own face size, where it differs from the verification model's
        age_size = None if self.age_input_size == self.config.img_size else self.age_input_size
        for start in range(0, len(crops), size):
            batch = crops[start : start + size]
            faces = torch.stack([face_to_tensor(crop, self.config.img_size) for crop in batch])
            # From the crops, as training resized them, not from the verification model's tensors.
            age_faces = None if age_size is None else torch.stack([face_to_tensor(crop, age_size) for crop in batch])
            batch_probabilities, batch_embeddings = self._forward(faces, age_faces)
            if batch_probabilities is not None:  # None without an age model
                probability_batches.append(batch_probabilities)
            embedding_batches.append(batch_embeddings)
        probabilities = torch.cat(probability_batches) if self.age_model is not None else None
        return probabilities, np.concatenate(embedding_batches)

    def _forward(
        self, faces: torch.Tensor, age_faces: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, np.ndarray]:
        """One batch through both networks under the analyzer's precision; float32 outputs. `age_faces`: the
        same faces at the age model's own size, when it differs from the verification model's."""
        count = len(faces)
        faces = self._on_device(faces, count)
        views = [faces, faces.flip(-1)] if self.tta else [faces]
        age_views = views
        if age_faces is not None:
            age_faces = self._on_device(age_faces, count)
            age_views = [age_faces, age_faces.flip(-1)] if self.tta else [age_faces]
        dtype = autocast_dtype(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            embeddings = [self._verify(view) for view in views]
            logits = [self._age(view) for view in age_views] if self._age is not None else []
        embedding = torch.nn.functional.normalize(torch.stack(embeddings)[:, :count].float().mean(0), dim=1)
        # Averaging probabilities (not ages) keeps the uncertainty meaningful under TTA.
        probabilities = torch.stack(logits)[:, :count].float().softmax(2).mean(0).cpu() if logits else None
        return probabilities, embedding.cpu().numpy()

    def _on_device(self, faces: torch.Tensor, count: int) -> torch.Tensor:
        """A batch of `count` faces on the device in the memory format asked; padded for a compiled network."""
        if self.compiled:  # few input shapes, so that each batch size does not wait for its own compilation
            padding = compiled_batch_size(count, self.config.inference_batch_size) - count
            faces = torch.cat([faces, faces.new_zeros(padding, *faces.shape[1:])])
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return faces.to(self.device, memory_format=memory_format)


def _check_options(config, device, precision, age_checkpoint, verify_weights) -> None:
    """A TypeError or ValueError naming the option and what it accepts, before any model loads."""
    if config is not None and not isinstance(config, Config):
        raise TypeError(f"config must be a config.Config (or None for the defaults), not {type(config).__name__}")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str such as 'auto', 'cpu' or 'cuda:1', not {type(device).__name__}")
    if precision is not None and precision_value(precision) not in INFERENCE_PRECISION_CHOICES:
        allowed = ", ".join(INFERENCE_PRECISION_CHOICES)
        raise ValueError(f"precision must be one of {allowed} or None, not {precision!r}")
    for name, value in (("age_checkpoint", age_checkpoint), ("verify_weights", verify_weights)):
        if value is not None and not isinstance(value, (str, Path)):
            raise TypeError(f"{name} must be a file path (str or pathlib.Path) or None, not {type(value).__name__}")


def compiled_batch_size(count: int, largest: int) -> int:
    """The batch a compiled network is given for `count` faces: the next power of two, at most `largest`
    (inference_batch_size, which no batch exceeds). A run then compiles for a few shapes (chunks of 16 photos
    of one face each: 16, and one more for a smaller last chunk) and pads at most to twice its faces;
    padding every batch to `largest` made the networks do 4x the work for such chunks (measured: 0.39x the
    floor end to end with compile, against 1.23x without)."""
    return min(largest, 1 << max(0, count - 1).bit_length())


def _age_summaries(probabilities: torch.Tensor) -> list[tuple[float, float, list[float]]]:
    """(age, std, central 90% interval) of each face, as computed: only what writes them for people rounds."""
    logits = probabilities.clamp_min(1e-12).log()
    return list(zip(expected_age(logits).tolist(), age_std(logits).tolist(), age_interval(logits).tolist()))


def pair_result(
    first: PhotoAnalysis, second: PhotoAnalysis, rule: MatchRule, files: tuple[str, str] | None = None
) -> PairResult:
    """Two analysed photos compared (records.PairResult). A missing face gives a null face, null verification
    and an `error`: a pair is never called a match unless both faces were found. `rule`: a fixed threshold, or
    a calibration whose threshold depends on the predicted age gap (its choice and the reason for it are the
    verification's `threshold_source`). `files`: the photos as the user named them (default: the analyses'
    sources)."""
    file_1, file_2 = files or (first.source, second.source)
    errors = [analysis.error for analysis in (first, second) if analysis.error]
    if errors:
        faces = (first.chosen_result(), second.chosen_result())
        return PairResult(file_1, file_2, *faces, verification=None, age_gap=None, error="; ".join(errors))
    extra: dict[str, Any] = {}
    if len(first.faces) > 1 or len(second.faces) > 1:
        embeddings = [np.stack([face.computed_embedding() for face in analysis.faces]) for analysis in (first, second)]
        matrix = cosine_similarities(*embeddings).tolist()
        i, j = (int(k) for k in np.unravel_index(int(np.argmax(matrix)), (len(first.faces), len(second.faces))))
        extra = {
            "faces_1": first.face_results(),
            "faces_2": second.face_results(),
            "similarity_matrix": tuple(tuple(row) for row in matrix),
            "best_pair": {"face_1": i, "face_2": j, "similarity": matrix[i][j]},
        }
        first, second = _with_chosen(first, i), _with_chosen(second, j)
    face_1, face_2 = first.found_face(), second.found_face()  # neither failed: both have a chosen face
    similarity = cosine_similarity(face_1.computed_embedding(), face_2.computed_embedding())
    age_gap = None
    if face_1.age is not None and face_2.age is not None:
        age_gap = abs(face_1.age - face_2.age)
    threshold, why = rule.threshold_for(age_gap)
    verification = Verification(rule.is_match(similarity, age_gap), similarity, threshold, why)
    faces = (first.chosen_result(), second.chosen_result())
    return PairResult(file_1, file_2, *faces, verification=verification, age_gap=age_gap, error=None, **extra)


def _with_chosen(analysis: PhotoAnalysis, index: int) -> PhotoAnalysis:
    return dataclasses.replace(analysis, chosen=index)


def _chunks(
    photos: Iterable[ImageInput], names: Iterable[str] | None, size: int
) -> Iterator[list[tuple[ImageInput, str]]]:
    """(photo, name) in lists of `size`, the last one shorter."""
    names = iter(names) if names is not None else None
    chunk: list[tuple[ImageInput, str]] = []
    for photo in photos:
        chunk.append((photo, next(names) if names else _describe(photo)))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _describe(photo: ImageInput) -> str:
    if isinstance(photo, (str, Path)):
        return str(photo)
    return type(photo).__name__
