"""The start state the streaming trainer hands Ray's workers carries a base gate (anybind.base_gate); the
distributed solve's cases are tests/test_base_gate_trainers.py's."""

import torch

from anybind.projectors import Projector, ProjectorConfig, load_start_state, start_state


def test_the_start_state_carries_the_gate_to_a_projector_without_one():
    """What the streaming trainer hands Ray's workers (tensors only): the gate's width and quantile ride along."""
    torch.manual_seed(0)
    a = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
    a.set_gate(torch.nn.functional.normalize(torch.randn(5, 4), dim=-1), torch.rand(3).sort().values, 4, 0.2)
    b = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
    load_start_state(b, start_state(a))
    x = torch.randn(7, 6)
    assert b.cfg == a.cfg and torch.equal(b(x), a(x))
    load_start_state(b, start_state(Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear"))))
    assert b.cfg.gate == 0 and not hasattr(b, "gate_support")
