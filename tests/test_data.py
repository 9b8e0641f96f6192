"""Data loading: digits, ImageFolders, split folders, archives, and clear errors."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ge2mst.data import load_dataset, normalize
from ge2mst.errors import DataError

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def _folder(root: Path, classes=("cat", "ant", "bee"), per_class=4, size=(8, 8)) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i:03d}.png")
    return root


def test_image_folder_labels_follow_sorted_class_names_and_pixels_round_trip(tmp_path):
    root = _folder(tmp_path / "d")
    data = load_dataset(str(root))
    assert data.classes == ["ant", "bee", "cat"]
    assert data.images.shape == (12, 3, 8, 8) and data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    first = np.asarray(Image.open(root / "ant" / "000.png"), dtype=np.float32) / 255
    torch.testing.assert_close(data.images[0], torch.from_numpy(first).permute(2, 0, 1))


def test_limit_is_balanced_deterministic_and_seeded(tmp_path):
    root = _folder(tmp_path / "d", per_class=10)
    a = load_dataset(str(root), limit=6, seed=1)
    b = load_dataset(str(root), limit=6, seed=1)
    c = load_dataset(str(root), limit=6, seed=2)
    assert a.labels.bincount().tolist() == [2, 2, 2]
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_split_folders_and_archives_extracted_once(tmp_path):
    src = tmp_path / "src"
    _folder(src / "train")
    _folder(src / "test", per_class=2)
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "train", arcname="train")
        tar.add(src / "test", arcname="test")
    cache = tmp_path / "cache"
    test = load_dataset(str(archive), split="test", cache_dir=cache)
    assert len(test) == 6 and test.name.endswith("/test")
    extracted = next(cache.iterdir())
    stamp = (extracted / ".ge2mst-complete").stat().st_mtime_ns
    train = load_dataset(str(archive), split="train", cache_dir=cache)
    assert len(train) == 12
    assert (extracted / ".ge2mst-complete").stat().st_mtime_ns == stamp  # not extracted again
    with pytest.raises(DataError, match=r"split 'val' not found.*\['train', 'test'\]"):
        load_dataset(str(archive), split="val", cache_dir=cache)


def test_half_extracted_leftover_is_not_used(tmp_path):
    src = _folder(tmp_path / "src")
    archive = tmp_path / "set.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=".")
    cache = tmp_path / "cache"
    load_dataset(str(archive), cache_dir=cache)
    extracted = next(p for p in cache.iterdir() if not p.name.startswith("."))
    (extracted / ".ge2mst-complete").unlink()  # as if killed before the end
    for f in (extracted / "ant").iterdir():
        f.unlink()
    assert len(load_dataset(str(archive), cache_dir=cache)) == 12


@pytest.mark.parametrize("make,match", [
    (lambda p: p / "missing", "not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no class sub-folders"),
    (lambda p: (p / "e" / "a").mkdir(parents=True) or p / "e", "holds no images"),
])
def test_missing_and_empty_data(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_dataset(str(make(tmp_path)))


def test_corrupt_and_truncated_images_are_named(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "bee" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(DataError, match="bad.jpg"):
        load_dataset(str(root))
    (root / "bee" / "bad.jpg").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "cat" / "t.jpg")
    data = (root / "cat" / "t.jpg").read_bytes()
    (root / "cat" / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.jpg"):
        load_dataset(str(root))


def test_mixed_sizes_and_bad_archive_and_limit(tmp_path):
    root = _folder(tmp_path / "d")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "cat" / "big.png")
    with pytest.raises(DataError, match="share one size"):
        load_dataset(str(root))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="could not be extracted"):
        load_dataset(str(bad), cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="limit"):
        load_dataset("digits", limit=0)


def test_digits_split_is_fixed_disjoint_and_complete():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test", seed=5)
    assert len(train) + len(test) == 1797 and train.num_classes == 10
    assert train.images.shape[1:] == (1, 8, 8) and 0 <= train.images.min() <= train.images.max() <= 1
    assert torch.equal(load_dataset("digits", "test", seed=0).images, test.images)
    flat_train = {tuple(x.flatten().tolist()) for x in train.images}
    overlap = sum(tuple(x.flatten().tolist()) in flat_train for x in test.images)
    assert overlap < 10  # only a few digits are pixel-identical across the split


def test_normalize_and_channel_stats(tmp_path):
    data = load_dataset(str(_folder(tmp_path / "d")))
    mean, std = data.channel_stats()
    z = normalize(data.images, mean, std)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    batches = list(data.batches(5, shuffle=True, seed=0))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    with pytest.raises(DataError):
        next(data.batches(0))


@pytest.mark.skipif(not CIFAR.is_file(), reason=f"CIFAR-10 archive not found at {CIFAR}")
def test_real_cifar_archive(tmp_path_factory):
    data = load_dataset(str(CIFAR), split="test", limit=100,
                        cache_dir=tmp_path_factory.mktemp("c"))
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck"
    assert data.images.shape == (100, 3, 32, 32)
    assert data.labels.bincount().tolist() == [10] * 10
