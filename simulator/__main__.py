"""`python -m simulator`; `main` is importable here too, without starting a server on import."""

import sys

from simulator.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
