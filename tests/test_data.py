"""Dataset loader errors, scene-stream determinism, split separation."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeml.data import fashion_mnist as fm
from edgeml.data.features import difficulty_feature
from edgeml.data.scenes import FRAME, SceneStream
from edgeml.data.torch_datasets import normalize


def test_official_splits_load() -> None:
    train, test = fm.load_fashion_mnist("train"), fm.load_fashion_mnist("test")
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert set(np.unique(train.labels)) == set(range(10))


def test_missing_files_name_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEML_DATA", str(tmp_path))
    fm.load_fashion_mnist.cache_clear()
    try:
        with pytest.raises(fm.DatasetMissingError, match="dataset-fashion-mnist"):
            fm.load_fashion_mnist("test")
    finally:
        fm.load_fashion_mnist.cache_clear()


def test_corrupt_idx_is_refused(tmp_path: Path) -> None:
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(fm.DEFAULT_DIR / name, tmp_path / name)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"\x00" * 8)  # image magic in the label file
    with pytest.raises(ValueError, match="bad IDX magic"):
        fm.load_fashion_mnist("test", str(tmp_path))


def test_unknown_split_names_allowed_values() -> None:
    with pytest.raises(ValueError, match="split.*'test', 'train', 'val'"):
        fm.source_split("dev")


def test_scene_stream_is_deterministic() -> None:
    a, b = SceneStream("val", seed=3), SceneStream("val", seed=3)
    for i in (0, 17, 12_345):
        fa, fb = a.frame(i), b.frame(i)
        assert np.array_equal(fa.image, fb.image) and fa.label == fb.label and fa.level == fb.level
    assert not np.array_equal(a.frame(0).image, SceneStream("val", seed=4).frame(0).image)
    f = a.frame(5, level=2)
    assert f.image.shape == (FRAME, FRAME) and f.image.dtype == np.float32 and f.level == 2
    assert f.image.min() >= 0.0 and f.image.max() <= 1.0


def test_clutter_raises_difficulty_feature() -> None:
    s = SceneStream("test", seed=0)
    means = []
    for level in range(5):
        imgs = np.stack([s.frame(i, level).image for i in range(40)])[:, None]
        means.append(difficulty_feature(normalize(imgs)).mean())
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means


def test_splits_never_share_source_images() -> None:
    train, val, test = (fm.source_split(s) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 60_000

    # Distinct sources: hash every image and check the split sets are disjoint.
    def hashes(s: fm.ImageSet) -> set[bytes]:
        return {img.tobytes() for img in s.images[:3000]}

    assert not hashes(val) & {img.tobytes() for img in train.images}
    assert len(hashes(test) & hashes(train)) <= 1  # the official sets hold 1 known duplicate


def test_scene_uses_only_its_split() -> None:
    s = SceneStream("val", seed=0)
    assert all(0 <= s.frame(i).source_index < len(s.source) for i in range(50))
    assert s.source.images.shape[0] == fm.VAL_SIZE
    with pytest.raises(ValueError, match="level"):
        s.frame(0, level=5)
