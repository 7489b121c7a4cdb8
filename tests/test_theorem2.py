"""Lillicrap et al. 2016, Theorem 2: Δh_FA is a positive multiple of Δh_PBP = W⁺ e."""

import numpy as np
import torch

import bioprop as bp


def test_fa_hidden_update_is_a_positive_multiple_of_the_pseudoinverse_update(tmp_path):
    # single input/target pair, zero initial weights, linear 30-20-10, η_A = η_W / xᵀx
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 30, generator=g, dtype=torch.float64)
    y = torch.randn(1, 10, generator=g, dtype=torch.float64)
    data = bp.data.Dataset("single-pair", x, y, x, y, "regression")
    c = bp.Circuit.layered([30, 20, 10], activation="linear", init="zeros", bias=False).double()
    rule = bp.rules.get("fa", feedback_init=bp.init.uniform(0.5))
    eta_w = 0.01
    eta_a = eta_w / float(x @ x.t())

    def optimizer(circuit):
        return torch.optim.SGD(
            [
                {"params": [circuit.pathways["input->hidden"].weight], "lr": eta_a},
                {"params": [circuit.pathways["hidden->output"].weight], "lr": eta_w},
            ]
        )

    path = tmp_path / "theorem2.h5"
    bp.train(
        c,
        rule,
        data,
        optimizer=optimizer,
        epochs=60,
        batch_size=1,
        record=bp.Record(path, every=1, shadow=True),
        progress=False,
    )
    rec = bp.load(path)
    pinv_angle = bp.analysis.pseudoinverse_angle(rec, "hidden->output")
    # W = 0 for the first two steps (no pseudoinverse direction yet); afterwards angle 0
    later = pinv_angle.sel(step=slice(2, None)).values
    assert np.all(later < 1e-3), later  # signed angle 0: a *positive* multiple
    # and the run does learn: the error shrinks along the way
    loss = rec["metrics"]["loss"].values
    assert loss[-1] < 0.5 * loss[0]
