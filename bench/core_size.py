"""How big the decision core and its adapters are, against the code they replaced.

Counts the lines of each file at a git revision two ways: all lines, and code lines (no
blank line, comment or docstring), since the consolidation also asked for module
docstrings that say what and why. ``before`` is the set the decision core replaced, as the
issue lists it (env, baselines, tables, cost, the runtime's policy, observation, compare and
edge), plus the modules that moved into the core (the actor, the observation) and the
evaluation's policy classes, at the commit before the core (6411e59^); ``core`` is the
decision core and its adapters at a later revision: at 6411e59 itself, the same concerns
before fleets, the ONNX edge and the live calibration were added; at HEAD, with them.

    .venv/bin/python bench/core_size.py                      # 6411e59^ against 6411e59 and HEAD
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import subprocess
import tokenize
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEFORE = (
    "edgeml/rl_agent/env.py", "edgeml/rl_agent/baselines.py", "edgeml/rl_agent/tables.py",
    "edgeml/partition/cost.py", "edgeml/runtime/policy.py", "edgeml/runtime/observation.py",
    "edgeml/runtime/compare.py", "edgeml/runtime/edge.py", "edgeml/rl_agent/actor.py",
    "edgeml/rl_agent/observation.py", "edgeml/rl_agent/evaluate.py",
)  # fmt: skip
# the core's adapters; the daemon's modules split out of edge.py count with it
ADAPTERS = (
    "edgeml/rl_agent/env.py", "edgeml/partition/cost.py", "edgeml/runtime/compare.py",
    "edgeml/runtime/edge.py", "edgeml/runtime/edge_input.py", "edgeml/runtime/cloud_link.py",
    "edgeml/runtime/records.py", "edgeml/runtime/edge_config.py", "edgeml/rl_agent/evaluate.py",
)  # fmt: skip


def code_lines(src: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    docs: set[int] = set()
    for node in ast.walk(ast.parse(src)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in skip and tok.type != tokenize.ENDMARKER:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return len(lines)


def size(rev: str, paths: list[str]) -> dict[str, dict[str, int]]:
    """``{path: {"lines", "code"}}`` for each path that exists at ``rev``."""
    out = {}
    for path in paths:
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:
            out[path] = {"lines": len(shown.stdout.splitlines()), "code": code_lines(shown.stdout)}
    return out


def core_files(rev: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", rev, "edgeml/decision/"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [p for p in listed if p.endswith(".py")] + list(ADAPTERS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="6411e59^")
    p.add_argument("--after", default="6411e59,HEAD")
    p.add_argument("--out", type=Path, default=HERE / "results" / "core_size.json")
    args = p.parse_args()
    sets = {f"replaced ({args.before})": size(args.before, list(BEFORE))}
    for rev in args.after.split(","):
        sets[f"core + adapters ({rev})"] = size(rev, core_files(rev))
    print("| set | files | lines | code lines |\n|---|---|---|---|")
    for name, files in sets.items():
        lines = sum(f["lines"] for f in files.values())
        code = sum(f["code"] for f in files.values())
        print(f"| {name} | {len(files)} | {lines} | {code} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(sets, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
