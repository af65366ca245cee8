"""TPM-CL (Sec. 3.3, Eqs. 10-18; Appendix A.2, Eqs. 20-21) against hand values and naive references.

The pair score S of Eq. 17 is built exactly as DMAETPM.pair_score does it (model.py is not imported: it
pulls in the backbone): Similarity.plain on a one-token text against the frames, matched pairs only.
"""

import pytest
import torch
import torch.nn.functional as F

from dmae_tpm.features import TextFeatures, VideoFeatures
from dmae_tpm.methods.dmae_tpm.adaptive_token_selector import informative_token_mask, mask_tokens
from dmae_tpm.methods.dmae_tpm.dmae import Similarity, SimilarityConfig
from dmae_tpm.methods.dmae_tpm.token_weight_predictor import (
    CrossModalTokenWeightPredictor,
    text_token_weights,
    video_token_weights,
    weighted_global,
)
from dmae_tpm.methods.dmae_tpm.tpm_cl import TPMCL, TPMConfig, triplet_partial_margin
from dmae_tpm.temporal_encoder import TemporalConfig, TemporalEncoder

F64 = torch.float64
D, M, N, K1 = 8, 6, 3, 3  # embed dim, max words, max frames, tokens per frame ([CLS] + 2 patches)
P = N * K1


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------

def make_batch(b, seed):
    """Random features with BOS / trailing text padding and trailing padded frames full of garbage.

    f_cls is the [CLS] slot of v_tokens (frame-major layout of VideoFeatures), as a CLIP ViT produces them.
    """
    g = torch.Generator().manual_seed(seed)
    t_cls = torch.randn(b, D, generator=g, dtype=F64)
    t_tokens = torch.randn(b, M, D, generator=g, dtype=F64)
    v_tokens = torch.randn(b, P, D, generator=g, dtype=F64)
    t_mask = torch.zeros(b, M, dtype=torch.bool)
    frame_mask = torch.zeros(b, N, dtype=torch.bool)
    for i in range(b):
        n_words = [4, 2, M - 1, 3, 1, 5][i % 6]
        t_mask[i, 1:1 + n_words] = True  # position 0 is [BOS]
        frame_mask[i, :[N, 2, 1, N, 2, N][i % 6]] = True
    # garbage on padded frames must never matter
    v_tokens = v_tokens + 50.0 * (~frame_mask).repeat_interleave(K1, dim=1)[..., None]
    f_cls = v_tokens[:, ::K1].clone()
    return TextFeatures(t_cls, t_tokens, t_mask), VideoFeatures(f_cls, v_tokens, frame_mask)


def build(temporal_type="seqTransf", temporal_input="v_tokens", interaction="ti", normalize="softmax",
          threshold=0.6, margin=0.6, seed=0, text_global_norm="t_g"):
    torch.manual_seed(seed)
    cfg = TPMConfig(threshold=threshold, margin=margin, predictor_normalize=normalize,
                    text_global_norm=text_global_norm)
    tpm = TPMCL(cfg, D, M, N, K1)
    temporal = TemporalEncoder(TemporalConfig(type=temporal_type, input=temporal_input, layers=1,
                                              max_frames=N, head_width=4), D)
    sim = Similarity(SimilarityConfig(interaction=interaction, textual_attention=False,
                                      visual_attention=False), D)
    if interaction == "wti":  # make the learned frame weights far from uniform
        torch.nn.init.normal_(sim.weights.video_fc.weight, std=1.0)
    return tpm.double(), temporal.double(), sim.double()


def pair_score(similarity):
    """S(q, v_h) of Eq. 17 for B matched pairs, as DMAETPM.pair_score."""
    def score(q, v_h, frame_mask):
        one = torch.ones(q.shape[0], 1, dtype=torch.bool)
        return similarity.plain(q.unsqueeze(1), one, v_h, frame_mask.bool(), pairwise=False)
    return score


def naive_mask(w, tau):
    """Eq. 14 in the prose / Fig. 6 / authors' reading: walk the tokens by descending weight, mask (b = 0)
    while the running sum stays below tau. w: 1-D tensor. Python's sort is stable, as is the module's."""
    vals = w.detach().tolist()
    order = sorted(range(len(vals)), key=lambda k: -vals[k])
    b, run = [1.0] * len(vals), 0.0
    for k in order:
        run += vals[k]
        if run < tau:
            b[k] = 0.0
    return torch.tensor(b, dtype=w.dtype)


