"""Command lines of the inspection tools (dmae-search, dmae-explain): ``key=value`` pairs, the tool's own keys
taken out, the rest composed by Hydra as the run config (``data=msrvtt``, ``trainer.device=cpu``, ...)."""

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
