"""The loaded model holds its weights once (issue 25): float32 parameters use the checkpoint tensors' memory
after load_state_dict; half-precision checkpoints keep their own (upcast) copies; the numbers are unchanged."""

from __future__ import annotations

import torch

from conftest import EXAMPLES
from fadiag.subject import load


def test_float32_weights_are_held_once():
    s = load(str(EXAMPLES / "resmlp_bp.pt"), batches=1, batch_size=4)
    own = s.model.state_dict(keep_vars=True)
    shared = [k for k, t in s.state_dict.items() if own[k].data_ptr() == t.data_ptr()]
    assert shared and len(shared) == len([k for k, t in s.state_dict.items() if t.is_floating_point()])
    for k, t in s.state_dict.items():
        assert torch.equal(own[k].detach(), t)
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in s.model.parameters())


def test_half_weights_keep_the_upcast_copy(tmp_path):
    sd = torch.load(EXAMPLES / "resmlp_bp.pt", weights_only=True)
    sd = sd.get("model", sd) if isinstance(sd, dict) else sd
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    (tmp_path / "h.yaml").write_text((EXAMPLES / "resmlp_bp.yaml").read_text())
    torch.save({"model": half}, tmp_path / "h.pt")
    s = load(str(tmp_path / "h.pt"), str(EXAMPLES / "resmlp_bp.yaml"), batches=1, batch_size=4)
    for k, p in s.model.state_dict(keep_vars=True).items():
        if p.is_floating_point():
            assert p.dtype == torch.float32 and p.data_ptr() != s.state_dict[k].data_ptr()
            assert torch.equal(p.detach(), s.state_dict[k].float())
