"""The ``edgeml`` command: one thin sub-command per user task."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence

from edgeml import __version__

Handler = Callable[[argparse.Namespace], int]


def _cmd_build(args: argparse.Namespace) -> int:
    from edgeml.build import PRESETS, build_bundle

    cfg = copy.deepcopy(PRESETS[args.preset])
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    if args.train_size is not None:
        cfg.train_size = args.train_size
    cfg.threads = args.threads
    cfg.seed = cfg.train.seed = args.seed
    command = "edgeml " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    bundle = build_bundle(args.bundle, cfg, command=command)
    if not args.no_profile:
        from edgeml.partition.profiler import profile_bundle

        profile_bundle(bundle)
    print(json.dumps(bundle.manifest.build["test_accuracy"], indent=2))
    print(f"bundle written to {args.bundle}")
    return 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    from edgeml.build import PRESETS

    p = sub.add_parser(
        "build",
        help="train exits, calibrate, profile -> bundle",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("bundle", help="output bundle directory")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default: ResNet-style net on 96x96 scenes; fixture: B-VGG on 28x28",
    )
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--train-size", type=int, default=None, help="training samples per epoch")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-profile", action="store_true", help="skip writing profile.json")
    p.set_defaults(func=_cmd_build)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeml", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgeml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_build,):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
