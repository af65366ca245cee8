"""``dmae-search``: text queries against a folder of your own videos, or two checkpoints side by side (Fig. 5).

    dmae-search checkpoint=RUN/checkpoints/best.pt videos=DIR query="a man is cooking" [query=...] [top_k=5]
    dmae-search checkpoint=A.pt other=B.pt data=msrvtt entry=0 entry=17      # Fig. 5 on the test split

The folder is indexed once with the checkpoint's video encoder (cached next to the checkpoint, `video_index`);
queries are scored with the method's own similarity, as the evaluator scores them. Prints a ranked table and
writes a PNG contact sheet: per query, the top-k videos as rows of sampled frames with their scores.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from . import runtime as rt
from .checkpoint import CorruptCheckpointError, ModelMismatchError
from .evaluate import chunk_sizes, encode_captions, encode_videos, load_model, similarity_chunked
from .features import map_fields
from .query_text import query_batch
from .tool_args import ToolArgsError, exit_with, search_args, search_main
from .video_index import VideoFolderError, build_index

log = logging.getLogger(__name__)


def read_queries(tool: dict) -> list[str]:
    queries = list(tool.get("query", []))
    if tool.get("queries"):
        path = Path(tool["queries"])
        if not path.is_file():
            raise ToolArgsError(f"queries={str(path)!r} is not a file (one query per line)")
        queries += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return queries


def embed_queries(model, data_cfg, queries: list[str], max_words: int, runtime):
    """The queries as the evaluator embeds captions (one batch), floats in float32."""
    batch = query_batch(model.backbone, data_cfg, queries, max_words)
    return encode_captions(model, [batch], runtime.device, runtime.autocast, torch.float32)


def score(model, text, video, eval_cfg) -> torch.Tensor:
    """(Q, V) in float32, in the evaluator's bounded chunks."""
    return similarity_chunked(model, text, video, *chunk_sizes(eval_cfg, text, video)).cpu()


def top(sim: torch.Tensor, k: int) -> list[list[tuple[float, int]]]:
    """Each row's k best (score, column), best first."""
    values, order = sim.topk(min(k, sim.shape[1]), dim=1)
    return [list(zip(v, i, strict=True)) for v, i in zip(values.tolist(), order.tolist(), strict=True)]


def ranked_table(queries: list[str], names: list[str], best: list[list[tuple[float, int]]]) -> str:
    lines = []
    for q, row in zip(queries, best, strict=True):
        lines.append(f"query: {q}")
        lines += [f"  {r + 1:>3}  {v:8.4f}  {names[i]}" for r, (v, i) in enumerate(row)]
    return "\n".join(lines)


def search_folder(cfg, tool: dict, runtime) -> dict:
    queries = read_queries(tool)
    if not queries:
        raise ToolArgsError("give at least one query=\"...\" (or queries=FILE)")
    model, model_cfg = load_model(cfg, runtime.device, tool["checkpoint"])
    index = build_index(model, tool["checkpoint"], tool["videos"], cfg.data, model_cfg.max_frames, runtime,
                        refresh=str(tool.get("refresh", "false")).lower() == "true")
    text = embed_queries(model, cfg.data, queries, model_cfg.max_words, runtime)
    sim = score(model, text, map_fields(lambda x: x.to(runtime.device), index.embedding), cfg.eval)
    best = top(sim, int(tool.get("top_k", 5)))
    print(ranked_table(queries, index.names, best))
    print(f"{len(index.names)} videos indexed ({index.encoded_now} encoded now, the rest from the cache)"
          + (f"; {len(index.skipped)} skipped as unreadable (listed above)" if index.skipped else ""))
    from .figures import contact_sheet

    rows = [(q, [[(index.root / index.names[i], f"{index.names[i]}  {v:.3f}", False)] for v, i in row])
            for q, row in zip(queries, best, strict=True)]
    out = contact_sheet(rows, tool.get("out", "outputs/search.png"), cfg.data.fps, int(tool.get("frames", 4)),
                        model.backbone.image_size)
    print(f"contact sheet: {out}")
    return {"queries": queries, "names": index.names, "sim": sim, "skipped": index.skipped, "out": out,
            "encoded_now": index.encoded_now}


