"""Range checks for the typed configs, run at composition so a bad value names its key instead of failing deep
inside (a batch size of 0 dividing by zero, a negative one training 0 steps and exiting 0)."""

from __future__ import annotations


def at_least(section: str, cfg: object, **minimums: float) -> None:
    """Raise ValueError naming `section.key` for the first field below its minimum (None counts as unset)."""
    for key, low in minimums.items():
        value = getattr(cfg, key)
        if value is not None and value < low:
            raise ValueError(f"{section}.{key} must be >= {low}, got {value!r}")
