"""The on-disk bundle: the one contract edge, cloud, simulator and trainer all load.

A bundle is a directory with ``manifest.json``, ``weights.pt``, ``calibration.npz`` and
(after profiling) ``profile.json``. Loading checks the weights against the manifest's
sha256, so an edge and a cloud that load the same bundle run the very same network.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeml import __version__
from edgeml.models import build_model
from edgeml.models.progressive_net import ProgressiveNet
from edgeml.progressive.calibrate import Calibration

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST, WEIGHTS, CALIBRATION, PROFILE = (
    "manifest.json", "weights.pt", "calibration.npz", "profile.json",
)  # fmt: skip


class BundleError(ValueError):
    """A bundle that is missing, malformed, or whose weights do not match its manifest."""


@dataclass(frozen=True)
class CutPointInfo:
    """What crosses the link at split ``split`` (``split`` blocks ran on the edge)."""

    split: int
    shape: tuple[int, ...]
    dtype: str
    bytes: dict[str, int]  # per codec, for one input


@dataclass
class Manifest:
    model: dict[str, Any]  # {"name": zoo name, "kwargs": {...}}
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    blocks: int
    exits: tuple[int, ...]
    cut_points: list[CutPointInfo]
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION
    edgeml_version: str = __version__
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    build: dict[str, Any] = field(default_factory=dict)  # command, config, timings, accuracy

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        try:
            if d["format_version"] != FORMAT_VERSION:
                raise BundleError(
                    f"format_version: bundle has {d['format_version']}, this EdgeML reads "
                    f"{FORMAT_VERSION}; rebuild it with `edgeml build`"
                )
            cuts = [
                CutPointInfo(c["split"], tuple(c["shape"]), c["dtype"], dict(c["bytes"]))
                for c in d["cut_points"]
            ]
            m = cls(
                model=d["model"], dataset=d["dataset"], input_shape=tuple(d["input_shape"]),
                num_classes=int(d["num_classes"]), blocks=int(d["blocks"]),
                exits=tuple(d["exits"]), cut_points=cuts, weights_sha256=d["weights_sha256"],
                format_version=d["format_version"], edgeml_version=d["edgeml_version"],
                created=d["created"], build=d.get("build", {}),
            )  # fmt: skip
        except KeyError as exc:
            raise BundleError(f"manifest: missing field {exc.args[0]!r}") from None
        if not m.exits or m.exits[-1] != m.blocks:
            raise BundleError(f"exits: last exit must be block {m.blocks}, got {list(m.exits)}")
        if [c.split for c in m.cut_points] != list(range(m.blocks + 1)):
            raise BundleError(f"cut_points: need one per split 0..{m.blocks}")
        return m

    @property
    def num_exits(self) -> int:
        return len(self.exits)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """A loaded bundle; ``net`` is in eval mode and shared read-only by its users."""

    path: Path
    manifest: Manifest
    net: ProgressiveNet
    calibration: Calibration | None
    profile: dict[str, Any] | None

    @property
    def weights_sha256(self) -> str:
        return self.manifest.weights_sha256

    @classmethod
    def load(cls, path: str | Path, need_calibration: bool = True) -> Bundle:
        """Load and verify; a hash mismatch is refused with a message that says so."""
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise BundleError(f"{path}: no {MANIFEST}; is this a bundle made by `edgeml build`?")
        try:
            manifest = Manifest.from_dict(json.loads((path / MANIFEST).read_text()))
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path / MANIFEST}: not valid JSON ({exc})") from None
        raw = (path / WEIGHTS).read_bytes()
        digest = sha256_bytes(raw)
        if digest != manifest.weights_sha256:
            raise BundleError(
                f"{path / WEIGHTS}: sha256 {digest[:16]}... does not match the manifest's "
                f"weights_sha256 {manifest.weights_sha256[:16]}...; the weights were changed "
                "or belong to another bundle. Refusing to load."
            )
        net = build_model(manifest.model["name"], **manifest.model.get("kwargs", {}))
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.eval()
        if tuple(net.exits) != manifest.exits:
            raise BundleError(f"exits: model has {net.exits}, manifest says {manifest.exits}")
        cal = None
        if (path / CALIBRATION).is_file():
            cal = Calibration.load(path / CALIBRATION)
            if cal.num_exits != manifest.num_exits:
                raise BundleError(
                    f"{CALIBRATION}: {cal.num_exits} exits, manifest has {manifest.num_exits}"
                )
        elif need_calibration:
            raise BundleError(f"{path}: no {CALIBRATION}; rebuild with `edgeml build`")
        profile = None
        if (path / PROFILE).is_file():
            profile = json.loads((path / PROFILE).read_text())
        return cls(path, manifest, net, cal, profile)

    @staticmethod
    def save(
        path: str | Path,
        net: ProgressiveNet,
        manifest: Manifest,
        calibration: Calibration | None = None,
    ) -> Path:
        """Write weights, then the manifest with their hash (so a half-written bundle fails)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        raw = buf.getvalue()
        (path / WEIGHTS).write_bytes(raw)
        manifest.weights_sha256 = sha256_bytes(raw)
        if calibration is not None:
            calibration.save(path / CALIBRATION)
        (path / MANIFEST).write_text(manifest.to_json() + "\n")
        log.info("wrote bundle %s (%d bytes of weights)", path, len(raw))
        return path

    def save_profile(self, profile: dict[str, Any]) -> None:
        (self.path / PROFILE).write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n")
        self.profile = profile
