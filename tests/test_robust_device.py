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
