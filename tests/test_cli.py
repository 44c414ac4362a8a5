"""The ``edgeml`` command's parser: every sub-command's --help comes up fast, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeml.build_config import PRESETS
from edgeml.cli import main

SUBCOMMANDS = ("build", "profile", "train-agent", "evaluate", "serve", "edge", "demo", "emulate")

# Builds the whole parser (every sub-command's defaults), then lists the heavy modules loaded.
PROBE = """
import sys
from edgeml.cli import make_parser
make_parser()
heavy = ("torch", "stable_baselines3", "grpc", "matplotlib")
print(",".join(m for m in heavy if m in sys.modules))
"""


def test_building_the_parser_imports_no_torch_sb3_grpc_or_matplotlib():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"the parser imported {out.stdout.strip()}"


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_build_offers_exactly_the_presets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "/tmp/unused", "--preset", "no-such-preset"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--preset" in err
    for name in PRESETS:
        assert repr(name) in err
