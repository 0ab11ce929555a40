"""data_prep.py end to end on small archives in the real formats, served from 127.0.0.1."""

import hashlib
import json
import tarfile

import pandas as pd
import pytest
from PIL import Image

import config
import data_prep
import loader
from dataset_archives import cacd_archive, fgnet_zip, imdb_archive, unsafe_tar, unsafe_zip, utkface_archive
from http_server import serve_directory


def _prep(tmp_path, *args):
    return data_prep.main(["--data-root", str(tmp_path / "data"), "--workers", "1", *map(str, args)])


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _use_md5(monkeypatch, dataset, md5):
    source = config.DATASET_SOURCES[dataset]
    monkeypatch.setitem(config.DATASET_SOURCES, dataset,
                        config.ArchiveSource(source.file_name, source.url, md5, source.out_name, source.inner,
                                             source.page))


@pytest.fixture(scope="module")
def imdb_tar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imdb_server")
    expected = imdb_archive(folder / "imdb_crop.tar")
    return folder, expected


def test_imdb_downloads_filters_crops_and_splits_by_person(tmp_path, imdb_tar, monkeypatch, capsys):
    served, expected = imdb_tar
    _use_md5(monkeypatch, "imdb", _md5(served / "imdb_crop.tar"))
    with serve_directory(served, cut_first_response=True) as (base_url, log):
        assert _prep(tmp_path, "--url", base_url + "imdb_crop.tar") == 0
    assert [entry["range"] for entry in log][:1] == [None] and any(e["range"] for e in log)  # resumed with Range
    assert (tmp_path / "data" / "downloads" / "imdb_crop.tar").read_bytes() == (served / "imdb_crop.tar").read_bytes()

    out = tmp_path / "data" / "IMDB"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == expected["metadata_drops"]
    assert summary["dropped_by_cropping"] == expected["crop_drops"]
    assert summary["train_images"] + summary["val_images"] == expected["kept"]
    assert summary["val_images"] > 0 and summary["train_images"] > summary["val_images"]
    printed = capsys.readouterr().out
    assert "dropped: face_score below 1.0" in printed and "val images" in printed

    train, val = (pd.read_csv(out / f"{split}.csv") for split in ("train", "val"))
    assert list(train.columns) == ["name", "age", "identity", "source"]
    assert not set(train["identity"]) & set(val["identity"])  # identity-disjoint
    for split, table in (("train", train), ("val", val)):
        labels = loader.read_labels(out / f"{split}.csv", out / f"{split}_images")  # train.py can read them
        assert len(labels) == len(table)
        with Image.open(out / f"{split}_images" / table["name"][0]) as face:
            assert face.size == (160, 160) and face.format == "JPEG"
    first = train.iloc[0]
    assert first["source"].startswith(f"{int(first['identity']) - 1:02d}/nm")
    birth_year, taken = int(first["source"].split("_")[2][:4]), int(first["source"].split("_")[3][:4])
    assert first["age"] in (taken - birth_year, taken - birth_year - 1)
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / "config.json").read_text())["min_face_score"] == 1.0  # the resolved config


def test_second_run_finds_everything_done(tmp_path, imdb_tar, capsys):
    served, _ = imdb_tar
    archive = served / "imdb_crop.tar"
    assert _prep(tmp_path, "--archive", archive, "--skip-checksum") == 0
    out = tmp_path / "data" / "IMDB"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _prep(tmp_path, "--archive", archive, "--skip-checksum") == 0
    assert "already prepared" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_interrupted_cropping_continues_where_it_stopped(tmp_path, imdb_tar, monkeypatch, capsys):
    served, expected = imdb_tar
    real_run = data_prep.run_crops

    def dies_after_four(tasks, *args, **kwargs):
        for number, item in enumerate(real_run(tasks, *args, **kwargs)):
            if number == 4:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(data_prep, "run_crops", dies_after_four)
    assert _prep(tmp_path, "--archive", served / "imdb_crop.tar", "--skip-checksum") == data_prep.EXIT_INTERRUPTED
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("interrupted: 4 of 18 photos are done") and "run the same command again" in err[-1]
    assert not any("Traceback" in line for line in err)
    out = tmp_path / "data" / "IMDB"
    written = len(list(out.rglob("*.jpg")))  # whole files only: the chunk being cropped was saved atomically
    assert not (out / "train.csv").exists() and not list(out.rglob("*.tmp")) and written >= 4
    monkeypatch.setattr(data_prep, "run_crops", real_run)
    assert _prep(tmp_path, "--archive", served / "imdb_crop.tar", "--skip-checksum") == 0
    done_before = int(capsys.readouterr().out.split("resuming: ")[1].split(" of")[0])
    assert done_before >= max(4, written)  # 4 logged, plus any crop written but not yet logged
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] + summary["val_images"] == expected["kept"]
    assert summary["dropped_by_cropping"] == expected["crop_drops"]


def test_checksum_mismatch_stops_and_keeps_the_archive(tmp_path, imdb_tar, monkeypatch, capsys):
    served, _ = imdb_tar
    _use_md5(monkeypatch, "imdb", "0" * 32)
    with serve_directory(served) as (base_url, _):
        assert _prep(tmp_path, "--url", base_url + "imdb_crop.tar") == 1
    err = capsys.readouterr().err
    assert "does not have the expected MD5" in err and "--skip-checksum" in err
    assert (tmp_path / "data" / "downloads" / "imdb_crop.tar").is_file()
    assert _prep(tmp_path, "--archive", tmp_path / "data" / "downloads" / "imdb_crop.tar", "--skip-checksum",
                 "--no-detect") == 0


