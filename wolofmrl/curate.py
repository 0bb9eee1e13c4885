"""`python -m wolofmrl.curate --config train/configs/data/offline.yaml [--fetch]`: the curation pipeline."""

from wolofmrl.curation.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main())
