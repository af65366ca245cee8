#!/usr/bin/env python
"""Check a benchmark on disk: annotations, presence of every listed video, optionally that each decodes.

Example (layouts and sources: data/README.md):

    python scripts/check_dataset.py --dataset msrvtt --annotations data/msrvtt --videos data/msrvtt/videos --decode

Exit status 0 if every listed video is found (and decodes with --decode), 1 otherwise. The argument parsing and
the work are in `dmae_tpm.data.check.main`.
"""

import sys

from dmae_tpm.data.check import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
