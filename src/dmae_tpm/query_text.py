"""Free-form text queries as a model input: tokens and Algorithm 1's w_pos / w_freq, as the evaluator makes them.

A query typed by a user has no video paragraph, so its w_freq follows ``text_weights.eval_idf=train`` whatever
the config says: the query's own words as the TF-IDF document, the IDF fitted on the training split's paragraphs
(docs/fidelity.md D5). A query that is also a test caption then gets exactly the evaluator's weights.
"""

from __future__ import annotations

import logging

import torch

from .data import loaders
from .data.annotations import AnnotationError
from .data.text_weights import compute_token_weights

log = logging.getLogger(__name__)


def idf_corpus(data_cfg) -> dict[str, list[str]] | None:
    """The training split's captions by video, or None (logged) when its annotations cannot be read."""
    try:
        return loaders.read(data_cfg, data_cfg.train_split).captions_by_video()
    except (AnnotationError, OSError, ValueError) as err:
        log.warning("no training split to fit the queries' IDF on (%s): each query's k lowest words come from "
                    "the queries themselves; pass data=... of the checkpoint's training set for the evaluator's "
                    "weights", err)
        return None


def query_batch(backbone, data_cfg, queries: list[str], max_words: int) -> dict[str, torch.Tensor]:
    """{"tokens", "w_pos", "w_freq"}: (Q, L) each, what `embed_text` takes."""
    if not queries or any(not q.strip() for q in queries):
        raise ValueError("every query must be a non-empty sentence")
    by_query = {f"query{i}": [q] for i, q in enumerate(queries)}
    _, w_pos, w_freq = compute_token_weights(by_query, data_cfg.text_weights, backbone.tokenizer, max_words,
                                             idf_corpus(data_cfg))
    return {"tokens": backbone.tokenize(queries, context_length=max_words), "w_pos": w_pos, "w_freq": w_freq}
