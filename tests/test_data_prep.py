"""data_prep.py end to end on small archives in the real formats, served from 127.0.0.1."""

import hashlib
import json
import re
import tarfile

import pandas as pd
import pytest
from dataset_archives import cacd_archive, fgnet_zip, imdb_archive, unsafe_tar, unsafe_zip, utkface_archive
from http_server import serve_directory
from PIL import Image

import config
import data_prep
import loader
from face_match_age.exit_codes import ExitCode
from face_match_age.preparation import crops


def _prep(tmp_path, *args):
    return data_prep.main(["--data-root", str(tmp_path / "data"), "--workers", "1", *map(str, args)])


def _md5(path):
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _use_md5(monkeypatch, dataset, md5):
    source = config.DATASET_SOURCES[dataset]
    monkeypatch.setitem(
        config.DATASET_SOURCES,
        dataset,
        config.ArchiveSource(source.file_name, source.url, md5, source.out_name, source.inner, source.page),
    )


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
    assert [entry["range"] for entry in log][:1] == [None]  # resumed with Range
    assert any(e["range"] for e in log)
    assert (tmp_path / "data" / "downloads" / "imdb_crop.tar").read_bytes() == (served / "imdb_crop.tar").read_bytes()

    out = tmp_path / "data" / "IMDB"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == expected["metadata_drops"]
    assert summary["dropped_by_cropping"] == expected["crop_drops"]
    assert summary["train_images"] + summary["val_images"] == expected["kept"]
    assert summary["val_images"] > 0
    assert summary["train_images"] > summary["val_images"]
    printed = capsys.readouterr().out
    assert "dropped: face_score below 1.0" in printed
    assert "val images" in printed

    train, val = (pd.read_csv(out / f"{split}.csv") for split in ("train", "val"))
    assert list(train.columns) == ["name", "age", "identity", "source"]
    assert not set(train["identity"]) & set(val["identity"])  # identity-disjoint
    for split, table in (("train", train), ("val", val)):
        labels = loader.read_labels(out / f"{split}.csv", out / f"{split}_images")  # train.py can read them
        assert len(labels) == len(table)
        with Image.open(out / f"{split}_images" / table["name"][0]) as face:
            assert face.size == (160, 160)
            assert face.format == "JPEG"
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
    real_run = crops.run_crops

    def dies_after_four(tasks, *args, **kwargs):
        for number, item in enumerate(real_run(tasks, *args, **kwargs)):
            if number == 4:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(crops, "run_crops", dies_after_four)
    assert _prep(tmp_path, "--archive", served / "imdb_crop.tar", "--skip-checksum") == data_prep.EXIT_INTERRUPTED
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("interrupted: 4 of 18 photos are done")
    assert "run the same command again" in err[-1]
    assert not any("Traceback" in line for line in err)
    out = tmp_path / "data" / "IMDB"
    written = len(list(out.rglob("*.jpg")))  # whole files only: the chunk being cropped was saved atomically
    assert not (out / "train.csv").exists()
    assert not list(out.rglob("*.tmp"))
    assert written >= 4
    monkeypatch.setattr(crops, "run_crops", real_run)
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
        assert _prep(tmp_path, "--url", base_url + "imdb_crop.tar") == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "does not have the expected MD5" in err
    assert "--skip-checksum" in err
    assert (tmp_path / "data" / "downloads" / "imdb_crop.tar").is_file()
    assert (
        _prep(
            tmp_path, "--archive", tmp_path / "data" / "downloads" / "imdb_crop.tar", "--skip-checksum", "--no-detect"
        )
        == 0
    )


