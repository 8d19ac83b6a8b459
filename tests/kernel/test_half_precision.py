"""CHECKLIST item fp16 (docs/science.md §2 pitfall 3): half-precision checkpoints are detected, warned about,
and computed in float32/float64, so a BP gradient of ~1e-9 is not flushed to zero."""

from __future__ import annotations

import json



def test_fp16_checkpoint_is_upcast_and_warned(tiny_resmlp_ckpt, run_cli, tmp_path):
    f32 = tiny_resmlp_ckpt(folder=tmp_path / "a")
    half_sd = {k: v.half() for k, v in f32.state_dict.items()}
    f16 = tiny_resmlp_ckpt(folder=tmp_path / "b", edit=lambda sd: sd.update(half_sd))
    code, out, err = run_cli(["audit", f16.ckpt, "-f", "json"])
    rep = json.loads(out)
    assert rep["weight_dtypes"] == ["float16"]
    assert "float16 weights" in err and "float32" in err
    # The numbers equal a float32 run on the same (rounded) weights, to float32 precision.
    rounded = {k: v.half().float() for k, v in f32.state_dict.items()}
    f32r = tiny_resmlp_ckpt(folder=tmp_path / "c", edit=lambda sd: sd.update(rounded))
    code2, out2, _ = run_cli(["audit", f32r.ckpt, "-f", "json", "-q"])
    ref = json.loads(out2)
    for a, b in zip(rep["bp_grad_norms"], ref["bp_grad_norms"]):
        assert abs(a - b) <= 1e-6 * abs(b)
