"""Small archives in the real formats of the public datasets (face_match_age/preparation/dataset_labels.py
says each format), built from scikit-image's photos: faces (the astronaut, mirrored and scaled) and non-faces
(coffee), plus a corrupt file, so that every filter and every crop outcome happens."""

from __future__ import annotations

import io
import tarfile
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from skimage import data


def face_photo(variant: int) -> Image.Image:
    """A face crop with margin, as IMDB-WIKI's crops are, in several sizes and orientations."""
    astronaut = Image.fromarray(data.astronaut())
    crop = astronaut.crop((110 + variant % 3 * 4, 0, 340 - variant % 4 * 3, 240))
    if variant % 2:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    side = 150 + 20 * (variant % 5)
    return crop.resize((side, side))


def non_face_photo(variant: int) -> Image.Image:
    return Image.fromarray(data.coffee()).crop((variant * 10, 0, 300 + variant * 10, 300)).resize((200, 200))


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def matlab_datenum(day: date) -> float:
    return float(day.toordinal() + 366)


def imdb_archive(path: Path, kind: str = "imdb", people: int = 5, photos_each: int = 3) -> dict:
    """`<kind>_crop.tar` with `<kind>_crop/<kind>.mat` and photos in 00..99 folders. Returns what a
    correct reader should find: kept count and the drops by reason."""
    rows, files = [], {}
    for person in range(people):
        birth = date(1950 + 7 * person, 3 + person, 10)
        for photo in range(photos_each):
            taken = birth.year + 8 + 15 * photo + person
            name = f"{person:02d}/nm{person:07d}_rm{photo:09d}_{birth.isoformat()}_{taken}.jpg"
            files[name] = jpeg_bytes(face_photo(person * photos_each + photo))
            rows.append(
                dict(
                    full_path=name,
                    dob=matlab_datenum(birth),
                    photo_taken=taken,
                    face_score=2.5,
                    second_face_score=np.nan,
                    celeb_id=person + 1,
                )
            )
    extra = [  # one record per filter, each a distinct person so the split stays identity-disjoint
        ("90/nm0000090_rm1_1970-1-1_2000.jpg", face_photo(1), dict(face_score=-np.inf)),
        ("91/nm0000091_rm1_1970-1-1_2000.jpg", face_photo(2), dict(face_score=0.5)),
        ("92/nm0000092_rm1_1970-1-1_2000.jpg", face_photo(3), dict(second_face_score=1.3)),
        ("93/nm0000093_rm1_1870-1-1_2000.jpg", face_photo(4), dict(dob=matlab_datenum(date(1870, 1, 1)))),
        ("94/nm0000094_rm1_1970-1-1_2000.jpg", non_face_photo(1), {}),  # passes metadata, MTCNN finds no face
        ("95/nm0000095_rm1_1970-1-1_2000.jpg", b"corrupt", {}),  # passes metadata, cannot be decoded
        ("96/nm0000096_rm1_1970-1-1_2000.jpg", Image.new("RGB", (20, 20)), {}),  # a tiny placeholder
    ]
    for offset, (name, photo, override) in enumerate(extra):
        files[name] = photo if isinstance(photo, bytes) else jpeg_bytes(photo)
        rows.append(
            {
                "full_path": name,
                "dob": matlab_datenum(date(1970, 1, 1)),
                "photo_taken": 2000,
                "face_score": 3.0,
                "second_face_score": np.nan,
                "celeb_id": 100 + offset,
                **override,
            }
        )
    fields = [
        "dob",
        "photo_taken",
        "full_path",
        "gender",
        "name",
        "face_location",
        "face_score",
        "second_face_score",
    ] + (["celeb_names", "celeb_id"] if kind == "imdb" else [])
    record = {}
    for field in fields:
        if field in ("full_path", "name", "face_location", "celeb_names"):
            cell = np.empty((1, len(rows)), dtype=object)
            for i, row in enumerate(rows):
                cell[0, i] = {
                    "full_path": row["full_path"],
                    "name": f"Person {i}",
                    "celeb_names": f"Celeb {i}",
                    "face_location": np.array([[1.0, 1.0, 50.0, 50.0]]),
                }[field]
            record[field] = cell
        elif field == "gender":
            record[field] = np.ones((1, len(rows)))
        else:
            record[field] = np.array([[row[field] for row in rows]], dtype=float)
    mat = io.BytesIO()
    scipy.io.savemat(mat, {kind: record})
    with tarfile.open(path, "w") as tar:
        _add(tar, f"{kind}_crop/{kind}.mat", mat.getvalue())
        for name, payload in files.items():
            _add(tar, f"{kind}_crop/{name}", payload)
    return {
        "kept": people * photos_each,
        "people": people,
        "metadata_drops": {
            "no face found by the dataset": 1,
            "face_score below 1.0": 1,
            "second face in the photo": 1,
            "age outside 0..100": 1,
        },
        "crop_drops": {"no face detected": 1, "unreadable image": 1, "image smaller than 48 pixels": 1},
    }


