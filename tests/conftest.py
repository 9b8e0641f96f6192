"""Shared fixtures: the real CIFAR-10 archive beside the checkout, extracted once per session."""

from pathlib import Path

import pytest

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"
CIFAR_MISSING = (f"CIFAR-10 archive not found at {CIFAR} (../shared/data beside the checkout); "
                 "the checks on real CIFAR images are skipped")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One cache folder for the whole test session: the 60,000 JPEGs are unpacked once."""
    return str(tmp_path_factory.mktemp("ge2mst-cache"))
