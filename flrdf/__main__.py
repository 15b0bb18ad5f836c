"""Entry point for ``python -m flrdf``."""

from flrdf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
