"""How big the torch-free edge install is: a fresh venv with only ``pip install '.[edge]'``.

Two recipes, both from this checkout (non-editable, as a device gets it):

* ``plain`` -- ``python -m venv`` then ``pip install '.[edge]'``: what a user types. Its
  site-packages also holds the venv's own pip and setuptools and the bytecode pip compiles;
* ``lean`` -- a venv without pip, installed into by this interpreter's pip
  (``pip --python``) with ``--no-compile``: what ``deploy/Dockerfile.edge`` does. Python
  compiles what the edge imports when it starts instead.

Each is checked to run ``edgeml --help`` and ``edgeml edge --help`` and to have no torch,
then sized (``du``-style: the bytes of every file under site-packages), per package.

    .venv/bin/python bench/edge_install.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install(venv: Path, lean: bool) -> Path:
    """Create ``venv`` and install ``.[edge]`` into it; returns its site-packages."""
    if lean:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
        subprocess.run([*pip, "install", "-q", "--no-compile", f"{ROOT}[edge]"], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-q", f"{ROOT}[edge]"], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    return site


def check(venv: Path) -> None:
    """The edge CLI runs and torch is absent (raises otherwise)."""
    env = dict(os.environ, PYTHONPATH="")
    for args in (["--help"], ["edge", "--help"]):
        subprocess.run([str(venv / "bin" / "edgeml"), *args], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    probe = "import importlib.util as u; raise SystemExit(u.find_spec('torch') is not None)"
    subprocess.run([str(venv / "bin" / "python"), "-c", probe], env=env, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "results" / "edge_install.json")
    args = p.parse_args()
    result: dict[str, object] = {"python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("plain", "lean"):
            venv = Path(tmp) / name
            site = install(venv, lean=name == "lean")
            check(venv)
            per = {d.name: tree_bytes(d) if d.is_dir() else d.stat().st_size
                   for d in site.iterdir()}  # fmt: skip
            top = dict(sorted(per.items(), key=lambda kv: -kv[1])[:10])
            total = sum(per.values())
            largest = {k: round(v / 1e6, 1) for k, v in top.items()}
            result[name] = {"site_packages_mb": round(total / 1e6, 1), "largest_mb": largest}
            print(f"{name:<6} site-packages {total / 1e6:7.1f} MB  "
                  + ", ".join(f"{k} {v / 1e6:.0f}" for k, v in list(top.items())[:6]))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
