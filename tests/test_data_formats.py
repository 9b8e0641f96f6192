"""CIFAR python batches (folders, archives, a mocked download) and DVS event recordings."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import ge2mst.data.cifar as cb
from ge2mst.data import load_dataset
from ge2mst.data.dvs import Events, events_to_frames, load_dvs, read_events
from ge2mst.errors import DataError

# ---- CIFAR python batches -----------------------------------------------------------------------


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _cifar10(root: Path, per_batch=4) -> tuple[Path, dict]:
    """A tiny cifar-10-batches-py folder; returns it and {file: (rows, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"c{i}".encode() for i in range(10)]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    content = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rows = _rows(per_batch, k)
        labels = [(k + i) % 10 for i in range(per_batch)]
        _dump(folder / name, {b"batch_label": b"x", b"data": rows, b"labels": labels,
                              b"filenames": [b"f"] * per_batch})
        content[name] = (rows, labels)
    return folder, content


def _cifar100(root: Path) -> tuple[Path, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    _dump(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"k{i}".encode() for i in range(20)]})
    content = {}
    for k, (name, n) in enumerate([("train", 6), ("test", 3)]):
        rows = _rows(n, 50 + k)
        fine = [(7 * i + k) % 100 for i in range(n)]
        _dump(folder / name, {b"data": rows, b"fine_labels": fine, b"coarse_labels": [0] * n})
        content[name] = (rows, fine)
    return folder, content


def _expected(rows: np.ndarray) -> torch.Tensor:
    """Channel-major rows to N x 3 x 32 x 32 in [0, 1], element by element."""
    out = np.empty((len(rows), 3, 32, 32), dtype=np.float32)
    for n in range(len(rows)):
        for c in range(3):
            for i in range(32):
                out[n, c, i] = rows[n, c * 1024 + i * 32: c * 1024 + i * 32 + 32] / np.float32(255)
    return torch.from_numpy(out)


