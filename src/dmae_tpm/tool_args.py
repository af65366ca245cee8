"""Command lines of the inspection tools (dmae-search, dmae-explain): ``key=value`` pairs, the tool's own keys
taken out, the rest composed by Hydra as the run config (``data=msrvtt``, ``trainer.device=cpu``, ...).

Torch-free: `search_main` and `explain_main` (the console scripts) read the keys and compose and check the config
first, so ``--help`` and a mistyped key answer at once; only then do they import the tool (and torch).
"""

from __future__ import annotations

import sys

from .config import RunConfig, config_dir, to_run_config


class ToolArgsError(ValueError):
    pass


def split_args(argv: list[str], keys: dict[str, str], repeatable: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """(the tool's values, Hydra overrides). keys: {key: help}; a repeatable key collects a list in order;
    ``--help`` raises ToolArgsError with the usage."""
    tool: dict = {k: [] for k in repeatable}
    overrides = []
    for arg in argv:
        if arg in ("-h", "--help"):
            raise ToolArgsError(usage(keys))
        key, sep, value = arg.partition("=")
        if not sep:
            raise ToolArgsError(f"arguments are key=value, got {arg!r}\n{usage(keys)}")
        if key in keys:
            if key in repeatable:
                tool[key].append(value)
            else:
                tool[key] = value
        else:
            overrides.append(arg)
    return tool, overrides


def usage(keys: dict[str, str]) -> str:
    width = max(len(k) for k in keys) + 2
    lines = [f"  {k + '=':<{width}} {h}" for k, h in keys.items()]
    return ("keys:\n" + "\n".join(lines) + "\n  any other key=value is a run config override (data=msrvtt, "
            "trainer.device=cpu, data.text_weights.spacy_pipeline=...)")


def compose(overrides: list[str]) -> RunConfig:
    """The run config configs/config.yaml composes with `overrides`, validated (no Hydra run folder is made)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return to_run_config(hydra_compose(config_name="config", overrides=overrides))


def exit_with(prog: str, err: BaseException) -> None:
    print(f"{prog}: {err}", file=sys.stderr)
    raise SystemExit(2)


SEARCH_KEYS = {
    "checkpoint": "the checkpoint to search with (a run's checkpoints/best.pt or step_*.pt)",
    "videos": "a folder of videos to index (searched recursively)",
    "query": "a text query; repeat the key for more",
    "queries": "a text file, one query per line",
    "top_k": "videos shown per query (default 5; Fig. 5: 3)",
    "frames": "frames shown per video (default 4)",
    "out": "the PNG written (default outputs/search.png; outputs/fig5.png with other=)",
    "refresh": "true: encode every video again, ignoring the cache",
    "other": "a second checkpoint: Fig. 5, both models' top-k on the data config's test split",
    "entry": "Fig. 5: a test caption's index; repeat for more (default 0 1 2 3)",
}
EXPLAIN_KEYS = {
    "checkpoint": "the model: a step_*.pt / best.pt of a DMAE-TPM run (required)",
    "caption": "a free caption (with video=)",
    "video": "the video file to explain the caption against (with caption=)",
    "entry": "instead of caption/video: caption N of data.test_split, with its ground-truth video",
    "out": "the PNG written (default outputs/explain.png)",
}


def search_args(argv: list[str]) -> tuple[dict, RunConfig]:
    """dmae-search's keys and the run config, checked."""
    tool, overrides = split_args(argv, SEARCH_KEYS, repeatable=("query", "entry"))
    if not tool.get("checkpoint"):
        raise ToolArgsError("dmae-search needs checkpoint=PATH")
    if bool(tool.get("videos")) == bool(tool.get("other")):
        raise ToolArgsError("give videos=DIR (search a folder) or other=CHECKPOINT (Fig. 5 on the test split)")
    return tool, compose(overrides)


def explain_args(argv: list[str]) -> tuple[dict, RunConfig]:
    """dmae-explain's keys (tool["mode"]: "free" for caption= video=, "entry" for entry=) and the run config."""
    tool, overrides = split_args(argv, EXPLAIN_KEYS)
    if "checkpoint" not in tool:
        raise ToolArgsError(f"dmae-explain needs checkpoint=PATH\n{usage(EXPLAIN_KEYS)}")
    free = "caption" in tool or "video" in tool
    if free == ("entry" in tool):
        raise ToolArgsError(f"give either caption=... video=FILE or entry=N\n{usage(EXPLAIN_KEYS)}")
    if free and not ("caption" in tool and "video" in tool):
        raise ToolArgsError("caption= and video= go together: the caption is explained against that video")
    return {**tool, "mode": "free" if free else "entry"}, compose(overrides)


def _checked(prog: str, parse, argv: list[str] | None) -> tuple[dict, RunConfig]:
    from hydra.errors import HydraException

    try:
        return parse(sys.argv[1:] if argv is None else argv)
    except (ValueError, OSError, HydraException) as err:  # ToolArgsError is a ValueError
        exit_with(prog, err)


def search_main(argv: list[str] | None = None) -> None:
    tool, cfg = _checked("dmae-search", search_args, argv)
    from .search import execute

    execute(cfg, tool)


def explain_main(argv: list[str] | None = None) -> None:
    tool, cfg = _checked("dmae-explain", explain_args, argv)
    from .explain import execute

    execute(cfg, tool)