def cacd_archive(path: Path, people: int = 4, photos_each: int = 3) -> int:
    with tarfile.open(path, "w:gz") as tar:
        for person in range(people):
            for photo in range(photos_each):
                name = f"CACD2000/{20 + 10 * person + photo}_Zoë_Van_Der_Person{person}_{photo + 1:04d}.jpg"
                _add(tar, name, jpeg_bytes(face_photo(person + photo)))
        _add(tar, "CACD2000/not_a_cacd_name.jpg", jpeg_bytes(face_photo(0)))
    return people * photos_each


def utkface_archive(path: Path, count: int = 10) -> int:
    with tarfile.open(path, "w:gz") as tar:
        for number in range(count):
            name = f"UTKFace/{5 + 9 * number}_{number % 2}_{number % 5}_2017011617452{number:04d}.jpg.chip.jpg"
            _add(tar, name, jpeg_bytes(face_photo(number)))
        _add(tar, "UTKFace/39_1_20170116174525125.jpg.chip.jpg", jpeg_bytes(face_photo(1)))  # a known bad name
        _add(tar, "UTKFace/117_0_0_20170116174525125.jpg.chip.jpg", jpeg_bytes(face_photo(2)))  # age 117
    return count


def fgnet_zip(path: Path, people: int = 4, photos_each: int = 3) -> int:
    with zipfile.ZipFile(path, "w") as bundle:
        for person in range(people):
            for photo in range(photos_each):
                letter = "A" if photo % 2 else "a"
                suffix = "a" if photo == 2 else ""
                name = f"FGNET/images/{person + 1:03d}{letter}{10 * photo + person:02d}{suffix}.JPG"
                bundle.writestr(name, jpeg_bytes(face_photo(person * 3 + photo).convert("L").convert("RGB")))
        bundle.writestr("FGNET/points/001A02.pts", "version: 1\n")
    return people * photos_each


def unsafe_tar(path: Path, member: str) -> None:
    with tarfile.open(path, "w") as tar:
        _add(tar, "imdb_crop/imdb.mat", b"")
        _add(tar, member, b"escaped")


def unsafe_zip(path: Path, member: str) -> None:
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("FGNET/images/001A02.JPG", jpeg_bytes(face_photo(0)))
        bundle.writestr(member, b"escaped")


def face_photo_folder(folder: Path, non_face: Path, count: int = 6) -> Path:
    """`folder` holding face{0..count-1}.jpg (300 x 300 faces) and coffee.jpg (a copy of `non_face`, a photo
    without a face): what the evaluate tests label as pairs or as people over time."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        face_photo(number).resize((300, 300)).save(folder / f"face{number}.jpg")
    (folder / "coffee.jpg").write_bytes(Path(non_face).read_bytes())
    return folder
