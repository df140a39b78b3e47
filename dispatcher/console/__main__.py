"""`python -m dispatcher.console [OPTIONS]`: the console alone, with `chorus console`'s options."""

from __future__ import annotations

import argparse
import sys

from dispatcher.console import add_commands
from messages import ChorusError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatcher.console")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub)
    args = parser.parse_args(["console", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args))
    except ChorusError as exc:
        print(f"chorus console: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
