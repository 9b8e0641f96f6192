"""Image data without torchvision: the bundled digits, ImageFolder directories and their archives.

``load_dataset(spec, split, limit, seed, ..., img_size=None)`` accepts

- ``"digits"``: scikit-learn's bundled 8 x 8 handwritten digits (offline), with a fixed
  stratified 80 / 20 train / test split that never depends on ``seed`` (``"val"`` = ``"test"``);
- an ImageFolder directory ``<dir>/<class>/<image>`` (the ImageNet layout; labels follow the
  sorted class names; ``split`` is not used);
- a directory of split folders (``train/``, ``test/``, optionally ``val/``), each an ImageFolder;
- ``"cifar10"`` / ``"cifar100"``: the python batches in the cache folder, downloaded there when
  absent (`ge2mst.data.cifar`); a folder or archive in that layout is recognised too;
- event recordings ``<dir>/<class>/<file>.npz|.aedat`` (CIFAR10-DVS): ``2 * frames`` channel
  images of event counts, 90 / 10 train / test per class (`ge2mst.data.dvs`);
- a ``.tar.gz`` / ``.tgz`` archive of either, extracted once, atomically, into a cache folder
  (``cache_dir``, else ``$GE2MST_CACHE``, else ``~/.cache/ge2mst``). A single folder that wraps
  the whole content of an archive is looked through.

Images come back as float32 N x C x H x W in [0, 1] (RGB for folders, one channel for digits);
`normalize` applies per-channel statistics such as those of `ImageDataset.channel_stats`.
With ``limit``, a seeded, class-balanced subset is chosen before any file is decoded. With
``img_size``, folder images of any sizes are resized and centre-cropped as they are decoded
(`EvalTransform`), CIFAR and digits resized. Every user-facing failure raises `DataError` with a
one-line message.

ImageFolders too large to decode into memory stream instead: ``open_stream_dataset(spec, split,
img_size, ...)`` resolves the spec alike and returns a `StreamingImageFolder` (a torch
``Dataset`` that decodes image ``i`` on demand, ``data[i, epoch]`` through a `TrainTransform`
drawn from ``sample_rng(seed, epoch, i)``, ``data[i]`` through an `EvalTransform`);
`collate_stream` batches its items and `decoded_bytes` sizes the in-memory alternative.

The modules, imports pointing one way only: `load` (the dispatcher) imports the formats
`digits`, `folders`, `cifar` and `dvs`; they import `dataset` (`ImageDataset` and what every
loader shares) and `archive` (the cache and its extraction), and `dvs` the class-folder listing
of `folders`. `load` also imports `stream` (the streaming ImageFolder), which builds on the
listing and decoder of `folders`; both use `transforms` (per-image PIL transforms, deterministic
given a NumPy generator). `augment` (torch-only augmentation of batches) stands apart and is not
re-exported here.
"""

from .archive import ARCHIVE_SUFFIXES
from .cifar import (
    CIFAR_SPECS,
    SOURCES,
    CifarSource,
    download_cifar,
    find_cifar_batches,
    load_cifar_batches,
    load_named_cifar,
)
from .dataset import SPLIT_NAMES, ImageDataset, normalize
from .digits import DIGITS_SPEC, load_digits
from .dvs import (
    DEFAULT_FRAMES,
    EVENT_EXTENSIONS,
    SENSOR_SIZE,
    SPLIT_BY,
    TRAIN_FRACTION,
    Events,
    events_to_frames,
    is_event_folder,
    load_dvs,
    read_aedat_events,
    read_events,
    read_npz_events,
)
from .folders import (
    IMAGE_EXTENSIONS,
    image_files,
    list_class_folders,
    list_image_folder,
    load_image_folder,
    open_image,
    pick_split,
)
from .load import load_dataset, open_stream_dataset
from .stream import StreamingImageFolder, collate_stream, decoded_bytes, open_stream
from .transforms import (
    AUGMENT_OPS,
    AUTO_AUGMENTS,
    CROP_RATIO,
    MAGNITUDE_BINS,
    EvalTransform,
    TrainTransform,
    apply_op,
    sample_rng,
    to_rgb,
)

__all__ = [
    "ARCHIVE_SUFFIXES", "AUGMENT_OPS", "AUTO_AUGMENTS", "CIFAR_SPECS", "CROP_RATIO", "DEFAULT_FRAMES",
    "DIGITS_SPEC", "EVENT_EXTENSIONS", "IMAGE_EXTENSIONS", "MAGNITUDE_BINS", "SENSOR_SIZE",
    "SOURCES", "SPLIT_BY", "SPLIT_NAMES", "TRAIN_FRACTION", "CifarSource", "EvalTransform",
    "Events", "ImageDataset", "StreamingImageFolder", "TrainTransform", "apply_op",
    "collate_stream", "decoded_bytes", "download_cifar", "events_to_frames", "find_cifar_batches",
    "image_files", "is_event_folder", "list_class_folders", "list_image_folder",
    "load_cifar_batches", "load_dataset", "load_digits", "load_dvs", "load_image_folder",
    "load_named_cifar", "normalize", "open_image", "open_stream", "open_stream_dataset",
    "pick_split", "read_aedat_events", "read_events", "read_npz_events", "sample_rng", "to_rgb",
]
