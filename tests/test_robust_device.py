"""WiSE-FT and L2-SP around a loop that trains on another device than the CPU (a GPU: fit_loop places the projectors
there and moves them back at the end), while their start was snapshotted on the CPU before the loop."""

import pytest
import torch

from anybind.projectors import Projector, ProjectorConfig
from anybind.robust import l2sp_penalty, snapshot


def test_l2sp_reads_its_cpu_start_on_the_device_the_projectors_train_on():
    pr = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0))
    start = snapshot({"image": pr})
    on_device = pr.to("meta")  # a device other than the start's (values need no GPU to check the placement)
    out = l2sp_penalty({"image": on_device}, start, 0.1)
    assert out.device.type == "meta"


def test_l2sp_moves_its_start_to_the_device_once_with_the_same_penalty(monkeypatch):
    """RobustFit's penalty keeps the start where the parameters train (moved on the first step, not every step), and
    gives the penalty the per-step move gave, bit for bit, on the CPU; on another device the cache follows it."""
    from anybind.robust import RobustFit
    from anybind.train import TrainConfig

    torch.manual_seed(0)
    pr = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="mlp", hidden=8, input_dropout=0.0, dropout=0.0))
    rob = RobustFit(TrainConfig(lock="text", init="ridge", l2sp=0.1), {"image": pr}, torch.zeros(()))
    start = snapshot({"image": pr})
    with torch.no_grad():
        for p in pr.parameters():
            p.add_(torch.randn_like(p))
    moves = []
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: moves.append(1) or real_to(t, *a, **k))
    penalty = rob.penalty
    first = penalty()
    n = len(moves)
    assert n == len(list(pr.parameters())) and torch.equal(penalty(), first) and len(moves) == n  # once
    assert torch.equal(first, l2sp_penalty({"image": pr}, start, 0.1))
    pr.to("meta")
    moves.clear()
    assert penalty().device.type == "meta" and len(moves) == n  # moved again, once
    assert penalty().device.type == "meta" and len(moves) == n


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_space_fit_on_cuda_with_wise_and_l2sp_ends_on_the_cpu(monkeypatch):
    """Before: on_epoch kept the best epoch's weights on the GPU and WiSE-FT's lerp with the CPU start failed
    ('Expected all tensors to be on the same device'); L2-SP subtracted a CPU start from GPU parameters."""
    from test_kernel_start import concept_features

    from anybind.encoders.device import use_runtime
    from anybind.train import TrainConfig, train_space

    fs = concept_features(monkeypatch)
    cfg = TrainConfig(lock="text", init="ridge", ridge_prior="bridge", start_guard=True, kernel_start=True,
                      epochs=2, hidden=16, wise="auto", l2sp=0.01)
    with use_runtime("cuda"):
        space = train_space(fs, cfg, progress=False)
    assert all(v.device.type == "cpu" for p in space.projectors.values() for v in p.state_dict().values())
    assert "wise_alpha" in space.info["training"]["robust"]
