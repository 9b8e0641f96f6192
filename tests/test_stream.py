"""Streaming image folders: per-image transforms (deterministic per (seed, epoch, index)), the
streaming data set, its collation and statistics, and load_dataset's img_size."""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ge2mst.data.stream as stream_module
from ge2mst.data import (
    AUGMENT_OPS,
    EvalTransform,
    ImageDataset,
    StreamingImageFolder,
    TrainTransform,
    apply_op,
    collate_stream,
    decoded_bytes,
    load_dataset,
    load_image_folder,
    open_image,
    open_stream,
    open_stream_dataset,
    sample_rng,
)
from ge2mst.data.dataset import balanced_choice
from ge2mst.errors import ConfigError, DataError

GREY, RED, GREEN = (128, 128, 128), (255, 0, 0), (0, 255, 0)


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _folder(root: Path, sizes=((40, 90), (300, 120), (64, 64)), classes=("b", "a"),
            fmt="PNG") -> Path:
    """An ImageFolder whose images differ in size (h, w), one of each size per class."""
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            _noise(h, w, 10 * k + i).save(root / c / f"{i:02d}.{fmt.lower()}", format=fmt)
    return root


def _jpeg_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG")
    return buffer.getvalue()


# ---- transforms ---------------------------------------------------------------------------------
def test_sample_rng_is_a_function_of_its_three_numbers():
    a = sample_rng(5, 2, 7).integers(0, 2**62, 8)
    assert np.array_equal(a, sample_rng(5, 2, 7).integers(0, 2**62, 8))
    assert not np.array_equal(a, sample_rng(5, 2, 8).integers(0, 2**62, 8))
    assert not np.array_equal(a, sample_rng(5, 3, 7).integers(0, 2**62, 8))
    # a negative seed is taken modulo 2**63: valid, and not the seed of its absolute value
    neg = sample_rng(-1, 0, 0).integers(0, 2**62, 8)
    assert np.array_equal(neg, np.random.default_rng([2**63 - 1, 0, 0]).integers(0, 2**62, 8))
    assert not np.array_equal(neg, sample_rng(1, 0, 0).integers(0, 2**62, 8))
    with pytest.raises(ConfigError, match="epoch"):
        sample_rng(0, -1, 0)


@pytest.mark.parametrize("auto", [None, "trivial", "rand"])
def test_train_transform_repeats_for_the_same_seed_epoch_and_index(auto):
    img = _noise(90, 140)
    t = TrainTransform(32, auto_augment=auto, erase_prob=0.5)
    out = [t(img, sample_rng(3, epoch, index)).tobytes()
           for epoch, index in [(1, 4), (1, 4), (1, 5), (2, 4)]]
    assert out[0] == out[1]
    assert out[0] != out[2] and out[0] != out[3]


