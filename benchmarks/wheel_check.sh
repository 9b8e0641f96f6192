#!/usr/bin/env bash
# create_model(..., pretrained=True) from an installed wheel in a clean virtual environment.
#
#   bash benchmarks/wheel_check.sh [MODEL]
#
# Builds the wheel from this checkout, installs it with its dependencies into a fresh venv
# (torch==2.13.0 where this machine keeps that CPU build; TORCH_SPEC=... to choose another), then,
# from a folder outside the checkout, loads every shipped model (or MODEL) with pretrained=True,
# checks its sha256 against the index and runs one image through it and through its spiking
# network. Prints one line per model; exits non-zero on any failure.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip wheel setuptools
"$work/venv/bin/pip" wheel -q --no-deps -w "$work/dist" "$repo"
"$work/venv/bin/pip" install -q "${TORCH_SPEC:-torch==2.13.0}" "$work"/dist/ge2mst-*.whl
cd "$work"
"$work/venv/bin/python" - "${1:-}" <<'PY'
import sys

import torch

import ge2mst
from ge2mst.models.pretrained import shipped_weights

assert "site-packages" in ge2mst.__file__, ge2mst.__file__  # the wheel, not the checkout
index = shipped_weights()
names = [sys.argv[1]] if sys.argv[1] else sorted(index)
if not names:
    sys.exit("no shipped weights in the installed wheel")
for name in names:
    model = ge2mst.create_model(name, pretrained=True).eval()
    assert model.pretrained_cfg["sha256"] == index[name]["sha256"]
    size = getattr(model, "img_size", 32)
    x = torch.randn(1, 3, size, size)
    snn = ge2mst.convert(model)
    with torch.no_grad():
        ann, spk = model(x), snn(x)
    print(f"{name}: loaded from {ge2mst.__file__.rsplit('/', 2)[0]} (sha256 ok), "
          f"ANN/SNN argmax {int(ann.argmax())}/{int(spk.argmax())}")
PY
