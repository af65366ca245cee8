"""Decode a dataset's videos once into a frame cache: python scripts/build_frame_cache.py --help"""

import sys

from dmae_tpm.data.frame_cache_cli import main

if __name__ == "__main__":
    sys.exit(main())
