"""infer.py --folder DIR OUT_DIR: a photo collection matched at a cost that grows with its size, never with
its number of pairs.

Each photo is detected and embedded once into OUT_DIR/embeddings (folder_embedding.py: resumable, shardable
over processes with --devices and over machines with --files and --merge-from); then the matches are found
among the stored embeddings block by block (folder_matches.py) and the people are grouped (identity
clusters). OUT_DIR receives:

    faces.csv      one row per photo: file, its face's fields (records.FACES_CSV_COLUMNS), error, and its
                   cluster (or, with --reference, its similarity to the reference)
    matches.csv    the pairs above the threshold, most similar first (or, with --top-k K, each photo's K
                   most similar photos, with their verdicts); never all pairs
    clusters.csv   one row per person found: size and predicted age range, and clusters/*.jpg, each
                   person's faces ordered by predicted age
    contact_sheet.jpg  the strongest matches side by side
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from face_match_age.detection.faces import NoFaceError
from face_match_age.files.output_files import out_dir_lock, prepare_out_dir, write_atomically
from face_match_age.files.photo_lists import folder_photos, listed_photos
from face_match_age.inference.analyzer import FaceAnalyzer
from face_match_age.inference.folder_embedding import STORE_FOLDER, embed_photos, embedding_settings, open_store
from face_match_age.inference.folder_matches import (
    FACES_CSV,
    MATCHES_CSV,
    PAIRS_PER_SLICE,
    Collection,
    JudgedMatches,
    collection_matches,
    load_collection,
    reference_search,
    write_faces_csv,
    write_matches_csv,
)
from face_match_age.inference.identity_clusters import (
    CLUSTER_COLUMNS,
    cluster_labels,
    cluster_table,
    save_cluster_timelines,
)
from face_match_age.match_rule import MatchRule
from face_match_age.reports.batch_sheet import SHEET_NAME, save_pair_sheet
from face_match_age.reports.contact_sheet import MAX_TILES
from face_match_age.settings import Config, save_config

CLUSTERS_CSV, CLUSTER_FOLDER = "clusters.csv", "clusters"


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
    rule: MatchRule,
    *,
    config: Config,
    settings: dict,
    devices: int = 1,
    device: str = "auto",
) -> FolderOutcome:
    """Embed the photos the store lacks, then search, cluster and write the tables (see the module). Another run
    writing into OUT_DIR (holding its lock) raises OutputError."""
    names = _photo_names(request)
    out_dir = prepare_out_dir(request.out_dir)
    with out_dir_lock(out_dir):  # for the whole run: two runs would append the same photos to one store
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
            _remove_clusters(out_dir)  # a run without --reference into this OUT_DIR made them; they would mislead
            matches, written = _reference_outputs(request, collection, make_analyzer(device=device), rule)
        else:
            matches, written = _collection_outputs(request, collection, rule)
        return FolderOutcome(len(names), failed, len(matches), written)


def _photo_names(request: FolderRequest) -> list[str]:
    if request.file_list is not None:
        names = listed_photos(request.folder, request.file_list)
    else:
        names = folder_photos(request.folder, skip=_outputs(request.out_dir))
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


def _outputs(out_dir: Path) -> list[Path]:
    """What a folder run must not read back as photos: OUT_DIR's tree when it lies inside the photo folder, and
    the images it writes when it is the photo folder itself (`--folder DIR DIR`)."""
    return [out_dir, *(out_dir / name for name in (SHEET_NAME, CLUSTER_FOLDER, STORE_FOLDER))]


def _collection_outputs(
    request: FolderRequest, collection: Collection, rule: MatchRule
) -> tuple[JudgedMatches, list[Path]]:
    out_dir = request.out_dir
    matches = collection_matches(collection, rule, request.top_k)
    # People are the components of the graph of every match, not of the top-k lists (which miss some).
    same_person = matches if request.top_k is None else collection_matches(collection, rule)
    labels = cluster_labels(len(collection.rows), same_person.pairs)
    label_of = {row["file"]: int(label) for row, label in zip(collection.rows, labels)}
    files = [row["file"] for row in collection.rows]
    ages = collection.ages()
    cluster_column = {"cluster": [label_of.get(record["file"]) for record in collection.records]}
    photos = [_sheet_face(request.folder, row) for row in collection.rows]
    written = [
        write_faces_csv(out_dir / FACES_CSV, collection.records, cluster_column),
        write_matches_csv(out_dir / MATCHES_CSV, matches, files, files, ages, ages),
        _write_clusters(labels, collection, request.folder, out_dir),
        _save_matches_sheet(matches, photos, photos, out_dir / SHEET_NAME),
    ]
    return matches, written


def _write_clusters(labels: np.ndarray, collection: Collection, folder: Path, out_dir: Path) -> Path:
    """clusters.csv, one row per person, and the timeline images of the largest ones (OUT_DIR/clusters)."""
    _remove_clusters(out_dir)  # an earlier run's, made with another threshold or other photos
    timelines = save_cluster_timelines(labels, collection.rows, folder, out_dir / CLUSTER_FOLDER)
    relative = {label: path.relative_to(out_dir).as_posix() for label, path in timelines.items()}
    rows = cluster_table(labels, collection.rows, relative)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CLUSTER_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    return write_atomically(out_dir / CLUSTERS_CSV, write)


def _reference_outputs(
    request: FolderRequest, collection: Collection, analyzer: FaceAnalyzer, rule: MatchRule
) -> tuple[JudgedMatches, list[Path]]:
    assert request.reference is not None  # run_folder comes here only for a request with a reference
    face = analyzer.analyze(request.reference).found_face()
    similarities, matches = reference_search(collection, face.computed_embedding(), face.age, rule, request.top_k)
    by_file = dict(zip((row["file"] for row in collection.rows), similarities.tolist()))
    column = {"similarity_to_reference": [by_file.get(record["file"]) for record in collection.records]}
    out_dir, name = request.out_dir, str(request.reference)
    reference_age = np.array([np.nan if face.age is None else face.age])
    files = [row["file"] for row in collection.rows]
    photos = [_sheet_face(request.folder, row) for row in collection.rows]
    reference_face = {"file": name, "path": request.reference, "box": face.box, "age": face.age}
    written = [
        write_faces_csv(out_dir / FACES_CSV, collection.records, column),
        write_matches_csv(out_dir / MATCHES_CSV, matches, [name], files, reference_age, collection.ages()),
        _save_matches_sheet(matches, [reference_face], photos, out_dir / SHEET_NAME),
    ]
    return matches, written


def _remove_clusters(out_dir: Path) -> None:
    for timeline in (out_dir / CLUSTER_FOLDER).glob("cluster_*.jpg"):
        timeline.unlink()
    (out_dir / CLUSTERS_CSV).unlink(missing_ok=True)


def _sheet_face(folder: Path, row: dict) -> dict:
    return {"file": row["file"], "path": folder / row["file"], "box": row["box"], "age": row["age"]}


def _save_matches_sheet(matches: JudgedMatches, faces_1: list[dict], faces_2: list[dict], path: Path) -> Path:
    """contact_sheet.jpg: the strongest matches (and with --top-k the nearest non-matches) side by side.
    Only the pairs a sheet can show are turned into rows, however many matches there are."""
    similarity = matches.pairs.similarity
    chosen = [*_most_similar(similarity, matches.is_match), *_most_similar(similarity, ~matches.is_match)]
    rows, paths = [], {}
    for index in chosen:
        first, second = faces_1[matches.pairs.first[index]], faces_2[matches.pairs.second[index]]
        paths[int(index)] = (first["path"], second["path"])
        rows.append(_sheet_row(int(index), first, second, matches, index))
    count = int(matches.is_match.sum())
    title = f"{count} match{'' if count == 1 else 'es'} among {len(faces_2)} photos with a face"
    return save_pair_sheet(rows, paths, path, title)


def _most_similar(similarity: np.ndarray, among: np.ndarray, count: int = MAX_TILES) -> list[int]:
    """The indices of the `count` highest similarities `among` the pairs, highest first, ties by index; looked
    for PAIRS_PER_SLICE pairs at a time, by partition, not sort: there may be millions of pairs."""
    best = np.zeros(0, dtype=np.int64)
    for start in range(0, len(similarity), PAIRS_PER_SLICE):
        candidates = np.concatenate([best, np.flatnonzero(among[start : start + PAIRS_PER_SLICE]) + start])
        if len(candidates) > count:
            # Every pair tied with the count-th best stays a candidate, so ties are broken by index below.
            cutoff = np.partition(similarity[candidates], len(candidates) - count)[len(candidates) - count]
            candidates = candidates[similarity[candidates] >= cutoff]
        best = candidates[np.lexsort((candidates, -similarity[candidates]))][:count]
    return best.tolist()


def _sheet_row(pair_index: int, first: dict, second: dict, matches: JudgedMatches, index: int) -> dict:
    """One pair in the layout of infer.py's batch rows, which the pair sheet draws."""
    return {
        "pair_index": pair_index,
        "file_1": first["file"],
        "file_2": second["file"],
        "face_1": {"box": first["box"], "age": first["age"]},
        "face_2": {"box": second["box"], "age": second["age"]},
        "verification": {
            "is_match": bool(matches.is_match[index]),
            "similarity": float(matches.pairs.similarity[index]),
            "threshold_used": float(matches.thresholds[index]),
        },
        "label": None,
        "error": None,
    }