@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/absolute_escape.txt"])
def test_unsafe_tar_members_are_refused(tmp_path, member, capsys):
    archive = tmp_path / "imdb_crop.tar"
    unsafe_tar(archive, member)
    assert _prep(tmp_path, "--archive", archive, "--skip-checksum") == 1
    err = capsys.readouterr().err
    assert "refused to unpack" in err and member.lstrip("/") in err
    assert not (tmp_path / "data" / "raw" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_tar_links_leaving_the_folder_are_refused(tmp_path, capsys):
    archive = tmp_path / "imdb_crop.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("imdb_crop/imdb.mat")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    assert _prep(tmp_path, "--archive", archive, "--skip-checksum") == 1
    assert "imdb_crop/imdb.mat" in capsys.readouterr().err


@pytest.mark.parametrize("member", ["../escape.txt", "FGNET/../../escape.txt"])
def test_unsafe_zip_members_are_refused(tmp_path, member, capsys):
    archive = tmp_path / "FGNET.zip"
    unsafe_zip(archive, member)
    assert _prep(tmp_path, "--dataset", "fgnet", "--archive", archive) == 1
    assert f"member {member!r} is unsafe" in capsys.readouterr().err
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "data" / "escape.txt").exists()


def test_cacd_names_give_age_and_identity(tmp_path, capsys):
    archive = tmp_path / "CACD2000.tar.gz"
    kept = cacd_archive(archive)
    assert _prep(tmp_path, "--dataset", "cacd", "--archive", archive, "--workers", "2") == 0
    out = tmp_path / "data" / "CACD"
    train, val = (pd.read_csv(out / f"{split}.csv") for split in ("train", "val"))
    assert len(train) + len(val) == kept and not set(train["identity"]) & set(val["identity"])
    assert "Zoë_Van_Der_Person0" in set(train["identity"]) | set(val["identity"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == {"file name without a readable age": 1}


def test_utkface_split_is_random_and_says_so(tmp_path, capsys):
    archive = tmp_path / "UTKFace.tar.gz"
    kept = utkface_archive(archive)
    assert _prep(tmp_path, "--dataset", "utkface", "--archive", archive, "--no-detect") == 0
    assert "no identity labels" in capsys.readouterr().out
    summary = json.loads((tmp_path / "data" / "UTKFace" / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == {"file name without a readable age": 1, "age outside 0..100": 1}
    assert summary["train_images"] + summary["val_images"] == kept and summary["identity_disjoint"] is False


def test_fgnet_zip_and_limit(tmp_path):
    archive = tmp_path / "FGNET.zip"
    fgnet_zip(archive)
    assert _prep(tmp_path, "--dataset", "fgnet", "--archive", archive, "--limit", "6", "--no-detect",
                 "--img-size", "96") == 0
    out = tmp_path / "data" / "FGNET"
    train, val = (pd.read_csv(out / f"{split}.csv", dtype={"identity": str}) for split in ("train", "val"))
    assert len(train) + len(val) == 6 and set(train["identity"]).isdisjoint(val["identity"])
    assert Image.open(out / "train_images" / train["name"][0]).size == (96, 96)


def test_own_photos_with_a_csv(tmp_path):
    photos = tmp_path / "mine"
    photos.mkdir()
    from dataset_archives import face_photo

    rows = []
    for number in range(6):
        face_photo(number).save(photos / f"p{number}.jpg")
        rows.append({"name": f"p{number}.jpg", "age": 20 + number * 7, "identity": f"id{number // 2}"})
    rows.append({"name": "ghost.jpg", "age": 30, "identity": "id9"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    assert _prep(tmp_path, "--dataset", "csv", "--images", photos, "--csv", tmp_path / "labels.csv",
                 "--out", tmp_path / "prepared") == 0
    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == {"file missing": 1}
    assert summary["train_images"] + summary["val_images"] == 6


def test_datasets_without_a_direct_link_ask_for_the_archive(tmp_path, capsys):
    assert _prep(tmp_path, "--dataset", "cacd") == 1
    err = capsys.readouterr().err
    assert "CACD2000.tar.gz" in err and "--archive" in err


def test_wiki_metadata_without_celebrity_fields(tmp_path):
    archive = tmp_path / "wiki_crop.tar"
    expected = imdb_archive(archive, kind="wiki")
    assert _prep(tmp_path, "--dataset", "wiki", "--archive", archive, "--skip-checksum", "--no-detect") == 0
    summary = json.loads((tmp_path / "data" / "WIKI" / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == expected["metadata_drops"]
    train = pd.read_csv(tmp_path / "data" / "WIKI" / "train.csv")
    assert train["identity"].str.startswith("nm").all()  # from the file name, as wiki.mat has no celeb_id


def test_a_full_disk_stops_the_download_before_it_starts(tmp_path, imdb_tar, monkeypatch, capsys):
    import download

    served, _ = imdb_tar
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with serve_directory(served) as (base_url, log):
        assert _prep(tmp_path, "--url", base_url + "imdb_crop.tar") == 1
    assert "GB free but the download needs" in capsys.readouterr().err
    assert len(log) == 1  # not retried: waiting does not free disk space


def test_an_unreachable_mirror_says_what_to_do(tmp_path, capsys):
    assert _prep(tmp_path, "--url", "http://127.0.0.1:9/imdb_crop.tar") == 1
    err = capsys.readouterr().err
    assert "could not download http://127.0.0.1:9/imdb_crop.tar" in err and "--archive PATH" in err
    assert err.count("\n") == 1
