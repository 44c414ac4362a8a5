"""Names and hashes of a bundle's ONNX files (shared by the exporter and the quantiser)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["block_name", "head_name", "sha256_file"]


def block_name(k: int) -> str:
    """Manifest key of block ``k`` (1-based) in ``onnx.variants.<precision>``."""
    return f"block_{k}"


def head_name(block: int) -> str:
    """Manifest key of the exit head after ``block``."""
    return f"head_{block}"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
