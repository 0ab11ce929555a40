"""infer.py --folder DIR OUT_DIR: a photo collection matched at a cost that grows with its size, never with
its number of pairs.

Each photo is detected and embedded once into OUT_DIR/embeddings (folder_embedding.py: resumable, shardable
over processes with --devices and over machines with --files and --merge-from); then the matches are found
among the stored embeddings block by block (folder_matches.py) and the people are grouped (identity
clusters). OUT_DIR receives:

    faces.csv      one row per photo: file, box, age, uncertainty, error, and its cluster (or, with
                   --reference, its similarity to the reference)
    matches.csv    the pairs above the threshold, most similar first (or, with --top-k K, each photo's K
                   most similar photos, with their verdicts); never all pairs
    clusters.csv   one row per person found: size and predicted age range, and clusters/*.jpg, each
                   person's faces ordered by predicted age
    contact_sheet.jpg  the strongest matches side by side
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from config import Config, save_config
from face_match_age.detection.faces import NoFaceError
from face_match_age.files.output_files import prepare_out_dir
from face_match_age.files.photo_lists import folder_photos, listed_photos
from face_match_age.inference.analyzer import FaceAnalyzer
from face_match_age.inference.folder_embedding import embed_photos, embedding_settings, open_store
from face_match_age.inference.folder_matches import (
    FACES_CSV,
    MATCHES_CSV,
    Collection,
    JudgedMatches,
    collection_matches,
    load_collection,
    reference_search,
    write_faces_csv,
    write_matches_csv,
)


class FolderInputError(ValueError):
    """A folder run that cannot start or has nothing to compare: the message says why and what to do."""


@dataclass
class FolderRequest:
    """What infer.py --folder was asked for."""

    folder: Path
    out_dir: Path
    reference: Path | None = None
    top_k: int | None = None
    file_list: Path | None = None
    embed_only: bool = False
    merge_from: Sequence[Path] = ()
    record: dict = field(default_factory=dict)  # what config.json records beside the config


@dataclass
class FolderOutcome:
    photos: int
    failed: int
    matches: int
    written: list[Path]


def run_folder(
    request: FolderRequest,
    make_analyzer: Callable[..., FaceAnalyzer],
    rule,
    *,
    config: Config,
    settings: dict,
    devices: int = 1,
    device: str = "auto",
) -> FolderOutcome:
    """Embed the photos the store lacks, then search, cluster and write the tables (see the module)."""
    names = _photo_names(request)
    out_dir = prepare_out_dir(request.out_dir)
    store = open_store(out_dir, embedding_settings(config, settings), request.merge_from)
    save_config(config, out_dir, extra={"script": "infer.py", **request.record})
    embed_photos(request.folder, names, store, make_analyzer, devices=devices, device=device)
    collection = load_collection(store, names)
    failed = len(collection.records) - len(collection.rows)
    if request.embed_only:
        written = [write_faces_csv(out_dir / FACES_CSV, collection.records)]
        return FolderOutcome(len(names), failed, 0, written)
    if not collection.rows:
        write_faces_csv(out_dir / FACES_CSV, collection.records)
        raise NoFaceError(f"no face was found in any of the {len(names)} photos; see {out_dir / FACES_CSV}")
    if request.reference is not None:
        matches, written = _reference_outputs(request, collection, make_analyzer(device=device), rule)
    else:
        matches, written = _collection_outputs(request, collection, rule)
    return FolderOutcome(len(names), failed, len(matches), written)


def _photo_names(request: FolderRequest) -> list[str]:
    if request.file_list is not None:
        names = listed_photos(request.folder, request.file_list)
    else:
        names = folder_photos(request.folder, skip=request.out_dir)
    if request.reference is not None:
        reference = request.reference.resolve()
        names = [name for name in names if (request.folder / name).resolve() != reference]
        if not names:
            raise FolderInputError(f"{request.folder} holds no photos besides the reference")
    elif len(names) < 2 and not request.embed_only:
        raise FolderInputError(
            f"{request.folder} holds one photo ({names[0]}): nothing to compare it with; add photos, or compare "
            "it with another one: uv run python infer.py IMG1 IMG2 OUT_DIR"
        )
    return names


def _collection_outputs(request: FolderRequest, collection: Collection, rule) -> tuple[JudgedMatches, list[Path]]:
    out_dir = request.out_dir
    matches = collection_matches(collection, rule, request.top_k)
    files = [row["file"] for row in collection.rows]
    ages = collection.ages()
    written = [write_matches_csv(out_dir / MATCHES_CSV, matches, files, files, ages, ages)]
    written.insert(0, write_faces_csv(out_dir / FACES_CSV, collection.records))
    return matches, written


def _reference_outputs(
    request: FolderRequest, collection: Collection, analyzer: FaceAnalyzer, rule
) -> tuple[JudgedMatches, list[Path]]:
    reference = analyzer.analyze(request.reference)
    if reference.failure is not None:
        raise reference.failure
    face = reference.face
    similarities, matches = reference_search(collection, face.embedding, face.age_prediction, rule, request.top_k)
    by_file = dict(zip((row["file"] for row in collection.rows), similarities.tolist()))
    column = {"similarity_to_reference": [by_file.get(record["file"]) for record in collection.records]}
    out_dir, name = request.out_dir, str(request.reference)
    reference_age = np.array([np.nan if face.age_prediction is None else face.age_prediction])
    files = [row["file"] for row in collection.rows]
    written = [
        write_faces_csv(out_dir / FACES_CSV, collection.records, column),
        write_matches_csv(out_dir / MATCHES_CSV, matches, [name], files, reference_age, collection.ages()),
    ]
    return matches, written
