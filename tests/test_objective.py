"""The total objective L_all = L_NegNCE + L_TPM (Sec. 3.4, Eq. 19) and its logged terms."""

import pytest
import torch

from dmae_tpm.infonce import InfoNCE
from dmae_tpm.methods.dmae_tpm.negnce import NegNCE, NegNCEConfig
from dmae_tpm.methods.dmae_tpm.objective import LossConfig, build_contrastive_loss, total_objective

F64 = torch.float64


def _contrastive():
    return {"loss": torch.tensor(1.5, dtype=F64), "loss_p_t2v": torch.tensor(1.0, dtype=F64),
            "loss_p_v2t": torch.tensor(2.0, dtype=F64), "num_hard": torch.tensor(3.0, dtype=F64)}


def _tpm():
    return {"loss": torch.tensor(0.9, dtype=F64), "trpl1": torch.tensor(0.2, dtype=F64),
            "trpl2": torch.tensor(0.3, dtype=F64), "trpl3": torch.tensor(0.4, dtype=F64),
            "masked_text_frac": torch.tensor(0.25, dtype=F64)}


def test_total_objective_sums_the_terms():
    out = total_objective(_contrastive(), _tpm())
    assert out["loss"].item() == pytest.approx(1.5 + 0.9, abs=1e-15)  # Eq. 19
    assert out["loss_contrastive"].item() == 1.5
    assert out["loss_tpm"].item() == 0.9


def test_total_objective_logged_names():
    out = total_objective(_contrastive(), _tpm())
    assert set(out) == {"loss", "loss_contrastive", "loss_tpm",
                        "contrastive/loss_p_t2v", "contrastive/loss_p_v2t", "contrastive/num_hard",
                        "tpm/trpl1", "tpm/trpl2", "tpm/trpl3", "tpm/masked_text_frac"}
    assert out["contrastive/num_hard"].item() == 3.0
    assert out["tpm/trpl3"].item() == 0.4


def test_total_objective_without_tpm_is_contrastive_only():
    c = _contrastive()
    out = total_objective(c, None)
    assert out["loss"] is c["loss"]
    assert set(out) == {"loss", "loss_contrastive", "contrastive/loss_p_t2v", "contrastive/loss_p_v2t",
                        "contrastive/num_hard"}
    assert not any(k.startswith("tpm") for k in out)


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0])
def test_tpm_weight_scales_only_the_tpm_term(w):
    c_loss = torch.tensor(1.5, dtype=F64, requires_grad=True)
    t_loss = torch.tensor(0.9, dtype=F64, requires_grad=True)
    c, t = _contrastive(), _tpm()
    c["loss"], t["loss"] = c_loss, t_loss
    out = total_objective(c, t, tpm_weight=w)
    assert out["loss"].item() == pytest.approx(1.5 + w * 0.9, abs=1e-15)
    assert out["loss_tpm"].item() == 0.9  # logged unscaled
    assert out["loss_contrastive"].item() == 1.5
    assert out["tpm/trpl1"].item() == 0.2 and out["contrastive/loss_p_t2v"].item() == 1.0
    out["loss"].backward()
    assert c_loss.grad.item() == 1.0 and t_loss.grad.item() == w


def test_total_objective_with_real_losses_backpropagates():
    sim = (torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.3).requires_grad_(True)
    contrastive = NegNCE(NegNCEConfig())(sim, 10.0)
    partial = torch.tensor([0.1, 0.2], dtype=F64, requires_grad=True)
    tpm = {"loss": partial.sum(), "trpl1": partial[0]}
    out = total_objective(contrastive, tpm)
    torch.testing.assert_close(out["loss"], contrastive["loss"] + partial.sum())
    assert {"contrastive/loss_n_t2v", "contrastive/loss_n_v2t", "contrastive/num_hard", "tpm/trpl1"} <= set(out)
    out["loss"].backward()
    assert torch.isfinite(sim.grad).all() and sim.grad.abs().sum() > 0
    assert partial.grad.tolist() == [1.0, 1.0]


def test_build_contrastive_loss_and_config():
    assert isinstance(build_contrastive_loss(LossConfig(name="infonce")), InfoNCE)
    neg = build_contrastive_loss(LossConfig(name="negnce", negnce=NegNCEConfig(gamma2=0.25)))
    assert isinstance(neg, NegNCE) and neg.cfg.gamma2 == 0.25
    assert LossConfig().name == "negnce" and LossConfig().tpm_weight == 1.0  # Eq. 19 adds L_TPM unweighted
    with pytest.raises(ValueError):
        LossConfig(name="triplet")