def naive_single_score(similarity, q, v_h, keep_length=False):
    """TI / WTI of one text token q (D,) against the real frames v_h (n, D): cosines, or with keep_length the dot
    products of q as it is with the unit frames."""
    qn = q if keep_length else q / q.norm().clamp_min(1e-12)
    vn = v_h / v_h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = vn @ qn  # (n,)
    t2v = cos.max()  # the single text token's best frame (its weight is 1 in WTI too)
    if similarity.weights is None:
        v2t = cos.mean()  # each frame's best text token is q itself
    else:
        fc = similarity.weights.video_fc
        v2t = (torch.softmax(v_h @ fc.weight[0] + fc.bias[0], dim=0) * cos).sum()
    return 0.5 * (t2v + v2t)


def naive_tpm(tpm, temporal, similarity, text, video, tau, delta, fcls_from_masked_tokens=False):
    """Per-pair loop: every matched pair (t_i, v_i) trimmed to its real words / frames and run alone.
    t_g, t_g^p are weighted sums of the unit words ("both": of the raw ones, as before), scored per
    tpm.cfg.text_global_norm: "t_g" normalises t_g only, "none" neither, "both" both."""
    norm = tpm.cfg.text_global_norm
    terms = {"trpl1": [], "trpl2": [], "trpl3": []}
    masked_t = real_t = masked_v = real_v = 0.0
    for i in range(text.t_cls.shape[0]):
        m_i = int(text.t_mask[i].nonzero().max()) + 1
        n_i = int(video.frame_mask[i].sum())
        tt, tm = text.t_tokens[i, :m_i], text.t_mask[i, :m_i]
        words = tt if norm == "both" else tt / tt.norm(dim=-1, keepdim=True)
        fc, vt = video.f_cls[i, :n_i], video.v_tokens[i, :n_i * K1]
        ones_f = torch.ones(1, n_i, dtype=torch.bool)
        w_t = tpm.text_predictor(fc[None], ones_f, tt[None], tm[None])[0]  # Eq. 10
        w_v = tpm.video_predictor(text.t_cls[i][None, None], torch.ones(1, 1, dtype=torch.bool), vt[None],
                                  torch.ones(1, n_i * K1, dtype=torch.bool))[0]  # Eq. 11
        b_t, b_v = naive_mask(w_t, tau), naive_mask(w_v, tau)  # Eq. 14
        t_g = (w_t[:, None] * words).sum(0)  # Eq. 15
        t_g_p = (w_t[:, None] * (b_t[:, None] * words)).sum(0)  # Eqs. 12, 16
        vt_p = b_v[:, None] * vt  # Eq. 13
        fc_p = vt_p[::K1] if fcls_from_masked_tokens else b_v[::K1, None] * fc  # a frame's [CLS] masked or not
        v_h = temporal(VideoFeatures(fc[None], vt[None], ones_f))[0]
        v_h_p = temporal(VideoFeatures(fc_p[None], vt_p[None], ones_f))[0]
        s = lambda q, vh: naive_single_score(similarity, q, vh)  # noqa: E731
        s_g = lambda q, vh: naive_single_score(similarity, q, vh, keep_length=norm == "none")  # noqa: E731
        s_gp = lambda q, vh: naive_single_score(similarity, q, vh, keep_length=norm != "both")  # noqa: E731
        terms["trpl1"].append(F.relu(s(text.t_cls[i], v_h_p) - s(text.t_cls[i], v_h) + delta))  # Eq. 17
        terms["trpl2"].append(F.relu(s_g(t_g, v_h_p) - s_g(t_g, v_h) + delta))
        terms["trpl3"].append(F.relu(s_gp(t_g_p, v_h) - s_g(t_g, v_h) + delta))
        masked_t += float(((1 - b_t) * tm).sum())
        real_t += float(tm.sum())
        masked_v += float((1 - b_v).sum())
        real_v += n_i * K1
    out = {k: torch.stack(v).mean() for k, v in terms.items()}
    out["loss"] = out["trpl1"] + out["trpl2"] + out["trpl3"]  # Eq. 18
    out["masked_text_frac"] = masked_t / real_t
    out["masked_video_frac"] = masked_v / real_v
    return out


# ---------------------------------------------------------------------------------------------------------
# Adaptive Token Selector, Eqs. 12-14
# ---------------------------------------------------------------------------------------------------------