def test_cifar10_folder_layout_and_splits(tmp_path):
    folder, content = _cifar10(tmp_path)
    for where in (folder, tmp_path):  # the batches folder or its parent
        test = load_dataset(where, split="test")
        rows, labels = content["test_batch"]
        assert test.images.shape == (4, 3, 32, 32) and test.images.dtype == torch.float32
        assert torch.equal(test.images, _expected(rows))
        assert test.labels.tolist() == labels and test.labels.dtype == torch.int64
        assert test.classes == [f"c{i}" for i in range(10)] and test.name == "cifar10/test"
    train = load_dataset(folder, split="train")
    assert len(train) == 20 and train.name == "cifar10/train"
    rows = np.concatenate([content[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(train.images, _expected(rows))
    assert train.labels.tolist() == sum((content[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    val = load_dataset(folder, split="val")
    assert torch.equal(val.images, test.images)
    sub = load_dataset(folder, split="train", limit=5, seed=3)
    assert len(sub) == 5 and len(set(sub.labels.tolist())) == 5
    assert torch.equal(sub.images, load_dataset(folder, split="train", limit=5, seed=3).images)


def test_cifar100_layout(tmp_path):
    folder, content = _cifar100(tmp_path)
    train = load_dataset(tmp_path, split="train")
    assert train.name == "cifar100/train" and train.num_classes == 100
    assert train.classes[:3] == ["f0", "f1", "f2"]
    assert torch.equal(train.images, _expected(content["train"][0]))
    assert train.labels.tolist() == content["train"][1]
    test = cb.load_cifar_batches(folder, "test")
    assert test.labels.tolist() == content["test"][1]


def _tar(src: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=src.name)
    return archive


def test_cifar_archive(tmp_path):
    folder, content = _cifar10(tmp_path / "src")
    archive = _tar(folder, tmp_path / "cifar-10-python.tar.gz")
    ds = load_dataset(archive, split="test", cache_dir=tmp_path / "cache")
    assert torch.equal(ds.images, _expected(content["test_batch"][0]))
    again = cb.load_cifar_batches(archive, "train", cache_dir=tmp_path / "cache")
    assert len(again) == 20


def _serve(monkeypatch, payload: bytes | Exception, calls: list):
    def fake_urlopen(url, timeout=None):
        calls.append(url)
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)


def test_download_good_md5_then_load(tmp_path, monkeypatch):
    folder, content = _cifar10(tmp_path / "src")
    payload = _tar(folder, tmp_path / "a.tar.gz").read_bytes()
    good = dataclasses.replace(cb.SOURCES["cifar10"], md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(cb.SOURCES, "cifar10", good)
    calls: list = []
    _serve(monkeypatch, payload, calls)
    cache = tmp_path / "cache"
    ds = load_dataset("cifar10", split="test", cache_dir=cache)
    assert calls == [good.url]
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == payload
    assert torch.equal(ds.images, _expected(content["test_batch"][0]))
    assert not [p for p in os.listdir(cache) if ".partial-" in p]
    load_dataset("cifar10", split="train", cache_dir=cache)  # no second download
    assert len(calls) == 1


def test_download_bad_md5_leaves_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, b"not the archive", [])
    with pytest.raises(DataError, match="md5"):
        cb.download_cifar("cifar100", tmp_path / "d")
    assert os.listdir(tmp_path / "d") == []


def test_download_offline_names_data_dir(tmp_path, monkeypatch):
    _serve(monkeypatch, urllib.error.URLError("no network"), [])
    with pytest.raises(DataError, match="--data-dir") as info:
        load_dataset("cifar100", cache_dir=tmp_path / "d")
    assert "\n" not in str(info.value) and "cifar-100-python.tar.gz" in str(info.value)
    assert os.listdir(tmp_path / "d") == []
    with pytest.raises(DataError, match="unknown CIFAR"):
        cb.download_cifar("cifar5", tmp_path)


def test_corrupt_cifar_files(tmp_path):
    folder, _ = _cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(folder, split="test")
    _dump(folder / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="test_batch.*3072"):
        load_dataset(folder, split="test")
    _dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(DataError, match="labels"):
        load_dataset(folder, split="test")
    _dump(folder / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]})
    with pytest.raises(DataError, match="outside"):
        load_dataset(folder, split="test")
    (folder / "test_batch").write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(DataError, match="corrupt"):  # foreign globals are refused
        load_dataset(folder, split="test")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset(folder, split="train")
    with pytest.raises(DataError, match="split"):
        load_dataset(folder, split="dev")


def test_frames_only_for_events(tmp_path):
    with pytest.raises(DataError, match="--frames applies to event data only"):
        load_dataset("digits", frames=4)
    folder, _ = _cifar10(tmp_path)
    with pytest.raises(DataError, match="--frames applies to event data only"):
        load_dataset(folder, frames=4)
    with pytest.raises(DataError, match="--event-size applies to event data only"):
        load_dataset("digits", event_size=16)


# ---- DVS events ---------------------------------------------------------------------------------
def _npz(path: Path, t, x, y, p) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, t=np.asarray(t, np.int64), x=np.asarray(x, np.int16),
             y=np.asarray(y, np.int16), p=np.asarray(p, np.uint8))
    return path


def _aedat(path: Path, t, x, y, p) -> Path:
    """AEDAT 2.0: '#' header lines, then big-endian (address, timestamp) uint32 pairs with
    address = y << 8 | (127 - x) << 1 | p (the layout ge2mst.data.dvs documents)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = b"".join(struct.pack(">II", (yy << 8) | ((127 - xx) << 1) | pp, tt)
                    for tt, xx, yy, pp in zip(t, x, y, p, strict=True))
    path.write_bytes(b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + body)
    return path


T5 = [0, 10, 20, 30, 99]
X5 = [1, 2, 1, 3, 127]
Y5 = [0, 5, 0, 7, 127]
P5 = [1, 0, 1, 1, 0]


@pytest.mark.parametrize("writer", [_npz, _aedat])
def test_readers_agree(tmp_path, writer):
    ev = read_events(writer(tmp_path / f"r{writer.__name__}{'.npz' if writer is _npz else '.aedat'}",
                            T5, X5, Y5, P5))
    assert ev.t.tolist() == T5 and ev.x.tolist() == X5 and ev.y.tolist() == Y5
    assert ev.p.tolist() == P5


def test_frames_by_number_and_time():
    ev = Events(*(np.asarray(a) for a in (T5, X5, Y5, P5)))
    by_number = events_to_frames(ev, 2, split_by="number")
    assert by_number.shape == (2, 2, 128, 128) and by_number.dtype == torch.float32
    want = torch.zeros(2, 2, 128, 128)
    # event i of 5 goes to slice floor(2 i / 5): 0, 0, 0, 1, 1
    want[0, 1, 0, 1] = 2  # events 0 and 2
    want[0, 0, 5, 2] = 1
    want[1, 1, 7, 3] = 1
    want[1, 0, 127, 127] = 1
    assert torch.equal(by_number, want)
    by_time = events_to_frames(ev, 2, split_by="time")
    # span = 99 - 0 + 1 = 100: slice floor(2 t / 100) = 0, 0, 0, 0, 1
    want_t = torch.zeros(2, 2, 128, 128)
    want_t[0, 1, 0, 1] = 2
    want_t[0, 0, 5, 2] = 1
    want_t[0, 1, 7, 3] = 1
    want_t[1, 0, 127, 127] = 1
    assert torch.equal(by_time, want_t)
    assert torch.equal(events_to_frames(Events(*(np.zeros(0, np.int64),) * 4), 3, 4, 4),
                       torch.zeros(3, 2, 4, 4))
    with pytest.raises(DataError, match="split_by"):
        events_to_frames(ev, 2, split_by="size")


def test_unsorted_and_bad_event_files(tmp_path):
    ev = read_events(_npz(tmp_path / "u.npz", [30, -5, 10], [0, 1, 2], [0, 0, 0], [1, 0, 1]))
    assert ev.t.tolist() == [-5, 10, 30] and ev.x.tolist() == [1, 2, 0]
    bad = tmp_path / "missing.npz"
    np.savez(bad, t=np.zeros(2), x=np.zeros(2))
    with pytest.raises(DataError, match="missing.npz.*y, p"):
        read_events(bad)
    far = _npz(tmp_path / "far.npz", [0, 1], [0, 200], [0, 0], [0, 1])
    with pytest.raises(DataError, match="far.npz.*outside"):
        events_to_frames(read_events(far), 2, file=far)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        read_events(tmp_path / "junk.npz")


def _dvs_set(root: Path, classes=("airplane", "bird", "cat"), per_class=10) -> Path:
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        for i in range(per_class):
            n = 40 + i
            args = (np.sort(rng.integers(0, 1000, n)), rng.integers(0, 128, n),
                    rng.integers(0, 128, n), rng.integers(0, 2, n))
            if (i + k) % 2:
                _npz(root / c / f"{i:03d}.npz", *args)
            else:
                _aedat(root / c / f"{i:03d}.aedat", *(a.tolist() for a in args))
    return root


def test_dvs_loader_shapes_and_split(tmp_path):
    root = _dvs_set(tmp_path / "dvs")
    train = load_dataset(root, split="train", frames=3)
    test = load_dataset(root, split="test", frames=3)
    assert train.images.shape == (27, 6, 128, 128) and test.images.shape == (3, 6, 128, 128)
    assert train.classes == ["airplane", "bird", "cat"] and test.labels.tolist() == [0, 1, 2]
    assert float(train.images.amax((1, 2, 3)).min()) == 1.0 and float(train.images.min()) >= 0
    # channel 2 t + p: the sample's frames are its events_to_frames counts over its maximum
    frames = events_to_frames(read_events(root / "cat" / "009.npz"), 3)
    assert torch.equal(test.images[2], (frames / frames.max()).view(6, 128, 128))
    default = load_dataset(root, split="test")
    assert default.in_chans == 20  # 10 frames by default
    pooled = load_dataset(root, split="test", frames=3, event_size=32)
    assert pooled.images.shape == (3, 6, 32, 32)
    expect = torch.nn.functional.avg_pool2d(frames.view(1, 6, 128, 128), 4)[0]
    torch.testing.assert_close(pooled.images[2], expect / expect.max())
    small = load_dvs(root, "train", frames=2, size=32, limit=4, seed=1, split_by="time")
    assert small.images.shape == (4, 4, 32, 32) and len(set(small.labels.tolist())) == 3
    assert float(small.images.amax((1, 2, 3)).min()) == 1.0


def test_dvs_folder_errors(tmp_path):
    root = _dvs_set(tmp_path / "dvs", classes=("a", "b"), per_class=2)
    (root / "c").mkdir()
    with pytest.raises(DataError, match="'c'.*no .npz or .aedat"):
        load_dvs(root, "train", frames=2)
    (root / "c").rmdir()
    _npz(root / "b" / "009.npz", [0], [0], [500], [0])
    with pytest.raises(DataError, match="009.npz.*outside"):
        load_dvs(root, "test", frames=2)
    with pytest.raises(DataError, match="frames"):
        load_dvs(root, "test", frames=0)