@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/absolute_escape.txt"])  # noqa: S108  a tar member's name
def test_unsafe_tar_members_are_refused(tmp_path, member, capsys):
    archive = tmp_path / "imdb_crop.tar"
    unsafe_tar(archive, member)
    assert _prep(tmp_path, "--archive", archive, "--skip-checksum") == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "refused to unpack" in err
    assert member.lstrip("/") in err
    assert not (tmp_path / "data" / "raw" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_tar_links_leaving_the_folder_are_refused(tmp_path, capsys):
    archive = tmp_path / "imdb_crop.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("imdb_crop/imdb.mat")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    assert _prep(tmp_path, "--archive", archive, "--skip-checksum") == ExitCode.INPUT
    assert "imdb_crop/imdb.mat" in capsys.readouterr().err


@pytest.mark.parametrize("member", ["../escape.txt", "FGNET/../../escape.txt"])
def test_unsafe_zip_members_are_refused(tmp_path, member, capsys):
    archive = tmp_path / "FGNET.zip"
    unsafe_zip(archive, member)
    assert _prep(tmp_path, "--dataset", "fgnet", "--archive", archive) == ExitCode.INPUT
    assert f"member {member!r} is unsafe" in capsys.readouterr().err
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "data" / "escape.txt").exists()


def test_cacd_names_give_age_and_identity(tmp_path, capsys):
    archive = tmp_path / "CACD2000.tar.gz"
    kept = cacd_archive(archive)
    assert _prep(tmp_path, "--dataset", "cacd", "--archive", archive, "--workers", "2") == 0
    out = tmp_path / "data" / "CACD"
    train, val = (pd.read_csv(out / f"{split}.csv") for split in ("train", "val"))
    assert len(train) + len(val) == kept
    assert not set(train["identity"]) & set(val["identity"])
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
    assert summary["train_images"] + summary["val_images"] == kept
    assert summary["identity_disjoint"] is False


def test_fgnet_zip_prepares_only_the_limited_number_of_photos(tmp_path):
    archive = tmp_path / "FGNET.zip"
    fgnet_zip(archive)
    assert (
        _prep(tmp_path, "--dataset", "fgnet", "--archive", archive, "--limit", "6", "--no-detect", "--img-size", "96")
        == 0
    )
    out = tmp_path / "data" / "FGNET"
    train, val = (pd.read_csv(out / f"{split}.csv", dtype={"identity": str}) for split in ("train", "val"))
    assert len(train) + len(val) == 6
    assert set(train["identity"]).isdisjoint(val["identity"])
    assert Image.open(out / "train_images" / train["name"][0]).size == (96, 96)


def test_own_photos_with_a_csv_are_cropped_split_and_labelled(tmp_path):
    rows = [{"name": f"p{number}.jpg", "age": 20 + number * 7, "identity": f"id{number // 2}"} for number in range(6)]
    folder = _own_photos(tmp_path, rows)
    rows.append({"name": "ghost.jpg", "age": 30, "identity": "id9"})  # listed, but no such photo
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    assert _prep_csv(tmp_path, folder) == 0
    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == {"file missing": 1}
    assert summary["train_images"] + summary["val_images"] == 6


def test_datasets_without_a_direct_link_ask_for_the_archive(tmp_path, capsys):
    assert _prep(tmp_path, "--dataset", "cacd") == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "CACD2000.tar.gz" in err
    assert "--archive" in err


def test_wiki_metadata_without_celebrity_fields(tmp_path):
    archive = tmp_path / "wiki_crop.tar"
    expected = imdb_archive(archive, kind="wiki")
    assert _prep(tmp_path, "--dataset", "wiki", "--archive", archive, "--skip-checksum", "--no-detect") == 0
    summary = json.loads((tmp_path / "data" / "WIKI" / "summary.json").read_text())
    assert summary["dropped_by_metadata"] == expected["metadata_drops"]
    train = pd.read_csv(tmp_path / "data" / "WIKI" / "train.csv")
    assert train["identity"].str.startswith("nm").all()  # from the file name, as wiki.mat has no celeb_id