def test_informative_token_mask_hand_values():
    """b = 0 (masked) on the most informative tokens whose cumulative weight stays below tau.

    This is the prose ("masking informative textual and visual tokens"), Fig. 6 and the authors'
    TokenImportanceSelector. Eq. 14 as typeset assigns 1 to cum_sum < tau, i.e. it would keep exactly those
    tokens and mask the rest; the tests pin the prose/code reading on purpose.
    """
    w = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=F64)
    # cumsums in rank order: 0.5, 0.8, 0.95, 1.0
    assert informative_token_mask(w, 0.6).tolist() == [[0.0, 1.0, 1.0, 1.0]]
    assert informative_token_mask(w, 0.9).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert informative_token_mask(w, 0.97).tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert informative_token_mask(w, 0.4).tolist() == [[1.0, 1.0, 1.0, 1.0]]  # top weight 0.5 > tau
    assert informative_token_mask(torch.tensor([[0.7, 0.2, 0.1]], dtype=F64), 0.6).tolist() == [[1.0, 1.0, 1.0]]
    # cum_sum == tau (Eq. 14 leaves it undefined) is kept, as the authors' `cumulative < thresh`
    assert informative_token_mask(torch.tensor([[0.5, 0.25, 0.25]], dtype=F64), 0.75).tolist() == [[0.0, 1.0, 1.0]]


def test_informative_token_mask_unsorted_batch_and_padding():
    w = torch.tensor([[0.05, 0.5, 0.15, 0.3, 0.0, 0.0],  # same weights as above, shuffled, two pads
                      [0.0, 0.2, 0.0, 0.45, 0.35, 0.0]], dtype=F64)  # ranks: 0.45, 0.35, 0.2
    b = informative_token_mask(w, 0.9)
    assert b.tolist() == [[1.0, 0.0, 1.0, 0.0, 1.0, 1.0],  # 0.5, 0.8 < 0.9 masked
                          [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]]  # 0.45, 0.8 < 0.9 masked
    for tau in (0.1, 0.6, 0.99, 1.0):
        b = informative_token_mask(w, tau)
        assert (b[w == 0] == 1).all()  # padding is never masked
        assert b.dtype == w.dtype


def test_informative_token_mask_direction_is_most_informative_masked():
    g = torch.Generator().manual_seed(0)
    w = torch.softmax(torch.randn(4, 10, generator=g, dtype=F64), -1)
    b = informative_token_mask(w, 0.6)
    for row_w, row_b in zip(w, b, strict=True):
        masked, kept = row_w[row_b == 0], row_w[row_b == 1]
        assert masked.numel() > 0 and kept.numel() > 0
        assert masked.min() >= kept.max()  # every masked token outweighs every kept one
        assert masked.sum() < 0.6 <= masked.sum() + kept.max()
        torch.testing.assert_close(row_b, naive_mask(row_w, 0.6))


def test_informative_token_mask_carries_no_gradient():
    w = torch.softmax(torch.randn(2, 5, dtype=F64), -1).requires_grad_(True)
    b = informative_token_mask(w, 0.6)
    assert not b.requires_grad and b.grad_fn is None


def test_mask_tokens_hand_values():
    tokens = torch.arange(2 * 3 * 2, dtype=F64).reshape(2, 3, 2)
    b = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)
    want = torch.tensor([[[0, 0], [2, 3], [4, 5]], [[6, 7], [0, 0], [0, 0]]], dtype=F64)
    assert torch.equal(mask_tokens(tokens, b), want)  # Eqs. 12-13: whole token vectors zeroed


def test_weighted_global_hand_values():
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]], dtype=F64)
    w = torch.tensor([[0.5, 0.25, 0.25]], dtype=F64)
    # Eq. 15: 0.5 * [1, 0] + 0.25 * [0, 2] + 0.25 * [3, 3] = [1.25, 1.25]
    torch.testing.assert_close(weighted_global(tokens, w), torch.tensor([[1.25, 1.25]], dtype=F64))
    # Eq. 16 with b = [0, 1, 1]: the weights are NOT renormalised: 0.25 * [0, 2] + 0.25 * [3, 3] = [0.75, 1.25]
    b = torch.tensor([[0.0, 1.0, 1.0]], dtype=F64)
    torch.testing.assert_close(weighted_global(mask_tokens(tokens, b), w), torch.tensor([[0.75, 1.25]], dtype=F64))


# ---------------------------------------------------------------------------------------------------------
# Cross-Modal Token Weight Predictor, Eqs. 10-11, 20-21
# ---------------------------------------------------------------------------------------------------------

