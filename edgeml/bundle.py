"""The on-disk bundle: the one contract edge, cloud, simulator and trainer all load.

A bundle is a directory with ``manifest.json``, ``weights.pt``, ``calibration.npz`` and
(after profiling) ``profile.json``, optionally ONNX files of the edge segments and exit
heads (``edgeml export``, recorded under the manifest's ``onnx``). Loading checks the
weights against the manifest's sha256, so an edge and a cloud that load the same bundle run
the very same network. ``Bundle.load(path, weights=False)`` reads everything but the
network (no torch import): what a torch-free ONNX edge uses; it still checks the weights'
hash when the file is there, and the ONNX runner checks the hashes of the files it opens.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeml import __version__
from edgeml.data.features import DEFAULT_FEATURE, FEATURES
from edgeml.data.preprocessing import FASHION_MNIST, Preprocessing
from edgeml.decision.scenario import EDGE_PRECISIONS, EDGE_RUNTIMES
from edgeml.errors import InputError
from edgeml.progressive.calibrate import Calibration

if TYPE_CHECKING:  # torch loads only when the network does (a torch-free edge never does)
    from edgeml.models.progressive_net import ProgressiveNet

log = logging.getLogger(__name__)

# 2: ``model.name`` may be a "package.module:factory" reference (+ ``model.progressive``,
# the cuts of a from_module net); ``preprocessing`` and ``difficulty_feature`` recorded.
# A version-1 bundle is read as one made on the built-in grey datasets (see _migrate).
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)
MANIFEST, WEIGHTS, CALIBRATION, PROFILE = (
    "manifest.json", "weights.pt", "calibration.npz", "profile.json",
)  # fmt: skip


class BundleError(InputError):
    """A bundle that is missing, malformed, or whose weights do not match its manifest."""


_KINDS: dict[type, str] = {
    int: "an integer", str: "a string", dict: "an object", list: "a list",
}  # fmt: skip


def _typed(where: str, value: Any, kind: type) -> Any:
    """``value`` if it is a ``kind`` (a bool is no integer), else a BundleError naming it."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(
            f"field {where!r} must be {_KINDS[kind]}, got {value!r} ({type(value).__name__})"
        )
    return value


