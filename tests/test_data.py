"""Data loading: digits, ImageFolders, split folders, archives, the limit choice, clear errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import ge2mst.data.folders as folders_module
from ge2mst.data import ImageDataset, load_dataset, normalize
from ge2mst.data.dataset import balanced_choice
from ge2mst.errors import DataError

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"
MARKER = ".ge2mst-complete"


def _pixels(seed: int, size=(8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _folder(root: Path, classes=("cat", "ant", "bee"), per_class=4, size=(8, 8)) -> Path:
    """An ImageFolder of random PNG images (lossless, so pixels can be compared exactly)."""
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_pixels(100 * k + i, size)).save(root / c / f"{i:03d}.png")
    return root


def _tar(archive: Path, members: dict[str, Path]) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for arcname, path in members.items():
            tar.add(path, arcname=arcname)
    return archive


def _raises(match: str, *args, **kwargs) -> str:
    """Call load_dataset, expect a one-line DataError matching ``match``, return its message."""
    with pytest.raises(DataError, match=match) as info:
        load_dataset(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _extracted(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if not p.name.startswith(".")]


# ---- ImageFolder ---------------------------------------------------------------------------------
def test_labels_follow_sorted_class_names_and_png_pixels_round_trip(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "ant" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    (root / "ant" / ".hidden.png").write_bytes(b"junk")  # ignored: hidden
    data = load_dataset(str(root))
    assert data.classes == ["ant", "bee", "cat"] and data.num_classes == 3
    assert data.labels.dtype == torch.int64 and data.images.dtype == torch.float32
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.images.shape == (12, 3, 8, 8) and len(data) == 12
    assert data.in_chans == 3 and data.image_size == (8, 8) and data.name == "d"
    for n, k in enumerate([1, 2, 0]):  # ant, bee, cat were made 2nd, 3rd, 1st
        for i in range(4):
            expected = torch.from_numpy(_pixels(100 * k + i)).permute(2, 0, 1).float() / 255
            got = data.images[4 * n + i]
            assert (got - expected).abs().max() <= 1 / 255 / 2
    assert data.images.min() >= 0 and data.images.max() <= 1


def test_mixed_extensions_and_modes_are_read_as_rgb(tmp_path):
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey, mode="L").save(root / "a" / "g.PNG")
    yy, xx = np.mgrid[0:8, 0:8]
    smooth = np.dstack([yy * 30, xx * 30, 255 - (xx + yy) * 15]).astype(np.uint8)
    Image.fromarray(smooth).save(root / "a" / "c.JPG", quality=95)
    Image.fromarray(_pixels(2)).save(root / "b" / "x.bmp")
    Image.fromarray(_pixels(3)).save(root / "b" / "y.webp", lossless=True)
    rgba = np.dstack([_pixels(4), np.full((8, 8), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "b" / "z.png")
    data = load_dataset(root)  # a Path works as well as a str
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    # files sorted by name within a class: a/c.JPG, a/g.PNG, b/x.bmp, b/y.webp, b/z.png
    g = data.images[1]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert torch.equal(torch.round(g[0] * 255).to(torch.uint8), torch.from_numpy(grey))
    for n, seed in [(2, 2), (3, 3), (4, 4)]:
        expected = torch.from_numpy(_pixels(seed)).permute(2, 0, 1).float() / 255
        assert (data.images[n] - expected).abs().max() <= 1 / 255 / 2
    jpeg = torch.from_numpy(smooth).permute(2, 0, 1).float() / 255
    assert (data.images[0] - jpeg).abs().mean() < 0.06  # lossy, but the same picture


def test_limit_is_balanced_deterministic_and_seeded(tmp_path):
    root = _folder(tmp_path / "d", per_class=10)
    a = load_dataset(str(root), limit=6, seed=1)
    b = load_dataset(str(root), limit=6, seed=1)
    c = load_dataset(str(root), limit=6, seed=2)
    assert a.labels.tolist() == [0, 1, 2, 0, 1, 2]  # classes take turns
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    full = load_dataset(str(root))
    rows = {tuple(x.flatten().tolist()) for x in full.images}
    assert all(tuple(x.flatten().tolist()) in rows for x in a.images)
    assert len({tuple(x.flatten().tolist()) for x in a.images}) == 6  # no image twice
    assert load_dataset(str(root), limit=7, seed=0).labels.bincount().tolist() == [3, 2, 2]
    assert torch.equal(load_dataset(str(root), limit=1000).images, full.images)


def test_limit_fills_up_from_larger_classes(tmp_path):
    root = _folder(tmp_path / "d", classes=("a", "b"), per_class=5)
    for f in sorted((root / "a").iterdir())[1:]:
        f.unlink()
    data = load_dataset(str(root), limit=4)
    assert data.labels.bincount().tolist() == [1, 3]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5), limit=st.integers(1, 40),
       seed=st.integers(0, 2**31))
def test_balanced_choice_properties(sizes, limit, seed):
    labels = [y for y, n in enumerate(sizes) for _ in range(n)]
    picked = balanced_choice(labels, limit, seed)
    assert len(picked) == min(limit, len(labels)) and len(set(picked)) == len(picked)
    counts = Counter(labels[i] for i in picked)
    short = [y for y, n in enumerate(sizes) if counts[y] < n]  # classes not used up
    if short:
        assert max(counts.values()) - min(counts[y] for y in short) <= 1
    assert picked == balanced_choice(labels, limit, seed)


def test_limit_decodes_only_the_chosen_files(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", per_class=20)
    decoded: list[str] = []
    real = folders_module._decode

    def counting(file):
        decoded.append(file)
        return real(file)

    monkeypatch.setattr(folders_module, "_decode", counting)
    data = load_dataset(str(root), limit=5, seed=3)
    assert len(decoded) == 5 and len(data) == 5


# ---- split folders and archives -----------------------------------------------------------------
def test_split_folders(tmp_path):
    root = tmp_path / "set"
    _folder(root / "train", per_class=3)
    _folder(root / "test", per_class=2)
    _folder(root / "val", classes=("ant", "bee", "cat"), per_class=1)
    assert len(load_dataset(str(root), "train")) == 9
    test = load_dataset(str(root))  # the default split is "test"
    assert len(test) == 6 and test.name == "set/test"
    assert len(load_dataset(str(root), "val")) == 3
    plain = _folder(tmp_path / "plain")
    assert len(load_dataset(str(plain), "train")) == len(load_dataset(str(plain), "test")) == 12


def test_missing_split_lists_the_present_ones(tmp_path):
    root = tmp_path / "set"
    _folder(root / "train", per_class=1)
    _folder(root / "test", per_class=1)
    message = _raises("split 'val' not found", str(root), "val")
    assert "present: train, test" in message


def test_archive_is_extracted_once_into_the_cache(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _folder(src / "train")
    _folder(src / "test", per_class=2)
    archive = _tar(tmp_path / "set.tar.gz", {"train": src / "train", "test": src / "test"})
    cache = tmp_path / "cache"
    test = load_dataset(str(archive), split="test", cache_dir=cache)
    assert len(test) == 6 and test.name == "set/test"
    assert torch.equal(test.images, load_dataset(str(src / "test")).images)
    (extracted,) = _extracted(cache)
    assert extracted.name.startswith("set-") and len(extracted.name) == len("set-") + 12
    marker = json.loads((extracted / MARKER).read_text())
    assert marker["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    stamp = (extracted / MARKER).stat().st_mtime_ns
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary left

    def no_second_extraction(*args, **kwargs):
        raise AssertionError("the archive was opened again")

    monkeypatch.setattr(tarfile, "open", no_second_extraction)
    train = load_dataset(str(archive), split="train", cache_dir=cache)
    assert len(train) == 12
    assert (extracted / MARKER).stat().st_mtime_ns == stamp
    assert _extracted(cache) == [extracted]


def test_cache_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "set.tgz", {".": _folder(tmp_path / "src")})
    monkeypatch.setenv("GE2MST_CACHE", str(tmp_path / "env-cache"))
    assert len(load_dataset(str(archive))) == 12
    assert len(_extracted(tmp_path / "env-cache")) == 1


def test_changed_archive_is_extracted_afresh(tmp_path):
    src = _folder(tmp_path / "src")
    archive = _tar(tmp_path / "set.tgz", {".": src})
    cache = tmp_path / "cache"
    assert len(load_dataset(str(archive), cache_dir=cache)) == 12
    _folder(tmp_path / "src2", per_class=2)
    _tar(archive, {".": tmp_path / "src2"})
    os.utime(archive, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert len(load_dataset(str(archive), cache_dir=cache)) == 6
    assert len(_extracted(cache)) == 2


def test_folder_without_marker_is_not_used(tmp_path):
    src = _folder(tmp_path / "src")
    archive = _tar(tmp_path / "set.tgz", {".": src})
    cache = tmp_path / "cache"
    load_dataset(str(archive), cache_dir=cache)
    (extracted,) = _extracted(cache)
    (extracted / MARKER).unlink()  # as if it had been left half-written
    for f in (extracted / "ant").iterdir():
        f.unlink()
    assert len(load_dataset(str(archive), cache_dir=cache)) == 12
    assert (extracted / MARKER).is_file() and len(list((extracted / "ant").iterdir())) == 4


def test_killed_extraction_leftover_is_ignored_and_cleaned(tmp_path):
    src = _folder(tmp_path / "src")
    archive = _tar(tmp_path / "set.tgz", {".": src})
    cache = tmp_path / "cache"
    load_dataset(str(archive), cache_dir=cache)
    (extracted,) = _extracted(cache)
    partial = cache / f".{extracted.name}.partial-killed"
    (partial / "ant").mkdir(parents=True)  # a temporary folder of an extraction killed midway
    old = time.time() - 2 * 3600
    os.utime(partial, (old, old))
    for p in cache.iterdir():
        if not p.name.startswith("."):
            shutil.rmtree(p)  # the complete one is gone: only the leftover remains
    data = load_dataset(str(archive), cache_dir=cache)
    assert len(data) == 12 and data.classes == ["ant", "bee", "cat"]
    assert not partial.exists()
    assert [p.name for p in cache.iterdir()] == [extracted.name]


def test_archive_with_one_wrapping_folder(tmp_path):
    src = tmp_path / "src" / "cifar-mini"
    _folder(src / "train", per_class=2)
    _folder(src / "test", per_class=1)
    archive = _tar(tmp_path / "mini.tar.gz", {"cifar-mini": src})
    test = load_dataset(str(archive), "test", cache_dir=tmp_path / "c")
    assert len(test) == 3 and test.name == "mini/test"
    one_class = _folder(tmp_path / "one" / "wrap", classes=("only",))
    archive = _tar(tmp_path / "one.tgz", {"wrap": one_class})
    data = load_dataset(str(archive), cache_dir=tmp_path / "c")
    assert data.classes == ["only"] and len(data) == 4


# ---- errors -------------------------------------------------------------------------------------
def test_unknown_spec_names_it_and_suggests_forms(tmp_path):
    message = _raises("not found", str(tmp_path / "nowhere"))
    assert "nowhere" in message and "'digits'" in message and ".tar.gz" in message
    _raises("not found", "")
    (tmp_path / "x.zip").write_bytes(b"PK")
    _raises(r"x\.zip.*not a \.tar\.gz", str(tmp_path / "x.zip"))


def test_empty_folders_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "empty" in _raises("no class sub-folders", str(tmp_path / "empty"))
    (tmp_path / "e" / "ok").mkdir(parents=True)
    Image.fromarray(_pixels(0)).save(tmp_path / "e" / "ok" / "0.png")
    (tmp_path / "e" / "hollow").mkdir()
    (tmp_path / "e" / "hollow" / "readme.txt").write_text("x")
    _raises("class folder 'hollow'.*holds no images", str(tmp_path / "e"))
    (tmp_path / "s" / "test").mkdir(parents=True)
    _raises(r"s/test'.*no class sub-folders", str(tmp_path / "s"), "test")


def test_corrupt_and_truncated_images_are_named(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "bee" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    _raises(r"bad\.jpg.*corrupt or truncated", str(root))
    (root / "bee" / "bad.jpg").unlink()
    buffer = io.BytesIO()
    Image.fromarray(_pixels(9)).save(buffer, format="JPEG")
    (root / "cat" / "t.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _raises(r"t\.jpg.*corrupt or truncated", str(root))
    (root / "cat" / "t.jpg").unlink()
    buffer = io.BytesIO()
    Image.fromarray(_pixels(9)).save(buffer, format="PNG")
    (root / "cat" / "t.png").write_bytes(buffer.getvalue()[:-40])
    _raises(r"t\.png.*corrupt or truncated", str(root))


def test_images_of_different_sizes_name_both(tmp_path):
    root = _folder(tmp_path / "d")
    Image.fromarray(_pixels(0, size=(9, 10))).save(root / "cat" / "big.png")
    message = _raises("share one size", str(root))
    assert "big.png' is 10x9" in message and "000.png' is 8x8" in message


def test_bad_archives_are_named(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not gzip")
    _raises(r"bad\.tar\.gz.*could not be extracted", str(bad), cache_dir=tmp_path / "c")
    good = _tar(tmp_path / "cut.tar.gz", {".": _folder(tmp_path / "src", per_class=30)})
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _raises(r"cut\.tar\.gz.*could not be extracted", str(good), cache_dir=tmp_path / "c")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    _raises(r"evil\.tar\.gz.*could not be extracted", str(evil), cache_dir=tmp_path / "c")
    assert not (tmp_path / "outside.txt").exists()
    assert _extracted(tmp_path / "c") == []  # nothing is left that looks complete
    assert [p for p in (tmp_path / "c").iterdir()] == []


@pytest.mark.parametrize("limit", [0, -3, 1.5, True, "5"])
def test_bad_limit(limit):
    _raises("limit must be a whole number >= 1", "digits", limit=limit)


def test_bad_split_for_digits_and_bad_batch_size():
    _raises("split 'dev'.*'digits'", "digits", "dev")
    data = load_dataset("digits", limit=3)
    for size in (0, -1, 2.0):
        with pytest.raises(DataError, match="batch size"):
            next(data.batches(size))


# ---- digits -------------------------------------------------------------------------------------
def test_digits_split_is_fixed_disjoint_complete_and_stratified():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test", seed=5)
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.num_classes == test.num_classes == 10 and train.classes[3] == "3"
    assert train.images.shape[1:] == test.images.shape[1:] == (1, 8, 8)
    assert train.in_chans == 1 and train.image_size == (8, 8)
    assert train.images.min() >= 0 and train.images.max() <= 1 and train.images.max() == 1
    assert torch.equal(load_dataset("digits", "test", seed=0).images, test.images)
    assert torch.equal(load_dataset("digits", "train", seed=9).labels, train.labels)
    assert torch.equal(load_dataset("digits", "val").images, test.images)
    # train + test is exactly the whole set (as multisets of (image, label)): disjoint, complete
    full = load_digits()
    whole = sorted((tuple(x.flatten()), int(y))
                   for x, y in zip(full.images / 16, full.target, strict=True))
    parts = sorted((tuple(x.flatten().double().numpy()), int(y))
                   for d in (train, test) for x, y in zip(d.images, d.labels, strict=True))
    assert parts == whole
    share = test.labels.bincount().double() / torch.from_numpy(np.bincount(full.target))
    assert (share - 0.2).abs().max() < 0.01  # stratified: 20 % of every class


def test_digits_limit_is_balanced_and_seeded():
    a = load_dataset("digits", "train", limit=50, seed=0)
    assert a.labels.bincount().tolist() == [5] * 10
    assert not torch.equal(a.images, load_dataset("digits", "train", limit=50, seed=1).images)


# ---- statistics, normalisation, batches ---------------------------------------------------------
def test_channel_stats_and_normalize(tmp_path):
    data = load_dataset(str(_folder(tmp_path / "d")))
    mean, std = data.channel_stats()
    torch.testing.assert_close(mean, data.images.mean((0, 2, 3)))
    torch.testing.assert_close(std, data.images.transpose(0, 1).flatten(1).std(1))
    z = normalize(data.images, mean, std)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.transpose(0, 1).flatten(1).std(1), torch.ones(3))
    torch.testing.assert_close(z[:, 2], (data.images[:, 2] - mean[2]) / std[2])
    lists = normalize(data.images, mean.tolist(), std.tolist())
    torch.testing.assert_close(lists, z)
    with pytest.raises(DataError, match="3 channels"):
        normalize(data.images, [0.5], [0.5, 0.5, 0.5])
    flat = ImageDataset(torch.full((2, 1, 3, 3), 0.25), torch.zeros(2, dtype=torch.int64), ["a"],
                        "flat")
    mean, std = flat.channel_stats()
    assert mean.tolist() == [0.25] and std.tolist() == [pytest.approx(1e-6)]


def test_batches_in_order_and_shuffled(tmp_path):
    data = load_dataset(str(_folder(tmp_path / "d")))
    batches = list(data.batches(5))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), data.images)
    assert torch.equal(torch.cat([y for _, y in batches]), data.labels)
    shuffled = list(data.batches(5, shuffle=True, seed=0))
    images = torch.cat([x for x, _ in shuffled])
    assert not torch.equal(images, data.images)
    order = [next(i for i in range(12) if torch.equal(data.images[i], x)) for x in images]
    assert sorted(order) == list(range(12))
    assert torch.equal(torch.cat([y for _, y in shuffled]), data.labels[order])
    again = torch.cat([x for x, _ in data.batches(5, shuffle=True, seed=0)])
    other = torch.cat([x for x, _ in data.batches(5, shuffle=True, seed=1)])
    assert torch.equal(again, images) and not torch.equal(other, images)


# ---- the real data set --------------------------------------------------------------------------
@pytest.mark.cifar
@pytest.mark.skipif(not CIFAR.is_file(), reason=f"CIFAR-10 archive not found at {CIFAR}")
def test_real_cifar_archive(cache_dir):
    data = load_dataset(str(CIFAR), split="test", limit=100, cache_dir=cache_dir)
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"]
    assert data.images.shape == (100, 3, 32, 32) and data.name == "cifar10-jpg/test"
    assert data.labels.bincount().tolist() == [10] * 10
    assert 0.2 < data.images.mean() < 0.8 and data.images.std() > 0.1