def _predictor(normalize, q=4, t=6, seed=0):
    torch.manual_seed(seed)
    return CrossModalTokenWeightPredictor(q, t, D, normalize).double()


def _pred_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(3, 4, D, generator=g, dtype=F64)
    tokens = torch.randn(3, 6, D, generator=g, dtype=F64)
    qmask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    tmask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    return queries, qmask, tokens, tmask


@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_predictor_weights_sum_to_one_and_vanish_on_padding(normalize):
    pred = _predictor(normalize)
    queries, qmask, tokens, tmask = _pred_inputs()
    w = pred(queries, qmask, tokens, tmask)
    assert w.shape == (3, 6)
    assert (w[~tmask] == 0).all()
    assert (w[tmask] > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, dtype=F64), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_predictor_eq20_mixing_and_mlp_on_concatenation(normalize):
    pred = _predictor(normalize)
    a = torch.arange(6 * 4, dtype=F64).reshape(6, 4) / 10 - 1.0  # a known W (M x N)
    with torch.no_grad():
        pred.mix.copy_(a)
    queries, qmask, tokens, tmask = _pred_inputs()
    got = pred(queries, qmask, tokens, tmask)
    ln, lin1, lin2 = pred.mlp[0], pred.mlp[1], pred.mlp[3]
    for bi in range(3):
        f_cls = queries[bi] * qmask[bi, :, None]  # padded frames contribute nothing
        f_hat = a @ f_cls  # Eq. 20: W . f_cls, (M x N)(N x D)
        joint = torch.cat([tokens[bi], f_hat], dim=-1)  # Eq. 21: t_hat_i = [t_i, f_hat_i]
        h = F.gelu(F.layer_norm(joint, (2 * D,), ln.weight, ln.bias, ln.eps) @ lin1.weight.T + lin1.bias)
        s = (h @ lin2.weight.T + lin2.bias)[:, 0]
        real = tmask[bi]
        want = torch.zeros(6, dtype=F64)
        if normalize == "softmax":
            want[real] = torch.exp(s[real]) / torch.exp(s[real]).sum()  # Eq. 10: MLP + Softmax
        else:
            want[real] = torch.sigmoid(s[real]) / torch.sigmoid(s[real]).sum()
        torch.testing.assert_close(got[bi], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_text_weights_ignore_padded_frames(normalize):
    pred = _predictor(normalize)
    g = torch.Generator().manual_seed(2)
    f_cls = torch.randn(2, 2, D, generator=g, dtype=F64)
    t_tokens = torch.randn(2, 5, D, generator=g, dtype=F64)
    t_mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    base = text_token_weights(pred, f_cls, torch.ones(2, 2, dtype=torch.bool), t_tokens, t_mask)
    garbage = 1e3 * torch.randn(2, 2, D, generator=g, dtype=F64)  # two padded frames of junk
    padded = text_token_weights(pred, torch.cat([f_cls, garbage], 1),
                                torch.tensor([[1, 1, 0, 0]] * 2, dtype=torch.bool), t_tokens, t_mask)
    torch.testing.assert_close(padded, base, rtol=1e-13, atol=1e-15)


def test_predictor_shorter_inputs_work_and_longer_raise():
    pred = _predictor("softmax")  # built for 4 queries x 6 tokens
    queries, qmask, tokens, tmask = _pred_inputs()
    w = pred(queries[:, :2], qmask[:, :2], tokens[:, :3], tmask[:, :3])
    assert w.shape == (3, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError):
        pred(torch.randn(3, 5, D, dtype=F64), torch.ones(3, 5, dtype=torch.bool), tokens, tmask)
    with pytest.raises(ValueError):
        pred(queries, qmask, torch.randn(3, 7, D, dtype=F64), torch.ones(3, 7, dtype=torch.bool))
    with pytest.raises(ValueError):
        CrossModalTokenWeightPredictor(4, 6, D, "relu")


def test_video_token_weights_use_t_cls_as_single_query():
    pred = _predictor("softmax", q=1, t=P)
    text, video = make_batch(3, seed=3)
    w = video_token_weights(pred, text.t_cls, video.v_tokens, video.v_mask)
    want = pred(text.t_cls[:, None], torch.ones(3, 1, dtype=torch.bool), video.v_tokens, video.v_mask)
    torch.testing.assert_close(w, want, rtol=0, atol=0)
    assert (w[~video.v_mask] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, dtype=F64))
    # Eq. 11 mixing: P x 1 matrix times t_cls -> row p of mix scales t_cls for token p
    with torch.no_grad():
        pred.mix.zero_()
    w0 = video_token_weights(pred, text.t_cls, video.v_tokens, video.v_mask)
    w1 = video_token_weights(pred, 7 * text.t_cls, video.v_tokens, video.v_mask)
    torch.testing.assert_close(w0, w1)  # W = 0: the text no longer matters


