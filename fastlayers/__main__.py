"""The fastlayers command line: `python -m fastlayers <command> [options]`.

    python -m fastlayers bench [--quick] [--filter conv]   kernel speed against torch
    python -m fastlayers train --model mnist_cnn [--data DIR] [--epochs N] [--out DIR]
                                                          train a reference model (also under torchrun)
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m fastlayers", description="fastlayers command line")
    parser.add_argument("command", choices=["bench", "train"],
                        help="bench: time every layer against torch; train: train a reference model (see <command> --help)")
    args, rest = parser.parse_known_args(argv[:1])
    if args.command == "bench":
        from . import bench

        return bench.main(argv[1:] + rest)
    if args.command == "train":
        from . import train

        return train.main(argv[1:] + rest)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
