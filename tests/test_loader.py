import pandas as pd
import pytest
import torch
from synthetic import make_dataset

from face_match_age.detection.imaging import face_to_tensor, load_image
from loader import FaceAgeDataModule, FaceAgeDataset, LabelsError, read_labels


@pytest.fixture
def dataset_config(tmp_path):
    return make_dataset(tmp_path / "data", train=8, val=4, size=64)


def _rewrite(config, rows):
    pd.DataFrame(rows).to_csv(config.train_csv, index=False)


def test_reads_names_ages_and_keeps_extra_columns(dataset_config):
    labels = read_labels(dataset_config.train_csv, dataset_config.train_dir)
    assert list(labels.columns) == ["name", "age", "identity"]
    assert len(labels) == 8
    assert labels["age"].dtype.kind == "i"


@pytest.mark.parametrize(
    "bad_ages, expected",
    [
        ([101, 5, -1], "2 ages that are not whole numbers in 0..100 (line 2: 101, line 4: -1)"),
        ([33.5, "old", 5], "2 ages that are not whole numbers"),
    ],
)
def test_bad_ages_are_listed(dataset_config, bad_ages, expected):
    names = sorted(p.name for p in dataset_config.train_dir.iterdir())[:3]
    _rewrite(dataset_config, {"name": names, "age": bad_ages})
    with pytest.raises(LabelsError) as error:
        read_labels(dataset_config.train_csv, dataset_config.train_dir)
    assert expected in str(error.value)
    assert str(dataset_config.train_csv) in str(error.value)


def test_missing_files_and_duplicates_are_listed(dataset_config):
    names = sorted(p.name for p in dataset_config.train_dir.iterdir())
    rows = {"name": [names[0], names[0]] + [f"ghost_{i}.jpg" for i in range(7)], "age": [30] * 9}
    _rewrite(dataset_config, rows)
    with pytest.raises(LabelsError) as error:
        read_labels(dataset_config.train_csv, dataset_config.train_dir)
    message = str(error.value)
    assert "2 duplicate file names (line 2: 'train_0000.jpg', line 3: 'train_0000.jpg')" in message
    assert "7 files missing from" in message
    assert "ghost_0.jpg" in message
    assert "and 2 more" in message


def test_empty_headerless_and_columnless_csvs(dataset_config):
    dataset_config.train_csv.write_text("name,age\n")
    with pytest.raises(LabelsError, match="no rows"):
        read_labels(dataset_config.train_csv, dataset_config.train_dir)
    dataset_config.train_csv.write_text("")
    with pytest.raises(LabelsError, match="not a readable CSV"):
        read_labels(dataset_config.train_csv, dataset_config.train_dir)
    dataset_config.train_csv.write_text("file,years\na.jpg,3\n")
    with pytest.raises(LabelsError, match=r"lacks the column.*age, name"):
        read_labels(dataset_config.train_csv, dataset_config.train_dir)
    with pytest.raises(LabelsError, match="does not exist"):
        read_labels(dataset_config.train_csv.with_name("nope.csv"), dataset_config.train_dir)


def test_validation_items_are_the_shared_preprocessing(dataset_config):
    dataset = FaceAgeDataset(dataset_config.val_dir, dataset_config.val_csv, img_size=64)
    face, age, index = dataset[1]
    name = dataset.labels.at[1, "name"]
    expected = face_to_tensor(load_image(dataset_config.val_dir / name), 64)
    assert torch.equal(face, expected)
    assert int(age) == dataset.labels.at[1, "age"]
    assert index == 1
    assert torch.equal(dataset[1][0], face)  # deterministic


def test_training_items_are_augmented_but_standardised_alike(dataset_config):
    dataset = FaceAgeDataset(dataset_config.train_dir, dataset_config.train_csv, img_size=64, augment=True)
    torch.manual_seed(0)
    first, second = dataset[0][0], dataset[0][0]
    assert first.shape == (3, 64, 64)
    assert not torch.equal(first, second)
    assert first.min() >= -1.0  # (x - 127.5) / 128 of 0..255 pixels
    assert first.max() <= 1.0


def test_datamodule_serves_shuffled_train_batches_and_ordered_complete_validation(dataset_config):
    module = FaceAgeDataModule(dataset_config)
    module.setup("fit")
    faces, ages, indices = next(iter(module.train_dataloader()))
    assert faces.shape == (4, 3, 64, 64)
    assert ages.shape == (4,)
    assert indices.shape == (4,)
    val_indices = torch.cat([batch[2] for batch in module.val_dataloader()])
    assert val_indices.tolist() == [0, 1, 2, 3]  # validation is ordered and complete


def test_a_single_sample_last_batch_is_dropped(tmp_path):
    config = make_dataset(tmp_path / "d", train=9, val=2, size=64)  # 9 = 2 batches of 4 + 1
    module = FaceAgeDataModule(config)
    module.setup("fit")
    assert [len(b[1]) for b in module.train_dataloader()] == [4, 4]
    assert [len(b[1]) for b in module.val_dataloader()] == [2]