def test_a_full_disk_stops_the_download_before_it_starts(tmp_path, imdb_tar, monkeypatch, capsys):
    from face_match_age.files import downloader

    served, _ = imdb_tar
    monkeypatch.setattr(downloader.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with serve_directory(served) as (base_url, log):
        assert _prep(tmp_path, "--url", base_url + "imdb_crop.tar") == ExitCode.OUTPUT
    assert "GB free but the download needs" in capsys.readouterr().err
    assert len(log) == 1  # not retried: waiting does not free disk space


def test_an_unreachable_mirror_says_what_to_do(tmp_path, capsys):
    assert _prep(tmp_path, "--url", "http://127.0.0.1:9/imdb_crop.tar") == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "could not download http://127.0.0.1:9/imdb_crop.tar" in err
    assert "--archive PATH" in err
    assert err.count("\n") == 1


# --- your own photos: names, identities, split shares, retries, interruptions ----------------------------


def _own_photos(tmp_path, rows, photos=None):
    """A folder of face photos named by `rows` (dicts: name, age, optionally identity) and its labels CSV."""
    from dataset_archives import face_photo

    folder = tmp_path / "mine"
    for number, row in enumerate(rows):
        name = row.get("name")
        if isinstance(name, str) and name.strip() and not name.startswith(("/", "..")):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (photos or {}).get(name, face_photo(number)).save(folder / name, format="JPEG")
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return folder


def _prep_csv(tmp_path, folder, *extra):
    return _prep(
        tmp_path,
        "--dataset",
        "csv",
        "--images",
        folder,
        "--csv",
        tmp_path / "labels.csv",
        "--out",
        tmp_path / "prepared",
        *extra,
    )


def test_csv_names_sharing_a_crop_file_are_refused_naming_the_rows(tmp_path, capsys):
    rows = [
        {"name": "a.jpg", "age": 30},
        {"name": "sub/q.jpg", "age": 31},
        {"name": "sub_q.jpg", "age": 55},
        {"name": "x.png", "age": 20},
        {"name": "x.jpg", "age": 70},
        {"name": "a.jpg", "age": 33},
        {"name": "fine.jpg", "age": 40},
    ]
    folder = _own_photos(tmp_path, rows)
    assert _prep_csv(tmp_path, folder, "--no-detect") == ExitCode.INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "one crop cannot carry two labels" in err
    for clash in (
        "line 2 'a.jpg' and line 7 'a.jpg'",
        "line 3 'sub/q.jpg' and line 4 'sub_q.jpg' -> sub_q.jpg",
        "line 5 'x.png' and line 6 'x.jpg'",
    ):
        assert clash in err
    assert "fine.jpg" not in err  # refused before any cropping
    assert not (tmp_path / "prepared").exists()


def test_blank_absolute_and_parent_names_are_one_error_before_cropping(tmp_path, capsys):
    from dataset_archives import face_photo

    face_photo(0).save(tmp_path / "outside.jpg")  # exists, so only the name check can keep it out
    rows = [
        {"name": "good.jpg", "age": 30},
        {"name": "", "age": 31},
        {"name": "../outside.jpg", "age": 32},
        {"name": str(tmp_path / "outside.jpg"), "age": 33},
        {"name": "sub/../../outside.jpg", "age": 34},
    ]
    folder = _own_photos(tmp_path, rows)
    assert _prep_csv(tmp_path, folder, "--no-detect") == ExitCode.INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "4 name(s) are not paths inside --images" in err
    assert "line 3 '': blank name" in err
    assert "line 4 '../outside.jpg': '..' leads out of the folder" in err
    assert f"line 5 '{tmp_path / 'outside.jpg'}': absolute path" in err
    assert "line 6" in err
    assert not (tmp_path / "prepared").exists()


def test_rows_without_identity_count_as_one_person_each_in_the_split(tmp_path, capsys):
    rows = [{"name": f"p{i}.jpg", "age": 18 + 4 * i, "identity": f"id{i // 3}" if i < 9 else None} for i in range(15)]
    folder = _own_photos(tmp_path, rows)
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0
    captured = capsys.readouterr()
    assert "photos without an identity: 6; each counts as a person of its own" in captured.out
    train, val = (
        pd.read_csv(tmp_path / "prepared" / f"{split}.csv", dtype={"identity": str}) for split in ("train", "val")
    )
    assert len(train) + len(val) == 15  # 20% of 15
    assert len(val) == 3
    assert set(train["identity"].dropna()).isdisjoint(val["identity"].dropna())
    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["identity_disjoint"]
    assert summary["train_identities"] + summary["val_identities"] == 3 + 6


def test_a_split_that_cannot_meet_the_ratio_warns_with_the_real_shares(tmp_path, capsys):
    rows = [{"name": f"p{i}.jpg", "age": 30 + i, "identity": "star" if i < 8 else f"other{i}"} for i in range(10)]
    folder = _own_photos(tmp_path, rows)
    assert _prep_csv(tmp_path, folder, "--no-detect", "--val-ratio", "0.4") == 0
    err = capsys.readouterr().err
    assert "warning: val holds 2 of 10 images (20%) and train 8 (80%), not the 40% asked" in err
    assert "the largest with 8 images" in err


def test_drops_while_cropping_that_move_the_split_are_warned_about(tmp_path, capsys):
    rows = [{"name": f"p{i}.jpg", "age": 20 + 2 * i, "identity": f"id{i}"} for i in range(20)]
    folder = _own_photos(tmp_path, rows)
    assert _prep_csv(tmp_path, folder, "--no-detect", "--out", tmp_path / "first") == 0
    val_names = pd.read_csv(tmp_path / "first" / "val.csv")["name"].tolist()
    assert len(val_names) == 4  # 20% of 20: met when drawn
    assert "warning" not in capsys.readouterr().err
    for name in val_names[:3]:  # not all: an emptied val is refused (test_honest_figures)
        (folder / name).write_bytes(b"damaged since")
    assert _prep_csv(tmp_path, folder, "--no-detect", "--out", tmp_path / "second") == 0
    err = capsys.readouterr().err
    assert "warning: after cropping, val holds 1 of the 17 images kept (6%), not the 20% asked" in err


def test_a_photo_fixed_after_failing_is_tried_again(tmp_path, capsys):
    from dataset_archives import face_photo

    rows = [{"name": f"p{i}.jpg", "age": 20 + 9 * i, "identity": f"id{i}"} for i in range(5)]
    folder = _own_photos(tmp_path, rows)
    (folder / "p2.jpg").write_bytes(b"not a photo yet")
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0
    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["dropped_by_cropping"] == {"unreadable image": 1}
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0  # nothing changed: the failure is remembered
    assert "already prepared" in capsys.readouterr().out
    face_photo(2).save(folder / "p2.jpg", format="JPEG")  # the user repairs it
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0
    out = capsys.readouterr().out
    assert "photos that failed before and have changed since: 1" in out
    assert "resuming: 4 of 5" in out
    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["dropped_by_cropping"] == {}
    assert summary["train_images"] + summary["val_images"] == 5


def test_tiny_photos_are_counted_as_no_face_not_a_crash(tmp_path, capsys):
    # 48 and 50 pixels pass the 48-pixel minimum; shrunk for detection (longest side 1600) they are 19 and
    # 10 pixels high, smaller than MTCNN's first network can look at.
    banners = {
        "banner_4000x48.jpg": Image.new("RGB", (4000, 48), (90, 90, 90)),
        "panorama_8000x50.jpg": Image.new("RGB", (8000, 50), (120, 120, 120)),
    }
    # Enough people that the split leaves faces on both sides (a side emptied by the drops is refused).
    rows = [{"name": f"p{i}.jpg", "age": 20 + 5 * i, "identity": f"id{i}"} for i in range(10)]
    rows += [{"name": name, "age": 40, "identity": name} for name in banners]
    folder = _own_photos(tmp_path, rows, photos=banners)
    assert _prep_csv(tmp_path, folder) == 0
    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["dropped_by_cropping"] == {"no face detected": 2}
    assert summary["train_images"] + summary["val_images"] == 10
    capsys.readouterr()
    assert _prep_csv(tmp_path, folder) == 0
    assert "already prepared" in capsys.readouterr().out


def test_ctrl_c_during_the_download_keeps_the_part_and_says_so(tmp_path, monkeypatch, capsys):
    def interrupted(url, dest, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_prep, "download", interrupted)
    assert _prep(tmp_path, "--url", "http://127.0.0.1:9/imdb_crop.tar") == data_prep.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("interrupted: the part downloaded so far is kept in")
    assert "imdb_crop.tar.part" in err
    assert "resume" in err


def test_ctrl_c_while_cropping_in_worker_processes_stops_them(tmp_path, monkeypatch, capsys):
    import multiprocessing

    rows = [{"name": f"p{i}.jpg", "age": 20 + 2 * i, "identity": f"id{i}"} for i in range(40)]
    folder = _own_photos(tmp_path, rows)
    real_record = crops.CropLog.record

    def dies_after_two(self, handle, task, outcome):
        real_record(self, handle, task, outcome)
        if len(self.entries) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(crops.CropLog, "record", dies_after_two)
    code = _prep(
        tmp_path,
        "--dataset",
        "csv",
        "--images",
        folder,
        "--csv",
        tmp_path / "labels.csv",
        "--out",
        tmp_path / "prepared",
        "--no-detect",
        "--workers",
        "2",
    )
    assert code == data_prep.EXIT_INTERRUPTED
    assert multiprocessing.active_children() == []
    err = capsys.readouterr().err
    assert "interrupted: 2 of 40 photos are done" in err
    assert "Traceback" not in err
    out = tmp_path / "prepared"
    assert not list(out.rglob("*.tmp"))
    assert not (out / "train.csv").exists()
    monkeypatch.setattr(crops.CropLog, "record", real_record)
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0
    assert json.loads((out / "summary.json").read_text())["train_images"] + 8 == 40


def test_a_crop_log_line_cut_short_does_not_swallow_the_next_entry(tmp_path):
    from face_match_age.preparation.crops import CropLog, CropTask

    log_path = tmp_path / "crop_log.jsonl"
    log_path.write_text('{"dest": "a.jpg", "outcome": "no face detected", "source": "a", "stamp": null}\n{"dest": "b.j')
    log = CropLog(log_path)
    with log.appending() as handle:
        log.record(handle, CropTask(str(tmp_path / "c_src.jpg"), "c.jpg"), "unreadable image")
    assert set(CropLog(log_path).entries) == {"a.jpg", "c.jpg"}


def test_a_full_disk_while_cropping_is_one_line_and_the_rerun_continues(tmp_path, monkeypatch, capsys):
    from face_match_age.files.output_files import write_atomically
    from face_match_age.preparation import crops

    rows = [{"name": f"p{i}.jpg", "age": 20 + 9 * i, "identity": f"id{i}"} for i in range(5)]
    folder = _own_photos(tmp_path, rows)
    real_save = crops._save_atomically

    def disk_full(face, dest):  # the real atomic write, with a disk that fills up while the crop is written
        def write(tmp):
            raise OSError(28, "No space left on device", str(tmp))

        write_atomically(dest, write)

    monkeypatch.setattr(crops, "_save_atomically", disk_full)
    assert _prep_csv(tmp_path, folder, "--no-detect") == ExitCode.OUTPUT
    err = capsys.readouterr().err
    messages = [line for line in re.split(r"[\r\n]", err) if line.strip() and "|" not in line]  # not the bar
    assert messages[-1].startswith("error: cannot write "), err
    assert "(No space left on device); fix that and run the same command again" in messages[-1]
    assert sum(line.startswith("error:") for line in messages) == 1
    assert "Traceback" not in err
    monkeypatch.setattr(crops, "_save_atomically", real_save)
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0


def test_a_prepared_folder_is_what_train_reads_with_data_dir_and_its_config_file(tmp_path):
    import train
    from config import parse_config

    rows = [{"name": f"p{number}.jpg", "age": 20 + number * 9, "identity": f"id{number}"} for number in range(5)]
    assert _prep_csv(tmp_path, _own_photos(tmp_path, rows), "--no-detect", "--val-ratio", "0.4") == 0
    prepared = tmp_path / "prepared"
    for argv in (["--config", str(prepared / "config.json")], ["--data-dir", str(prepared)]):
        _, resolved = parse_config(train.build_parser(), argv)
        paths = (resolved.train_dir, resolved.val_dir, resolved.train_csv, resolved.val_csv)
        assert [path for path in paths if not path.exists()] == []
    _, resolved = parse_config(data_prep.build_parser(), ["--config", str(prepared / "config.json")])
    assert resolved.val_ratio == 0.4  # the file also carries the settings data_prep.py ran with


# --- preview sheets of the crops ------------------------------------------------------------------------


def _preview(out, split):
    from face_match_age.reports.crop_preview import preview_path

    with Image.open(preview_path(out, split)) as sheet:
        sheet.load()
        return sheet


def _assert_preview_of(sheet, tiles):
    """`sheet` is laid out as the shared layout draws `tiles` single-face tiles: their rows, and a width
    between their own and a full row's (a sheet of few tiles widens for its title)."""
    from face_match_age.reports.contact_sheet import COLUMNS, Tile, contact_sheet

    narrowest = contact_sheet([Tile([None])] * tiles, "t")
    assert sheet.height == narrowest.height
    assert narrowest.width <= sheet.width <= contact_sheet([Tile([None])] * COLUMNS, "t").width


def test_a_prepared_folder_has_a_jpeg_preview_of_each_splits_crops(tmp_path, capsys):
    rows = [{"name": f"p{i}.jpg", "age": 20 + 5 * i, "identity": f"id{i}"} for i in range(10)]
    assert _prep_csv(tmp_path, _own_photos(tmp_path, rows), "--no-detect") == 0
    out = tmp_path / "prepared"
    assert str(out / "preview_train.jpg") in capsys.readouterr().out
    for split in ("train", "val"):
        sheet = _preview(out, split)
        assert sheet.format == "JPEG"
        _assert_preview_of(sheet, len(pd.read_csv(out / f"{split}.csv")))


def test_previews_of_many_crops_show_only_the_tile_limit(tmp_path, monkeypatch):
    from face_match_age.reports import crop_preview

    monkeypatch.setattr(crop_preview, "PREVIEW_TILES", 3)
    rows = [{"name": f"p{i}.jpg", "age": 20 + 3 * i, "identity": f"id{i}"} for i in range(20)]
    assert _prep_csv(tmp_path, _own_photos(tmp_path, rows), "--no-detect") == 0
    for split in ("train", "val"):  # 16 and 4 crops
        _assert_preview_of(_preview(tmp_path / "prepared", split), 3)


def test_a_rerun_finding_everything_done_draws_a_missing_preview_and_rewrites_nothing_else(tmp_path, capsys):
    rows = [{"name": f"p{i}.jpg", "age": 20 + 5 * i, "identity": f"id{i}"} for i in range(10)]
    folder = _own_photos(tmp_path, rows)
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0
    out = tmp_path / "prepared"
    first = (out / "preview_val.jpg").read_bytes()
    (out / "preview_val.jpg").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _prep_csv(tmp_path, folder, "--no-detect") == 0
    assert "already prepared" in capsys.readouterr().out
    assert (out / "preview_val.jpg").read_bytes() == first
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "preview_val.jpg"}


def test_preview_tiles_show_each_crop_with_its_csv_labels(tmp_path):
    from face_match_age.reports.crop_preview import crop_tiles

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "a.jpg")
    rows = pd.DataFrame(
        [{"name": "a.jpg", "age": 34, "identity": "nm01"}, {"name": "gone.jpg", "age": 7, "identity": ""}]
    )
    tiles = crop_tiles(rows, tmp_path)
    assert [tile.caption for tile in tiles] == [
        ["a.jpg", "age 34", "identity nm01"],
        ["gone.jpg", "age 7", "no identity"],
    ]
    assert tiles[0].faces[0].size == (32, 32)
    assert tiles[1].faces == [None]  # a crop that cannot be read: an empty square, not a crash


def test_the_preview_sample_is_bounded_seeded_and_youngest_first():
    from face_match_age.reports.crop_preview import sample_rows

    table = pd.DataFrame({"name": [f"p{i}.jpg" for i in range(100)], "age": [(37 * i) % 90 for i in range(100)]})
    sample = sample_rows(table, 10, seed=42)
    assert len(sample) == 10
    assert sample["age"].is_monotonic_increasing
    assert sample.equals(sample_rows(table, 10, seed=42))
    assert not sample.equals(sample_rows(table, 10, seed=7))
