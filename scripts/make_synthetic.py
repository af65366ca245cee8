#!/usr/bin/env python
"""Generate the synthetic text-video retrieval benchmark (grammar, knobs and layout: data/SYNTHETIC.md).

    python scripts/make_synthetic.py --out data/synthetic                      # default: MSR-VTT layout
    python scripts/make_synthetic.py --out data/synthetic-msvd --format msvd
    python scripts/make_synthetic.py --out /tmp/syn --size tiny --set family_size=4 --set noise=0

Skips the work when --out already holds the same dataset; prints a JSON summary.
"""

import sys

from dmae_tpm.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