# ---------------------------------------------------------------------------------------------------------
# Triplet Partial Margin loss, Eqs. 17-18
# ---------------------------------------------------------------------------------------------------------

def test_triplet_partial_margin_direction_and_values():
    full = torch.tensor([1.0, 0.2, 0.5, -0.3], dtype=F64)
    partial = torch.tensor([0.5, 0.4, 0.5, -0.1], dtype=F64)
    # max(0, partial - full + 0.3): max(0, -0.2) = 0, 0.5, 0.3, 0.5 -> mean 1.3 / 4 = 0.325
    got = triplet_partial_margin(full, partial, 0.3)
    assert got.item() == pytest.approx(0.325, abs=1e-15)
    # the authors' MarginRankingLoss(margin)(full, partial, target=1): full must beat partial by delta
    ref = torch.nn.MarginRankingLoss(margin=0.3)(full, partial, torch.ones(4, dtype=F64))
    assert got.item() == pytest.approx(ref.item(), abs=1e-15)
    # a full pair far above its partial one costs nothing
    assert triplet_partial_margin(full + 10, partial, 0.6).item() == 0.0


def test_triplet_partial_margin_gradient_direction():
    full = torch.tensor([0.5], dtype=F64, requires_grad=True)
    partial = torch.tensor([0.4], dtype=F64, requires_grad=True)
    triplet_partial_margin(full, partial, 0.6).backward()
    assert full.grad.item() == -1.0 and partial.grad.item() == 1.0  # push full up, partial down


# ---------------------------------------------------------------------------------------------------------
# TPMCL.forward against a per-pair loop
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["t_g", "none", "both"])
@pytest.mark.parametrize("interaction", ["ti", "wti"])
@pytest.mark.parametrize("temporal_input", ["v_tokens", "f_cls"])
@pytest.mark.parametrize("temporal_type", ["meanP", "seqTransf"])
def test_tpmcl_forward_matches_per_pair_loop(temporal_type, temporal_input, interaction, norm):
    tau, delta = 0.6, 0.6
    tpm, temporal, sim = build(temporal_type, temporal_input, interaction, threshold=tau, margin=delta,
                               text_global_norm=norm)
    text, video = make_batch(4, seed=4)
    out = tpm(text, video, temporal(video), temporal, pair_score(sim))
    want = naive_tpm(tpm, temporal, sim, text, video, tau, delta)
    for k in ("trpl1", "trpl2", "trpl3", "loss"):
        torch.testing.assert_close(out[k], want[k], rtol=1e-10, atol=1e-12, msg=k)
    torch.testing.assert_close(out["loss"], out["trpl1"] + out["trpl2"] + out["trpl3"], rtol=0, atol=0)
    assert out["masked_text_frac"].item() == pytest.approx(want["masked_text_frac"], rel=1e-12)
    assert out["masked_video_frac"].item() == pytest.approx(want["masked_video_frac"], rel=1e-12)
    assert 0 < want["masked_text_frac"] < 1 and 0 < want["masked_video_frac"] < 1  # masking happened


@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
@pytest.mark.parametrize("tau,delta", [(0.3, 0.05), (0.8, 0.2)])
def test_tpmcl_forward_other_hyperparameters(normalize, tau, delta):
    tpm, temporal, sim = build("seqTransf", "v_tokens", "wti", normalize, threshold=tau, margin=delta, seed=1)
    text, video = make_batch(5, seed=5)
    out = tpm(text, video, temporal(video), temporal, pair_score(sim))
    want = naive_tpm(tpm, temporal, sim, text, video, tau, delta)
    for k in ("trpl1", "trpl2", "trpl3", "loss"):
        torch.testing.assert_close(out[k], want[k], rtol=1e-10, atol=1e-12, msg=k)


