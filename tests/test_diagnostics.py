"""dmae_tpm.methods.dmae_tpm.diagnostics against hand values and naive loops."""

from __future__ import annotations

import math

import torch

from dmae_tpm.methods.dmae_tpm.diagnostics import batch_diagnostics, ta_entropy, va_off_diagonal
from dmae_tpm.methods.dmae_tpm.dmae import SimilarityConfig, TextInput
from dmae_tpm.methods.dmae_tpm.visual_attention import visual_attention


def test_ta_entropy_by_hand():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    uniform = mask.float() / mask.sum(-1, keepdim=True)
    assert ta_entropy(uniform, mask) == torch.tensor(1.0)  # the one-word caption is left out
    peaked = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [1, 0, 0, 0]])
    assert torch.isclose(ta_entropy(peaked, mask), torch.tensor(0.5))  # (0 + 1) / 2
    w = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    h = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)) / math.log(4)
    assert torch.isclose(ta_entropy(w, mask[:1]), torch.tensor(h, dtype=torch.float32))


def test_va_off_diagonal_matches_a_naive_loop():
    torch.manual_seed(0)
    v_h = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    w = visual_attention(v_h, mask, 2)
    shares = []
    for b in range(3):
        for j in range(5):
            if mask[b, j]:
                column = sum(float(w[b, i, j]) for i in range(5))
                shares.append((column - float(w[b, j, j])) / column)
    assert torch.isclose(va_off_diagonal(w, mask), torch.tensor(sum(shares) / len(shares)), atol=1e-6)


def test_hard_negatives_are_eq5_counted_for_any_loss():
    sim = torch.tensor([[0.9, 0.95, 0.1], [0.2, 0.8, 0.1], [0.0, 0.1, 0.5]])
    text = TextInput(torch.zeros(3, 4), torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.bool))
    cfg = SimilarityConfig(textual_attention=False, visual_attention=False)
    out = batch_diagnostics(cfg, text, torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.bool), sim, None)
    # Eq. 5: (i, j) is hard when s_ij > s_ii or s_ji > s_ii: (0, 1) as s_01 = .95 > .9; (1, 0)? s_10 = .2 and
    # s_01 = .95 > s_11 = .8: yes. No other pair.
    assert out["diag/hard_negatives_per_caption"] == torch.tensor(2 / 3)
    assert out["diag/hard_negative_frac"] == torch.tensor(2 / 6)
    ignore = torch.zeros(3, 3, dtype=torch.bool)
    ignore[0, 1] = ignore[1, 0] = True
    masked = batch_diagnostics(cfg, text, torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.bool), sim, ignore)
    assert masked["diag/hard_negatives_per_caption"] == 0


def test_same_family_hard_negatives_by_hand():
    from dmae_tpm.trainer import same_family_mask

    families = torch.tensor([0, 0, 1, 1, 2])  # video -> family
    video_index = torch.tensor([0, 1, 2, 0])  # the batch: video 0 twice (same video: not a family pair)
    same = same_family_mask(video_index, families)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 1] = expected[1, 0] = expected[1, 3] = expected[3, 1] = True  # videos 0 and 1
    assert torch.equal(same, expected)
    sim = torch.tensor([[0.9, 0.95, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.9]])
    text = TextInput(torch.zeros(4, 4), torch.zeros(4, 2, 4), torch.ones(4, 2, dtype=torch.bool))
    cfg = SimilarityConfig(textual_attention=False, visual_attention=False)
    out = batch_diagnostics(cfg, text, torch.zeros(4, 2, 4), torch.ones(4, 2, dtype=torch.bool), sim, None, same)
    assert out["diag/same_family_per_caption"] == torch.tensor(4 / 4)
    assert out["diag/hard_same_family_per_caption"] == torch.tensor(2 / 4)  # (0, 1) and (1, 0) are hard
