"""Deprecated alias kept for scripts written against earlier releases: use ``python -m wolofmrl.curation``."""

import sys

from wolofmrl.curation.__main__ import main

if __name__ == "__main__":
    print("note: `python -m wolofmrl.curate` is deprecated; use `python -m wolofmrl.curation`", file=sys.stderr)
    raise SystemExit(main())
