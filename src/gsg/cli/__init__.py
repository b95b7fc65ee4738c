"""The ``gsg`` command. The only package that parses arguments or prints for a human.

``parser`` builds the subcommands; ``train``, ``evaluate`` and ``tools`` hold the functions they run.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Sequence

from gsg.cli.parser import build_parser
from gsg.cli.train import PRETRAIN_FLAGS, _overrides
from gsg.errors import GsgError

__all__ = ["PRETRAIN_FLAGS", "_overrides", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "gsg " + shlex.join(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args))
    except GsgError as exc:
        print(f"gsg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gsg: interrupted", file=sys.stderr)
        return 130
