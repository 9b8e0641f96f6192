"""Image data without torchvision: the bundled digits, ImageFolder directories and their archives.

``load_dataset(spec, split, limit, seed)`` accepts

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
With ``limit``, a seeded, class-balanced subset is chosen before any file is decoded.
Every user-facing failure raises `DataError` with a one-line message.

The modules, imports pointing one way only: `load` (the dispatcher) imports the formats
`digits`, `folders`, `cifar` and `dvs`; they import `dataset` (`ImageDataset` and what every
loader shares) and `archive` (the cache and its extraction), and `dvs` the class-folder listing
of `folders`. `augment` (torch-only augmentation of batches) stands apart and is not
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
from .folders import IMAGE_EXTENSIONS, image_files, list_class_folders, load_image_folder, pick_split
from .load import load_dataset

__all__ = [
    "ARCHIVE_SUFFIXES", "CIFAR_SPECS", "DEFAULT_FRAMES", "DIGITS_SPEC", "EVENT_EXTENSIONS",
    "IMAGE_EXTENSIONS", "SENSOR_SIZE", "SOURCES", "SPLIT_BY", "SPLIT_NAMES", "TRAIN_FRACTION",
    "CifarSource", "Events", "ImageDataset", "download_cifar", "events_to_frames", "find_cifar_batches",
    "image_files", "is_event_folder", "list_class_folders", "load_cifar_batches", "load_dataset",
    "load_digits", "load_dvs", "load_image_folder", "load_named_cifar", "normalize", "pick_split",
    "read_aedat_events", "read_events", "read_npz_events",
]