def _split_scores(cfg, path: str, entries: list[int], runtime):
    """(sim of the entries' captions against every test video (E, V), the split, the video paths)."""
    from .data import loaders

    model, model_cfg = load_model(cfg, runtime.device, path)
    loaders.prepare(cfg.data, model.backbone.image_size, model_cfg.max_frames)
    split, captions, videos = loaders.eval_datasets(cfg.data, model.backbone, model_cfg.max_words,
                                                    model_cfg.max_frames)
    bad = [e for e in entries if not 0 <= e < len(split.captions)]
    if bad:
        raise ToolArgsError(f"entry={bad[0]} is out of range: {cfg.data.name} {split.split} has "
                            f"{len(split.captions)} captions (0 ... {len(split.captions) - 1})")
    picked = torch.utils.data.Subset(captions, entries)
    ld = loaders.eval_loaders(cfg.data, picked, videos, 1, 0)
    text = encode_captions(model, ld["captions"], runtime.device, runtime.autocast, torch.float32)
    video, ok = encode_videos(model, ld["videos"], runtime.device, runtime.autocast, torch.float32)
    sim = score(model, text, video, cfg.eval)
    sim[:, ~ok.cpu()] = float("-inf")  # unreadable videos (data.eval_skip_bad_videos=true) are never shown
    return sim, split, videos.videos


def fig5(cfg, tool: dict, runtime) -> dict:
    entries = [int(e) for e in tool.get("entry", [])] or [0, 1, 2, 3]
    k = int(tool.get("top_k", 3))
    sim_a, split, source = _split_scores(cfg, tool["checkpoint"], entries, runtime)
    sim_b, _, _ = _split_scores(cfg, tool["other"], entries, runtime)
    best = {"A": top(sim_a, k), "B": top(sim_b, k)}
    from .figures import contact_sheet

    rows = []
    for r, e in enumerate(entries):
        truth = split.caption_video[e]
        cells = [[(source.paths[split.video_ids[i]], f"{label}: {split.video_ids[i]}  {v:.3f}", i == truth)
                  for v, i in best[label][r]] for label in ("A", "B")]
        rows.append((f"[{e}] {split.captions[e]}  (A = {Path(tool['checkpoint']).name}, B = "
                     f"{Path(tool['other']).name}; ground truth framed)", cells))
        for label, sim in (("A", sim_a), ("B", sim_b)):
            rank = int((sim[r] > sim[r, truth]).sum()) + 1
            print(f"[{e}] {label}: ground truth {split.video_ids[truth]} at rank {rank}")
    out = contact_sheet(rows, tool.get("out", "outputs/fig5.png"), cfg.data.fps, int(tool.get("frames", 4)), None)
    print(f"Fig. 5: {out}")
    return {"sim_a": sim_a, "sim_b": sim_b, "entries": entries, "out": out}


def run(argv: list[str]) -> dict:
    tool, cfg = search_args(argv)
    return run_configured(cfg, tool)


def run_configured(cfg, tool: dict) -> dict:
    runtime = rt.setup(cfg.trainer)
    try:
        return search_folder(cfg, tool, runtime) if tool.get("videos") else fig5(cfg, tool, runtime)
    finally:
        rt.teardown()


def execute(cfg, tool: dict) -> None:
    """The console script after `tool_args.search_main` has read the keys and checked the config."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_configured(cfg, tool)
    except (ToolArgsError, VideoFolderError, FileNotFoundError, ModelMismatchError, CorruptCheckpointError) as err:
        exit_with("dmae-search", err)


main = search_main

if __name__ == "__main__":
    main()