def test_partial_video_without_masking_equals_full_video():
    """tau below every weight masks nothing: v_h^p = v_h, t_g^p = t_g, and each triplet term is delta."""
    for temporal_input in ("v_tokens", "f_cls"):
        tpm, temporal, sim = build("seqTransf", temporal_input, "ti", threshold=1e-9, margin=0.25,
                                   text_global_norm="none")
        text, video = make_batch(3, seed=6)
        v_h = temporal(video)
        p = tpm.partial_samples(text, video, temporal)
        assert (p["b_t"] == 1).all() and (p["b_v"] == 1).all()
        real = video.frame_mask[..., None]
        torch.testing.assert_close(p["v_h_p"] * real, v_h * real, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p["t_g_p"], p["t_g"])
        out = tpm(text, video, v_h, temporal, pair_score(sim))
        for k in ("trpl1", "trpl2", "trpl3"):
            assert out[k].item() == pytest.approx(0.25, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------
# THE KEY TEST: our O(B) matched pairs == the authors' O(B^2) all-pairs-then-diagonal formulation
# ---------------------------------------------------------------------------------------------------------

def all_pairs_tpm(tpm, temporal, similarity, text, video, tau, delta):
    """The authors' formulation: token weights, masks, partial samples and the five scores for every
    (text i, video j) pair of the batch; B x B matrices; the margin loss on their diagonals."""
    b = text.t_cls.shape[0]
    ti = torch.arange(b).repeat_interleave(b)  # pair p = i * B + j
    vj = torch.arange(b).repeat(b)
    fm = video.frame_mask[vj]
    w_t = tpm.text_predictor(video.f_cls[vj], fm, text.t_tokens[ti], text.t_mask[ti])  # (B^2, M)
    v_mask = video.v_mask[vj]
    w_v = tpm.video_predictor(text.t_cls[ti][:, None], torch.ones(b * b, 1, dtype=torch.bool),
                              video.v_tokens[vj], v_mask)  # (B^2, P)
    b_t = torch.stack([naive_mask(r, tau) for r in w_t])
    b_v = torch.stack([naive_mask(r, tau) for r in w_v])
    t_tok = F.normalize(text.t_tokens[ti], dim=-1)  # their cap_embed is normalised before anything
    t_g = torch.einsum("pmd,pm->pd", t_tok, w_t)
    t_g = t_g / t_g.norm(dim=-1, keepdim=True)  # their sequence_global is normalised ...
    t_g_p = torch.einsum("pmd,pm->pd", t_tok * b_t[..., None], w_t)  # ... sequence_global_partial is not
    vt_p = video.v_tokens[vj] * b_v[..., None]
    v_h = temporal(video)[vj]  # (B^2, N, D)
    v_h_p = temporal(VideoFeatures(vt_p[:, ::K1], vt_p, fm))  # (B^2, N, D)
    score = pair_score(similarity)

    def mat(q, vh):
        return score(q, vh, fm).reshape(b, b)  # [i, j] = S(text i, video j)

    t_cls = text.t_cls[ti]
    s1, s1p = mat(t_cls, v_h), mat(t_cls, v_h_p)
    s2, s2p = mat(t_g, v_h), mat(t_g, v_h_p)
    frames = [v_h[p][fm[p]] for p in range(b * b)]  # their dot product of t_g^p with the unit frames, per pair
    s3p = torch.stack([naive_single_score(similarity, t_g_p[p], frames[p], keep_length=True)
                       for p in range(b * b)]).reshape(b, b)
    ranking = torch.nn.MarginRankingLoss(margin=delta)
    one = torch.ones(b, dtype=F64)
    terms = {"trpl1": ranking(s1.diagonal(), s1p.diagonal(), one),
             "trpl2": ranking(s2.diagonal(), s2p.diagonal(), one),
             "trpl3": ranking(s2.diagonal(), s3p.diagonal(), one)}
    terms["loss"] = terms["trpl1"] + terms["trpl2"] + terms["trpl3"]
    assert not torch.allclose(s1, torch.diag_embed(s1.diagonal()))  # the off-diagonal pairs are real work
    return terms


@pytest.mark.parametrize("temporal_type,temporal_input,interaction",
                         [("seqTransf", "v_tokens", "wti"), ("seqTransf", "f_cls", "ti"),
                          ("meanP", "v_tokens", "ti")])
def test_matched_pairs_equal_all_pairs_formulation(temporal_type, temporal_input, interaction):
    tau, delta = 0.6, 0.6
    tpm, temporal, sim = build(temporal_type, temporal_input, interaction, threshold=tau, margin=delta, seed=2)
    text0, video0 = make_batch(5, seed=7)
    leaves = {"t_cls": text0.t_cls, "t_tokens": text0.t_tokens, "f_cls": video0.f_cls,
              "v_tokens": video0.v_tokens}
    params = list(tpm.parameters()) + list(temporal.parameters()) + list(sim.parameters())

    def run(fn):
        ins = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
        text = TextFeatures(ins["t_cls"], ins["t_tokens"], text0.t_mask)
        video = VideoFeatures(ins["f_cls"], ins["v_tokens"], video0.frame_mask)
        out = fn(text, video)
        grads = torch.autograd.grad(out["loss"], list(ins.values()) + params, allow_unused=True)
        return out, grads

    ours, g_ours = run(lambda t, v: tpm(t, v, temporal(v), temporal, pair_score(sim)))
    theirs, g_theirs = run(lambda t, v: all_pairs_tpm(tpm, temporal, sim, t, v, tau, delta))
    for k in ("trpl1", "trpl2", "trpl3", "loss"):
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-6, msg=k)
        assert abs(ours[k].item() - theirs[k].item()) < 1e-12
    assert ours["loss"].item() > 0
    n_compared = 0
    for a, b in zip(g_ours, g_theirs, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
            n_compared += 1
    assert n_compared >= 4 + 6  # the four inputs and at least the text predictor's parameters
    assert all(g.abs().sum() > 0 for g in g_ours[:4])


# ---------------------------------------------------------------------------------------------------------
# gradient flow
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_gradient_flow(normalize):
    tpm, temporal, sim = build("seqTransf", "v_tokens", "wti", normalize, threshold=0.6, margin=0.6, seed=3)
    text, video = make_batch(4, seed=8)
    for x in (text.t_cls, text.t_tokens, video.f_cls, video.v_tokens):
        x.requires_grad_(True)
    p = tpm.partial_samples(text, video, temporal)
    for k in ("b_t", "b_v"):
        assert not p[k].requires_grad and p[k].grad_fn is None  # the masks carry no gradient
    out = tpm(text, video, temporal(video), temporal, pair_score(sim))
    out["loss"].backward()

    # Text predictor (Eq. 10): w^p_tokens enters t_g and t_g^p (Eqs. 15-16), so every parameter learns ...
    for name, prm in tpm.text_predictor.named_parameters():
        if normalize == "softmax" and name == "mlp.3.bias":
            # ... except the last bias under Softmax, which shifts every logit equally: its gradient is 0
            assert prm.grad is None or prm.grad.abs().max() < 1e-12
            continue
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
        assert prm.grad.abs().sum() > 0, name
    # Video predictor (Eq. 11): w^p_{v_tokens} only decides the discrete mask b_v (Eqs. 13-14), nothing in
    # Eq. 17 is differentiable in it, so it receives no gradient (same in the authors' code, where the
    # weighted visual global feature is computed but never enters the loss).
    for name, prm in tpm.video_predictor.named_parameters():
        assert prm.grad is None or (prm.grad == 0).all(), name
    for module in (temporal, sim):
        for name, prm in module.named_parameters():
            assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    for x in (text.t_cls, text.t_tokens, video.v_tokens):
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # padded text tokens and padded frames get no gradient
    assert (text.t_tokens.grad[~text.t_mask] == 0).all()
    assert (video.v_tokens.grad[~video.v_mask] == 0).all()
    assert torch.isfinite(out["loss"])


def test_tpm_config_rejects_unknown_normalize():
    with pytest.raises(ValueError):
        TPMCL(TPMConfig(predictor_normalize="tanh"), D, M, N, K1)
    with pytest.raises(ValueError, match="text_global_norm"):
        TPMConfig(text_global_norm="partial")


@pytest.mark.parametrize("tau", [1.0, 0.0, 1.5])
def test_tpm_config_rejects_threshold_outside_open_interval(tau):
    """tau = 1 would mask every real token of some rows: the softmax's cumulative sum ends just below 1."""
    with pytest.raises(ValueError, match="threshold"):
        TPMConfig(threshold=tau)


def test_masking_lowers_the_partial_text_score_by_the_masked_weight():
    """Hand-worked, "none": words e0 (weight 0.7, masked at tau 0.75) and e1 (0.3) against one frame e0 + e1:
    S(t_g) = <0.7 e0 + 0.3 e1, (e0 + e1)/sqrt 2> = 1/sqrt 2; S(t_g^p) = <0.3 e1, .> = 0.3/sqrt 2: the masked weight
    counts. "t_g" scores t_g as a cosine (0.7 + 0.3)/(sqrt(0.58) sqrt 2); "both" turns t_g^p to e1: 1/sqrt 2."""
    sim = Similarity(SimilarityConfig("ti", False, False, sentence_term=False), 2).double()
    score = pair_score(sim)
    e0, e1 = torch.eye(2, dtype=F64)
    t_g, t_g_p, v_h = (0.7 * e0 + 0.3 * e1)[None], (0.3 * e1)[None], (e0 + e1)[None, None]
    fm = torch.ones(1, 1, dtype=torch.bool)
    from dmae_tpm.methods.dmae_tpm.tpm_cl import length_kept
    r2 = 2 ** 0.5
    assert length_kept(score)(t_g, v_h, fm).item() == pytest.approx(1 / r2, abs=1e-12)
    assert length_kept(score)(t_g_p, v_h, fm).item() == pytest.approx(0.3 / r2, abs=1e-12)
    assert score(t_g, v_h, fm).item() == pytest.approx(1.0 / (0.58 ** 0.5 * r2), abs=1e-12)
    assert score(t_g_p, v_h, fm).item() == pytest.approx(1 / r2, abs=1e-12)


def test_length_kept_score_has_finite_gradient_at_zero():
    """All words masked would give t_g^p = 0: its score is 0 and no NaN reaches the gradient."""
    sim = Similarity(SimilarityConfig("ti", False, False, sentence_term=False), 4).double()
    from dmae_tpm.methods.dmae_tpm.tpm_cl import length_kept
    q = torch.zeros(2, 4, dtype=F64, requires_grad=True)
    v_h = torch.randn(2, 3, 4, dtype=F64)
    out = length_kept(pair_score(sim))(q, v_h, torch.ones(2, 3, dtype=torch.bool))
    out.sum().backward()
    assert (out == 0).all() and torch.isfinite(q.grad).all()


def _concatenated_weights(p, queries, query_mask, tokens, token_mask):
    """Eqs. (10)-(11), (20)-(21) as written: the (B, T, 2D) joint built, LayerNorm and the MLP over it."""
    queries = queries * query_mask.unsqueeze(-1).to(queries.dtype)
    mixed = torch.einsum("tq,bqd->btd", p.mix[: tokens.shape[1], : queries.shape[1]], queries)
    score = p.mlp(torch.cat([tokens, mixed], dim=-1)).squeeze(-1)
    if p.normalize == "softmax":
        return torch.softmax(score.masked_fill(~token_mask, float("-inf")), -1)
    gate = torch.sigmoid(score) * token_mask
    return gate / gate.sum(-1, keepdim=True)


@pytest.mark.parametrize("side", ["video", "text"])
@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_factorised_predictor_equals_the_concatenated_joint(side, normalize):
    """The predictor (video side: the factorised first layer, no (B, T, 2D) joint) against the concatenation, float64:
    weights and parameter gradients; then float32: the Adaptive Token Selector's masks are the same."""
    torch.manual_seed(0)
    q, t, d = (1, 40, 32) if side == "video" else (6, 12, 32)
    p = CrossModalTokenWeightPredictor(q, t, d, normalize).double()
    with torch.no_grad():  # move LayerNorm's affine and the biases off their identity / zero start
        for prm in p.parameters():
            prm.add_(torch.randn_like(prm) * 0.2)
    queries = torch.randn(3, q, d, dtype=torch.float64) * 2 + 0.3
    query_mask = torch.ones(3, q, dtype=torch.bool)
    query_mask[1, q // 2 + 1 :] = False  # padded queries (none to pad on the video side)
    tokens = torch.randn(3, t, d, dtype=torch.float64) + 0.1
    token_mask = torch.ones(3, t, dtype=torch.bool)
    token_mask[0, -4:] = False
    got = p(queries, query_mask, tokens, token_mask)
    want = _concatenated_weights(p, queries, query_mask, tokens, token_mask)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    g_got = torch.autograd.grad((got * torch.arange(t)).sum(), list(p.parameters()))
    g_want = torch.autograd.grad((want * torch.arange(t)).sum(), list(p.parameters()))
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)
    p32 = p.float()
    args = (queries.float(), query_mask, tokens.float(), token_mask)
    w32, w_ref = p32(*args), _concatenated_weights(p32, *args)
    torch.testing.assert_close(w32, w_ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(informative_token_mask(w32, 0.6), informative_token_mask(w_ref, 0.6))
