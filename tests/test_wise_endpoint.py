"""WiSE-FT's endpoint under the standard-error rule (``RobustFit.keep``): where ``select_se`` keeps an earlier
fine-tuned epoch than the best on val, WiSE-FT mixes the start with that epoch (the weights the loop left), not the best
one; at ``select_se=0`` (or where the rule keeps the start) its endpoint is the best fine-tuned epoch.  The real loop
and RobustFit around a projector trained a few steps, with fixed per-item val scores per epoch (so the rule's choice
is known: epoch 1 within one standard error of epoch 3's best)."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from anybind.loop import fit_loop
from anybind.projectors import Projector, ProjectorConfig
from anybind.robust import RobustFit, snapshot
from anybind.train import TrainConfig

PATTERN = np.tile([0.3, -0.3], 10)  # 20 val items, mean 0: each epoch's items are its mean plus this (SE ~0.069)
MEANS = {0: 0.50, 1: 0.60, 2: 0.62, 3: 0.63}  # record after record; epoch 1 is within 1 SE of epoch 3, epoch 0 not


def _run(select_se: float, wise):
    torch.manual_seed(0)
    pr = Projector(ProjectorConfig(in_dim=4, out_dim=3, kind="linear", input_dropout=0.0, dropout=0.0))
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.projectors = nn.ModuleDict({"image": pr})

        def forward(self, batch):
            return (self.projectors["image"](batch) - 1.0).pow(2).mean()

    model, logit_scale = Model(), nn.Parameter(torch.tensor(2.0))
    rob = RobustFit(TrainConfig(lock="text", init="ridge", wise=wise, select_se=select_se), {"image": pr}, logit_scale)
    seen = {}

    def score(epoch: int):
        seen[epoch] = snapshot({"image": pr})["image"]
        items = MEANS[epoch] + PATTERN
        return items if select_se > 0 else float(items.mean())

    opt = torch.optim.SGD(pr.parameters(), lr=0.1)
    res = fit_loop(model, itertools.repeat(x), opt, logit_scale, epochs=3, steps=2, use_val=True, patience=5,
                   score=score, keep={"projectors": model.projectors}, start=True, progress=False,
                   on_epoch=rob.on_epoch, select_se=select_se)
    rob.keep(res)
    _, rec = rob.finish(res.logit_scale, lambda: MEANS[1] + PATTERN)
    return res, rec, pr.state_dict(), seen


@pytest.mark.parametrize("select_se, endpoint", [(1.0, 1), (0.0, 3)])
def test_wise_mixes_the_start_with_the_epoch_the_rule_kept(select_se, endpoint):
    res, rec, state, seen = _run(select_se, 1.0)  # alpha 1: the endpoint itself
    assert res.best_epoch == endpoint and (res.se_rule is not None) == (select_se > 0)
    if res.se_rule is not None:
        assert res.se_rule["best"] == 3 and res.se_rule["chosen"] == 1
    assert rec["wise_endpoint_epoch"] == endpoint and rec["wise_alpha"] == 1.0
    assert state.keys() == seen[endpoint].keys()
    assert all(torch.equal(state[k], seen[endpoint][k]) for k in state)  # the endpoint's weights, bit for bit
    assert not all(torch.equal(seen[3][k], seen[1][k]) for k in state)  # the two epochs' weights do differ


def test_wise_auto_under_the_rule_mixes_from_the_kept_epoch():
    res, rec, _, _ = _run(1.0, "auto")
    assert res.best_epoch == 1 and rec["wise_endpoint_epoch"] == 1 and "wise_se_rule" in rec
