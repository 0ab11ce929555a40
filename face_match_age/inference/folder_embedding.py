"""infer.py --folder, first stage: each photo is detected and embedded once, into an embedding store on disk.

The store (OUT_DIR/embeddings, see files/embedding_store.py) gains one chunk per PHOTOS_PER_CHUNK photos, so
a run killed at any point keeps every finished chunk, and Ctrl-C keeps the photos of the unfinished one too;
the same command run again embeds only the photos the store lacks. The store records the settings its
embeddings depend on (settings.json): a rerun, or a shard to merge, with other settings is refused, because
mixing embeddings of two models or two face crops would make their similarities meaningless.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from face_match_age.error_messages import error_line
from face_match_age.files.embedding_store import MANIFEST as STORE_MANIFEST
from face_match_age.files.embedding_store import EmbeddingStore, merge_stores
from face_match_age.files.model_stamps import model_files
from face_match_age.files.output_files import OutputError, recorded_differences, write_json
from face_match_age.files.photo_lists import photo_stamp
from face_match_age.inference.analyzer import FaceAnalyzer, PhotoAnalysis
from face_match_age.inference.records import SCHEMA_VERSION
from face_match_age.inference.sharded_analysis import analyses_sharded
from face_match_age.memory import release_freed_memory
from face_match_age.settings import Config, settings_that_change

STORE_FOLDER = "embeddings"
SETTINGS_FILE = "settings.json"
# A chunk of the store: what a kill -9 can cost (about 10 s of CPU work, far less on a GPU), and few enough
# part files for a 100,000-photo collection (400).
PHOTOS_PER_CHUNK = 256
PHOTOS_PER_BATCH = 16  # photos read and detected together (analyze_many's chunk): what Ctrl-C can cost
# The Config fields an embedding and its face depend on are those declared to change faces (settings.py:
# changes=); the threshold only changes the search, redone each time. inference_precision is resolved by
# infer.py for the device: bf16 embeddings differ from fp32 ones by ~1e-3.
STORE_RESULTS = ("faces",)


class FolderInterrupted(KeyboardInterrupt):
    """Ctrl-C while embedding, after the photos done so far were saved: `embedded` photos are in `store`."""

    def __init__(self, store: Path, embedded: int) -> None:
        super().__init__(store, embedded)
        self.store, self.embedded = store, embedded


def embedding_settings(config: Config, settings: dict) -> dict:
    """What the store's embeddings and ages depend on, as JSON-ready data: the face-crop fields of `config` and
    `settings` (the models' files, TTA...)."""
    values = (
        {"schema": SCHEMA_VERSION}
        | {name: getattr(config, name) for name in settings_that_change(*STORE_RESULTS)}
        | settings
    )
    return json.loads(json.dumps(values, default=str))  # as settings.json will read back


def open_store(out_dir: Path, settings: dict, merge_from: Sequence[Path] = ()) -> EmbeddingStore:
    """OUT_DIR's store, made from the shards `merge_from` when given (OUT_DIR must not hold one yet). Refuses
    a store or shard embedded with other settings, naming the settings that differ."""
    folder = out_dir / STORE_FOLDER
    _check_settings(
        folder,
        settings,
        f"{out_dir} holds embeddings made",
        f"another OUT_DIR, or delete {folder}",
        f"choose a new OUT_DIR, or delete {folder} to embed again",
    )
    if merge_from:
        if (folder / STORE_MANIFEST).is_file():
            raise OutputError(f"{out_dir} already holds embeddings; merge the shards into a new OUT_DIR")
        shards = [_shard_store(path) for path in merge_from]
        for shard in shards:
            _check_settings(
                shard, settings, f"shard {shard} was embedded", "or embed the shard again", "embed the shard again"
            )
        merge_stores(shards, folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SETTINGS_FILE, settings)
    return EmbeddingStore(folder)


def embed_photos(
    folder: Path,
    names: Sequence[str],
    store: EmbeddingStore,
    make_analyzer: Callable[..., FaceAnalyzer],
    *,
    devices: int = 1,
    device: str = "auto",
) -> int:
    """Detect and embed every photo of `names` (relative to `folder`) the store lacks, or holds from a file that
    changed since (its stamp, size and modification time, differs: a photo replaced under the same name, or a
    failed one fixed); returns how many were embedded now. A photo that fails is stored with its error, and
    its line goes to stderr; it is tried again once its file changes."""
    # Stamped before the photos are read: one that changes while it is read differs from its stamp next time.
    stamps = {name: photo_stamp(folder / name) for name in names}
    held = store.stamps()
    todo = [name for name in names if name not in held or held[name] != stamps[name]]
    if len(todo) < len(names):
        changed = sum(name in held for name in todo)
        again = f"; {changed} changed since, embedded again" if changed else ""
        print(f"resuming: {len(names) - len(todo)} of {len(names)} photos already embedded in {store.folder}{again}")
    if not todo:
        return 0
    paths = [folder / name for name in todo]
    name_of = {str(path): name for path, name in zip(paths, todo)}
    if devices > 1:
        analyses = analyses_sharded(devices, device, False, make_analyzer, paths)
    else:
        analyzer = make_analyzer(device=device)
        analyses = analyzer.analyze_many(paths, names=[str(p) for p in paths], photos_per_chunk=PHOTOS_PER_BATCH)
    pending: list[PhotoAnalysis] = []
    saved = 0
    # disable=None: no progress bar when stderr is not a terminal (a log file), only the error lines
    with contextlib.closing(analyses), tqdm(total=len(todo), unit="photo", desc="embedding", disable=None) as bar:
        try:
            for done_now, analysis in enumerate(analyses, start=1):
                pending.append(analysis)
                if analysis.error:
                    tqdm.write(error_line(analysis.error), file=sys.stderr)
                bar.update()
                if done_now % PHOTOS_PER_BATCH == 0:
                    release_freed_memory()
                if len(pending) == PHOTOS_PER_CHUNK:
                    saved += _save_chunk(store, pending, name_of, stamps)
        except KeyboardInterrupt:
            saved += _save_chunk(store, pending, name_of, stamps)
            raise FolderInterrupted(store.folder, len(store.files())) from None
        saved += _save_chunk(store, pending, name_of, stamps)
    return saved


def _save_chunk(
    store: EmbeddingStore, analyses: list[PhotoAnalysis], name_of: dict[str, str], stamps: dict[str, list | None]
) -> int:
    """Append the finished `analyses` to the store as one chunk and empty the list; returns how many."""
    if not analyses:
        return 0
    names = [name_of[analysis.source] for analysis in analyses]
    records, embeddings = zip(*(_record(analysis, name, stamps[name]) for analysis, name in zip(analyses, names)))
    store.append(list(records), list(embeddings))
    count = len(analyses)
    analyses.clear()
    return count


def _record(analysis: PhotoAnalysis, name: str, stamp: list | None) -> tuple[dict, object]:
    """(the store's table record, the embedding or None) of one photo: its chosen face, or its error."""
    face = analysis.face
    if face is None:
        error = analysis.error.replace(analysis.source, name) if analysis.error else "no face"
        return {"file": name, "error": error, "stamp": stamp}, None
    record = {"file": name, **face.result(analysis.faces_found).to_json()}  # records.FaceResult's fields
    return record | {"stamp": stamp}, face.embedding


def _check_settings(store: Path, settings: dict, what: str, remedy: str, older_remedy: str) -> None:
    if not (store / STORE_MANIFEST).is_file():
        return
    differ = recorded_differences(store / SETTINGS_FILE, settings)
    if differ == []:
        return
    if differ is not None and "schema" in differ:
        raise OutputError(
            f"{what} by an older version, whose records have other field names (results schema "
            f"{_recorded_schema(store / SETTINGS_FILE)}, this version writes {SCHEMA_VERSION}); {older_remedy}"
        )
    if differ is None:
        why = f"with unknown settings (no readable {store / SETTINGS_FILE})"
    else:
        changed = "".join(f"; {name} is not the file they were made with" for name in model_files(differ, settings))
        why = f"with other settings ({', '.join(differ)}{changed})"
    raise OutputError(f"{what} {why}; use the same options, {remedy}")


def _recorded_schema(settings_file: Path) -> int:
    """The results schema a store's settings.json records (1: written before it recorded one)."""
    try:
        return json.loads(settings_file.read_text(encoding="utf-8")).get("schema", 1)
    except (OSError, ValueError, AttributeError):
        return 1


def _shard_store(path: Path) -> Path:
    """The store folder of a shard given as its OUT_DIR or as the store itself."""
    for candidate in (path / STORE_FOLDER, path):
        if (candidate / STORE_MANIFEST).is_file():
            return candidate
    raise OutputError(f"{path} holds no embedding store (no {STORE_FOLDER}/{STORE_MANIFEST}); give a shard's OUT_DIR")