@pytest.mark.parametrize("size", [(40, 90), (300, 120), (1, 1), (7, 500)])
def test_every_input_size_and_mode_gives_size_by_size_rgb(size):
    img = _noise(*size)
    for mode in ("RGB", "L", "RGBA", "P", "CMYK"):
        src = img.convert(mode)
        for t in (TrainTransform(24, auto_augment="trivial", erase_prob=1.0),
                  TrainTransform(24, auto_augment="rand", rand_ops=3, rand_magnitude=30)):
            out = t(src, sample_rng(0, 0, 0))
            assert out.shape == (24, 24, 3) and out.dtype == np.uint8, (mode, t)
        out = EvalTransform(24)(src)
        assert out.shape == (24, 24, 3) and out.dtype == np.uint8
        if mode == "L":  # grey in, grey out
            assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    rgb = np.asarray(open_image(str(tmp_path / "w.png")))
    assert rgb.shape == (1, 4, 3) and rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_whole_image_crop_and_flip_match_a_plain_resize():
    img = Image.new("RGB", (64, 64), GREY)
    img.paste(RED, (8, 8, 24, 24))  # a marker in the top-left quadrant
    expected = np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR))
    whole = TrainTransform(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    flipped = TrainTransform(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)
    for index in range(5):
        assert np.array_equal(whole(img, sample_rng(0, 0, index)), expected)
        assert np.array_equal(flipped(img, sample_rng(0, 0, index)), expected[:, ::-1])
    assert (expected[8, 8] == RED).all() and (expected[8, -9] == GREY).all()


def test_a_crop_that_cannot_fit_falls_back_to_the_centre_clamped_to_the_ratio():
    img = Image.new("RGB", (300, 120), GREY)
    img.paste(GREEN, (0, 0, 60, 120))  # outside the centre 120 x 120 square
    img.paste(RED, (140, 50, 160, 70))  # in it
    t = TrainTransform(24, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)  # 190 x 190 won't fit
    out = t(img, sample_rng(0, 0, 0))
    oracle = np.asarray(img.resize((24, 24), Image.Resampling.BILINEAR, box=(90, 0, 210, 120)))
    assert np.array_equal(out, oracle)
    assert (out[12, 12] == RED).all() and not (out[..., 1] > 200).any()


def test_random_crops_of_a_marked_image_stay_inside_it():
    img = Image.new("RGB", (200, 160), GREY)
    img.paste(RED, (20, 20, 60, 60))
    t = TrainTransform(32, scale=(0.05, 0.2))
    seen = []
    for index in range(40):
        out = t(img, sample_rng(1, 0, index)).astype(int)
        r, g, b = out[..., 0], out[..., 1], out[..., 2]
        # every pixel is grey, red, or a bilinear mixture of the two
        assert (g == b).all() and (np.abs(r - (128 + 127 * (128 - g) / 128)) <= 2).all()
        seen.append(bool((r > 200).any()))
    assert 0 < sum(seen) < len(seen)  # the small crops land on the marker sometimes, not always


def test_eval_transform_matches_a_pillow_oracle():
    img = _noise(120, 301)
    # shorter side 120 -> round(32 / 0.875) = 37; 301 * 37 / 120 = 92.8 -> 93; crop at (30, 2)
    oracle = img.resize((93, 37), Image.Resampling.BILINEAR).crop((30, 2, 62, 34))
    assert np.array_equal(EvalTransform(32)(img), np.asarray(oracle))
    tall = _noise(301, 120, 1)
    # crop_ratio 1: shorter side 120 -> 32; 301 * 32 / 120 = 80.27 -> 80; crop at (0, 24)
    oracle = tall.resize((32, 80), Image.Resampling.BILINEAR).crop((0, 24, 32, 56))
    assert np.array_equal(EvalTransform(32, crop_ratio=1.0)(tall), np.asarray(oracle))


def test_erasing_changes_one_box_and_only_when_asked():
    img = _noise(80, 80)
    plain = TrainTransform(40, scale=(1.0, 1.0), ratio=(1.0, 1.0), erase_prob=0.0)
    erasing = TrainTransform(40, scale=(1.0, 1.0), ratio=(1.0, 1.0), erase_prob=1.0)
    for index in range(10):
        base = plain(img, sample_rng(0, 0, index))
        oracle = np.asarray(img.resize((40, 40), Image.Resampling.BILINEAR))
        assert np.array_equal(base, oracle) or np.array_equal(base, oracle[:, ::-1])
        changed = (erasing(img, sample_rng(0, 0, index)) != base).any(axis=2)
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        assert rows.size and cols.size
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert 0.01 * 1600 <= box <= 1600 / 3 + 41, box  # + rounding of the sides
        assert changed.sum() >= 0.9 * box  # one filled box, not scattered pixels


def test_every_augment_op_keeps_the_size_changes_the_image_and_is_identity_at_level_zero():
    img = _noise(30, 50)
    for op in AUGMENT_OPS:
        for wide in (False, True):
            strong = np.asarray(apply_op(img, op, -1.0, wide))
            assert strong.shape == (30, 50, 3)
            if op not in ("identity", "auto_contrast", "equalize"):
                assert not np.array_equal(strong, np.asarray(img)), op
        if op not in ("auto_contrast", "equalize"):  # these two ignore the level
            assert np.array_equal(np.asarray(apply_op(img, op, 0.0)), np.asarray(img)), op
    with pytest.raises(ConfigError, match="op must be one of"):
        apply_op(img, "invert", 0.5)


@pytest.mark.parametrize("make, match", [
    (lambda: TrainTransform(0), "size"),
    (lambda: TrainTransform(8, scale=(1.0, 0.5)), "scale"),
    (lambda: TrainTransform(8, scale=(0.5, 1.5)), "scale"),
    (lambda: TrainTransform(8, scale=(0.0, 1.0)), r"scale\[0\]"),
    (lambda: TrainTransform(8, ratio=(2.0, 1.0)), "ratio"),
    (lambda: TrainTransform(8, ratio=(math.nan, 1.0)), r"ratio\[0\]"),
    (lambda: TrainTransform(8, ratio=3.0), "ratio must be a pair"),
    (lambda: TrainTransform(8, hflip=math.nan), "hflip"),
    (lambda: TrainTransform(8, hflip=1.5), "hflip"),
    (lambda: TrainTransform(8, auto_augment="auto"), "auto_augment"),
    (lambda: TrainTransform(8, rand_ops=0), "rand_ops"),
    (lambda: TrainTransform(8, rand_magnitude=31), "rand_magnitude"),
    (lambda: TrainTransform(8, erase_prob=-0.1), "erase_prob"),
    (lambda: EvalTransform(0), "size"),
    (lambda: EvalTransform(8, crop_ratio=0.0), "crop_ratio"),
    (lambda: EvalTransform(8, crop_ratio=1.01), "crop_ratio"),
    (lambda: EvalTransform(8, crop_ratio=math.nan), "crop_ratio"),
])
def test_bad_transform_fields_raise_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


# ---- the streaming data set ---------------------------------------------------------------------
def test_items_attributes_and_keys(tmp_path):
    root = _folder(tmp_path / "d")
    data = open_stream(root, "d", 16, None, 0, TrainTransform(16))
    assert data.streaming and not ImageDataset.streaming
    assert (len(data), data.num_classes, data.in_chans, data.image_size) == (6, 2, 3, (16, 16))
    assert data.classes == ["a", "b"] and data.labels.dtype == torch.int64
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    image, label = data[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and label == 1
    assert torch.equal(data[-2][0], image)
    with Image.open(root / "b" / "01.png") as img:
        assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(EvalTransform(16)(img)))
    assert torch.equal(data[4, 3][0], data[4, 3][0]) and not torch.equal(data[4, 3][0], data[4, 2][0])
    with pytest.raises(IndexError):
        data[6]
    with pytest.raises(DataError, match="index must be an integer"):
        data["x"]
    with pytest.raises(DataError, match="training transform"):
        open_stream(root, "d", 16, None, 0, None)[0, 1]
    with pytest.raises(ConfigError, match="same size"):
        open_stream(root, "d", 16, None, 0, TrainTransform(8))


def test_dataloader_workers_draw_what_the_main_process_draws(tmp_path):
    data = open_stream(_folder(tmp_path / "d"), "d", 16, None, 7,
                       TrainTransform(16, auto_augment="trivial"))
    keys = [(i, 2) for i in range(len(data))]
    here = data.collate([data[k] for k in keys])
    loader = torch.utils.data.DataLoader(data, batch_size=len(keys), sampler=keys, num_workers=2,
                                         collate_fn=data.collate)
    there = next(iter(loader))
    assert torch.equal(here[0], there[0]) and torch.equal(here[1], there[1]) and there[2] == 0


def test_bad_files_name_themselves_or_are_skipped(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "a" / "03-corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    whole = _jpeg_bytes(_noise(50, 50))
    (root / "b" / "03-cut.jpg").write_bytes(whole[: len(whole) // 2])
    data = open_stream(root, "d", 16, None, 0, TrainTransform(16))
    bad = {i: Path(data.file(i)).name for i in range(len(data)) if "-" in Path(data.file(i)).name}
    assert sorted(bad.values()) == ["03-corrupt.jpg", "03-cut.jpg"]
    for i, name in bad.items():
        for key in (i, (i, 0)):
            with pytest.raises(DataError, match="corrupt or truncated") as info:
                data[key]
            assert name in str(info.value) and "\n" not in str(info.value)
    skipping = open_stream(root, "d", 16, None, 0, TrainTransform(16), skip_bad=True)
    (root / "a" / "00.png").unlink()  # listed, then gone
    with pytest.raises(DataError, match=r"00\.png' cannot be read"):
        data[0]
    assert all(skipping[i] is None for i in [0, *bad])
    images, labels, skipped = collate_stream([skipping[i] for i in range(len(skipping))])
    assert skipped == 3 and images.shape == (5, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1, 1]
    images, labels, skipped = skipping.collate([None, None])
    assert (images.shape, labels.shape, skipped) == ((0, 3, 16, 16), (0,), 2)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64


def test_open_stream_with_a_limit_is_balanced_and_decodes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "d"
    for c in "abc":
        (root / c).mkdir(parents=True)
        for i in range(10):
            (root / c / f"{i}.jpg").write_bytes(_jpeg_bytes(_noise(8, 8, i)))

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was opened")

    monkeypatch.setattr(Image, "open", no_decoding)
    data = open_stream(root, "d", 8, 7, 3, None)
    assert len(data) == 7 and sorted(Counter(data.labels.tolist()).values()) == [2, 2, 3]
    listed = sorted(str(p) for p in root.glob("*/*.jpg"))
    labels = [ord(Path(f).parent.name) - ord("a") for f in listed]
    assert [data.file(i) for i in range(7)] == [listed[i] for i in balanced_choice(labels, 7, 3)]
    monkeypatch.undo()
    assert data[0][0].shape == (3, 8, 8)


def test_channel_stats_of_the_whole_sample_equal_the_in_memory_ones(tmp_path):
    root = _folder(tmp_path / "d")
    stream = open_stream(root, "d", 12, None, 0, None)
    memory = load_image_folder(root, "d", None, 0, False, img_size=12)
    items = torch.stack([stream[i][0] for i in range(len(stream))])
    assert torch.equal(items.float() / 255.0, memory.images)  # the same pixels, in the same order
    for got, want in zip(stream.channel_stats(sample=100), memory.channel_stats(), strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=0) and got.dtype == torch.float32
    part = stream.channel_stats(sample=2)
    assert all(torch.equal(a, b) for a, b in zip(part, stream.channel_stats(sample=2), strict=True))


def test_channel_stats_only_decode_the_sample(tmp_path, monkeypatch):
    data = open_stream(_folder(tmp_path / "d"), "d", 8, None, 0, None)
    opened: list[str] = []
    real = stream_module.open_image
    monkeypatch.setattr(stream_module, "open_image", lambda f: opened.append(f) or real(f))
    data.channel_stats(sample=3)
    assert len(opened) == 3 and len({Path(f).parent.name for f in opened}) == 2


# ---- load_dataset / open_stream_dataset -----------------------------------------------------------
def test_load_dataset_with_img_size_loads_mixed_sizes(tmp_path):
    root = _folder(tmp_path / "d")
    with pytest.raises(DataError, match="--img-size"):
        load_dataset(root)
    data = load_dataset(root, img_size=20)
    assert data.images.shape == (6, 3, 20, 20)
    full = load_dataset(root, img_size=20, crop_ratio=1.0)
    with Image.open(root / "a" / "00.png") as img:
        first = torch.from_numpy(EvalTransform(20)(img)).permute(2, 0, 1).float() / 255.0
        whole = torch.from_numpy(EvalTransform(20, 1.0)(img)).permute(2, 0, 1).float() / 255.0
    assert torch.equal(data.images[0], first) and torch.equal(full.images[0], whole)
    assert not torch.equal(first, whole)


def test_load_dataset_img_size_resizes_digits_and_refuses_events(tmp_path):
    digits = load_dataset("digits", limit=20)
    assert torch.equal(load_dataset("digits", limit=20, img_size=8).images, digits.images)
    big = load_dataset("digits", limit=20, img_size=16).images
    assert big.shape == (20, 1, 16, 16) and 0 <= float(big.min()) and float(big.max()) <= 1
    assert torch.allclose(big.mean((2, 3)), digits.images.mean((2, 3)), atol=0.05)
    events = tmp_path / "ev" / "cls"
    events.mkdir(parents=True)
    np.savez(events / "0.npz", t=np.arange(3), x=np.zeros(3, np.int16), y=np.zeros(3, np.int16),
             p=np.ones(3, np.uint8))
    with pytest.raises(DataError, match="--event-size"):
        load_dataset(tmp_path / "ev", img_size=16)
    for spec in ("digits", "cifar10", str(tmp_path / "ev")):
        with pytest.raises(DataError, match="only image folders stream.*--data-mode memory"):
            open_stream_dataset(spec, "train", 16)


def test_open_stream_dataset_picks_the_split_folder(tmp_path):
    _folder(tmp_path / "set" / "train")
    _folder(tmp_path / "set" / "val", sizes=((30, 30),))
    data = open_stream_dataset(tmp_path / "set", "val", 16, train_transform=TrainTransform(16))
    assert isinstance(data, StreamingImageFolder) and data.name == "set/val" and len(data) == 2
    assert data[1, 0][0].shape == (3, 16, 16)
    assert decoded_bytes(1000, 224) == 1000 * 3 * 224 * 224 * 4