def _field(d: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    where = f"{where}.{key}" if where else key
    if key not in d:
        raise BundleError(f"missing field {where!r}")
    return _typed(where, d[key], kind)


def _ints(d: dict[str, Any], key: str, where: str = "") -> tuple[int, ...]:
    items = _field(d, key, list, where)
    where = f"{where}.{key}" if where else key
    return tuple(_typed(f"{where}[{i}]", v, int) for i, v in enumerate(items))


@dataclass(frozen=True)
class CutPointInfo:
    """What crosses the link at split ``split`` (``split`` blocks ran on the edge)."""

    split: int
    shape: tuple[int, ...]
    dtype: str
    bytes: dict[str, int]  # per codec, for one input


def _migrate(d: dict[str, Any], version: int) -> dict[str, Any]:
    """A version-1 manifest as version 2: v1 bundles were all built on Fashion-MNIST or the
    scene stream (grey, Fashion-MNIST statistics) with the bright-pixel difficulty signal."""
    if version == 1:
        d = dict(d)
        shape = _ints(d, "input_shape")
        d.setdefault("preprocessing", FASHION_MNIST((shape[-2], shape[-1])).to_dict())
        d.setdefault("difficulty_feature", DEFAULT_FEATURE)
    return d


@dataclass
class Manifest:
    # {"name": zoo name | "package.module:factory" | entry point, "kwargs": {...},
    #  optional "progressive": {"exits_after": [cut nodes], "exit_heads": "default" | ref}}
    model: dict[str, Any]
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
    # colour, size, mean/std (edgeml.data.preprocessing); every side applies it to pixels
    preprocessing: dict[str, Any] = field(default_factory=dict)
    difficulty_feature: str = DEFAULT_FEATURE  # the edge's cheap signal (data.features)

    @property
    def prep(self) -> Preprocessing:
        """The :class:`Preprocessing` of this bundle's inputs."""
        if not self.preprocessing:
            return FASHION_MNIST((self.input_shape[-2], self.input_shape[-1]))
        return Preprocessing.from_dict(self.preprocessing)

    # {"opset", "weights_sha256", "variants": {precision: {name: {"path", "sha256"}}},
    #  optional "calibration": {"int8": {"path", "sha256"}}} (the int8 edge's own table)
    # written by edgeml.export.onnx; empty when the bundle has no ONNX files
    onnx: dict[str, Any] = field(default_factory=dict)

    def has_onnx(self, precision: str = "fp32") -> bool:
        """True when the manifest lists ONNX files for ``precision``."""
        return bool(self.onnx.get("variants", {}).get(precision))

    def edge_runtime(self, requested: str | None, precision: str = "fp32") -> str:
        """The edge's runtime label ``runtime/precision`` (``onnx/fp32``, ``torch/fp32``,
        ``onnx/int8``): ``requested`` if given (checked), else onnx when the bundle has the
        files for ``precision``, else torch. The cost model plans with this runtime's timings
        and the daemon runs it, so both resolve it here."""
        if precision not in EDGE_PRECISIONS:
            raise ValueError(
                f"edge_precision: {precision!r}; allowed: {', '.join(EDGE_PRECISIONS)}"
            )
        if requested is None:
            requested = "onnx" if self.has_onnx(precision) else "torch"
        if requested not in EDGE_RUNTIMES:
            raise ValueError(f"edge_runtime: {requested!r}; allowed: {', '.join(EDGE_RUNTIMES)}")
        if requested == "torch" and precision != "fp32":
            raise ValueError(f"edge_precision: {precision!r} needs edge_runtime onnx (torch: fp32)")
        return f"{requested}/{precision}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Parse a manifest; a missing or mistyped field is a BundleError that names it."""
        if not isinstance(d, dict):
            raise BundleError(f"must be a JSON object, got {type(d).__name__}")
        version = _field(d, "format_version", int)
        if version not in READS_VERSIONS:
            raise BundleError(
                f"format_version: bundle has {version}, this EdgeML reads "
                f"{list(READS_VERSIONS)}; rebuild it with `edgeml build`"
            )
        d = _migrate(d, version)
        model = _field(d, "model", dict)
        _field(model, "name", str, "model")
        if "kwargs" in model:
            _field(model, "kwargs", dict, "model")
        if "progressive" in model:
            _ = _field(_field(model, "progressive", dict, "model"), "exits_after", list,
                       "model.progressive")  # fmt: skip
        feature = _field(d, "difficulty_feature", str)
        if feature not in FEATURES:
            raise BundleError(f"difficulty_feature: {feature!r} is not one of {sorted(FEATURES)}")
        try:
            prep = Preprocessing.from_dict(_field(d, "preprocessing", dict))
        except InputError as exc:
            raise BundleError(str(exc)) from None
        cuts = []
        for i, c in enumerate(_field(d, "cut_points", list)):
            at = f"cut_points[{i}]"
            c = _typed(at, c, dict)
            sizes = _field(c, "bytes", dict, at)
            cuts.append(
                CutPointInfo(
                    _field(c, "split", int, at),
                    _ints(c, "shape", at),
                    _field(c, "dtype", str, at),
                    {str(k): _typed(f"{at}.bytes.{k}", v, int) for k, v in sizes.items()},
                )
            )
        m = cls(
            model=model, dataset=_field(d, "dataset", str), input_shape=_ints(d, "input_shape"),
            num_classes=_field(d, "num_classes", int), blocks=_field(d, "blocks", int),
            exits=_ints(d, "exits"), cut_points=cuts,
            weights_sha256=_field(d, "weights_sha256", str), format_version=version,
            edgeml_version=_field(d, "edgeml_version", str), created=_field(d, "created", str),
            build=_field(d, "build", dict) if "build" in d else {},
            preprocessing=prep.to_dict(), difficulty_feature=feature,
            onnx=_onnx_section(d["onnx"]) if "onnx" in d else {},
        )  # fmt: skip
        if prep.input_shape != m.input_shape:
            raise BundleError(
                f"preprocessing: gives inputs {prep.input_shape}, input_shape is "
                f"{list(m.input_shape)}"
            )
        if not m.exits or m.exits[-1] != m.blocks:
            raise BundleError(f"exits: last exit must be block {m.blocks}, got {list(m.exits)}")
        if [c.split for c in m.cut_points] != list(range(m.blocks + 1)):
            raise BundleError(f"cut_points: need one per split 0..{m.blocks}")
        return m

    @property
    def num_exits(self) -> int:
        return len(self.exits)


def _onnx_section(v: Any) -> dict[str, Any]:
    """The manifest's ``onnx`` field, checked field by field (see :class:`Manifest`)."""
    d = _typed("onnx", v, dict)
    if not d:
        return {}
    _field(d, "opset", int, "onnx")
    _field(d, "weights_sha256", str, "onnx")
    for prec, files in _field(d, "variants", dict, "onnx").items():
        at = f"onnx.variants.{prec}"
        for name, entry in _typed(at, files, dict).items():
            _field(_typed(f"{at}.{name}", entry, dict), "path", str, f"{at}.{name}")
            _field(entry, "sha256", str, f"{at}.{name}")
    for prec, entry in _typed("onnx.calibration", d.get("calibration", {}), dict).items():
        at = f"onnx.calibration.{prec}"
        _field(_typed(at, entry, dict), "path", str, at)
        _field(entry, "sha256", str, at)
    return d


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """A loaded bundle; ``net`` is in eval mode and shared read-only by its users (None when
    loaded with ``weights=False``)."""

    path: Path
    manifest: Manifest
    # None only from ``load(weights=False)`` (the ONNX edge, which never runs the torch net)
    net: ProgressiveNet
    calibration: Calibration | None
    profile: dict[str, Any] | None

    @property
    def weights_sha256(self) -> str:
        return self.manifest.weights_sha256

    def calibration_for(self, edge_runtime: str) -> Calibration:
        """The calibration table an edge running ``edge_runtime`` (``onnx/int8`` ...) plans
        with: the int8 edge's own (``onnx.calibration.int8``, hash-checked) when it runs int8
        and the bundle has one, else ``calibration.npz`` (torch and ONNX fp32 agree on it)."""
        if self.calibration is None:
            raise BundleError(f"{self.path}: no {CALIBRATION}; rebuild with `edgeml build`")
        if not edge_runtime.endswith("/int8"):
            return self.calibration
        entry = self.manifest.onnx.get("calibration", {}).get("int8")
        if entry is None:
            log.warning("%s: no onnx.calibration.int8; planning int8 with the fp32 table "
                        "(re-run `edgeml export %s --int8`)", self.path, self.path)  # fmt: skip
            return self.calibration
        path = self.path / entry["path"]
        if not path.is_file() or sha256_bytes(path.read_bytes()) != entry["sha256"]:
            raise BundleError(
                f"{path}: missing or not the manifest's onnx.calibration.int8.sha256; "
                f"re-run `edgeml export {self.path} --int8`"
            )
        cal = Calibration.load(path)
        if cal.pred.shape != self.calibration.pred.shape:
            raise BundleError(f"{path}: shape {cal.pred.shape}, calibration.npz has "
                              f"{self.calibration.pred.shape}")  # fmt: skip
        return cal

    @classmethod
    def load(cls, path: str | Path, need_calibration: bool = True, weights: bool = True) -> Bundle:
        """Load and verify; a hash mismatch is refused with a message that says so.

        ``weights=False`` skips building the network (and importing torch): ``net`` is None,
        ``weights.pt`` may be absent, and is still hash-checked when present.
        """
        path = Path(path)
        if not path.is_dir():
            raise BundleError(
                f"{path}: no such directory, so no {MANIFEST}; expected a bundle directory "
                "made by `edgeml build` (e.g. edgeml/assets/bundles/default)"
            )
        if not (path / MANIFEST).is_file():
            raise BundleError(f"{path}: no {MANIFEST}; is this a bundle made by `edgeml build`?")
        try:
            manifest = Manifest.from_dict(json.loads((path / MANIFEST).read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path / MANIFEST}: not valid JSON ({exc})") from None
        except BundleError as exc:
            raise BundleError(f"{path / MANIFEST}: {exc}") from None
        if not (path / WEIGHTS).is_file():
            if weights:
                raise BundleError(f"{path}: no {WEIGHTS}; rebuild the bundle with `edgeml build`")
            net = cast(Any, None)
        else:
            raw = (path / WEIGHTS).read_bytes()
            digest = sha256_bytes(raw)
            if digest != manifest.weights_sha256:
                raise BundleError(
                    f"{path / WEIGHTS}: sha256 {digest[:16]}... does not match the manifest's "
                    f"weights_sha256 {manifest.weights_sha256[:16]}...; the weights were "
                    "changed or belong to another bundle. Refusing to load."
                )
            net = cls._build_net(path, manifest, raw) if weights else cast(Any, None)
        cal = None
        if (path / CALIBRATION).is_file():
            cal = Calibration.load(path / CALIBRATION)
            if cal.num_exits != manifest.num_exits:
                raise BundleError(
                    f"{path / CALIBRATION}: {cal.num_exits} exits, manifest has "
                    f"{manifest.num_exits}; rebuild with `edgeml build`"
                )
        elif need_calibration:
            raise BundleError(f"{path}: no {CALIBRATION}; rebuild with `edgeml build`")
        profile = None
        if (path / PROFILE).is_file():
            try:
                profile = json.loads((path / PROFILE).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BundleError(
                    f"{path / PROFILE}: not valid JSON ({exc}); rerun `edgeml profile {path}`"
                ) from None
            if not isinstance(profile, dict):
                raise BundleError(
                    f"{path / PROFILE}: must be a JSON object; rerun `edgeml profile {path}`"
                )
        return cls(path, manifest, net, cal, profile)

    @staticmethod
    def _build_net(path: Path, manifest: Manifest, raw: bytes) -> ProgressiveNet:
        """The manifest's model with ``raw`` (weights.pt's bytes) loaded, in eval mode."""
        import torch

        from edgeml.partition.module_net import rebuild

        name, kwargs = manifest.model["name"], manifest.model.get("kwargs", {})
        try:
            net = rebuild(manifest.model, manifest.input_shape)
        except (ValueError, TypeError) as exc:  # InputError, PartitionError included
            raise BundleError(
                f"{path / MANIFEST}: field 'model' ({name!r}, kwargs {kwargs}) does not build: "
                f"{exc}"
            ) from None
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0][:200]
            raise BundleError(
                f"{path / WEIGHTS}: does not fit the manifest's model {name!r} ({first})"
            ) from None
        net.eval()
        if tuple(net.exits) != manifest.exits:
            raise BundleError(
                f"{path / MANIFEST}: field 'exits' is {list(manifest.exits)}, "
                f"the model {name!r} has exits {list(net.exits)}"
            )
        return net

    @staticmethod
    def save(
        path: str | Path,
        net: ProgressiveNet,
        manifest: Manifest,
        calibration: Calibration | None = None,
    ) -> Path:
        """Write weights, then the manifest with their hash (so a half-written bundle fails)."""
        import torch

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
