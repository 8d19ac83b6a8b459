"""Regenerate tests/corpus/: small, fixed, byte-reproducible bad inputs for tests/safety/test_safety_fuzz.py.

    python tests/corpus/make_corpus.py            # rewrite the corpus beside this script
    python tests/corpus/make_corpus.py OUT_DIR    # or anywhere else (the test does this to prove it is fresh)

Layout:
    base/tiny.pt, base/tiny.yaml, base/tiny_data.npz   a valid tiny ResMLP (in_dim 8, width 8, depth 3,
                                                       3 classes; seed 6, as conftest.tiny_resmlp)
    ckpt/*        bad checkpoints, run as   audit FILE --spec base/tiny.yaml   (and inspect FILE)
    hostile/*     attack families (docs/safety.md), each with the runs it must pass ("runs": command,
                  arguments, exit codes allowed, substrings of its stderr line or JSON output)
    honest/*      honest files from real frameworks' layouts (torch.save variants, Lightning, Hugging Face,
                  numpy extras), each with its outcome asserted per run
    spec/*.yaml   bad specs, run as         audit base/tiny.pt --spec FILE
    data/*.npz    bad eval data (8 rows), run as
                  audit base/tiny.pt --spec base/tiny.yaml --data FILE --batches 2 --batch-size 4
    manifest.json one entry per bad file: role, the exit codes allowed, the substrings its one stderr
                  line must hold, and "xfail" (a known fadiag bug) where fadiag does not meet the contract yet.

Big or odd families are not committed but written on demand by ``build_big(out)`` (a 1 GiB zip member, a
100 MiB opcode stream, the downloaded-folder attack with its helper.py, a file name with ANSI escapes,
a TorchScript archive): tests/safety/test_safety_limits.py runs them, under ``prlimit --as`` where it can.

Everything is derived from the seeded tiny checkpoint; zip members get a fixed timestamp and torch's random
serialization id is pinned, so two runs write identical bytes (for one torch/numpy version). The pickled
object array in data/x_object.npz would run ``touch FADIAG_CORPUS_MARKER`` if anything ever unpickled it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
ARGS = {"in_dim": 8, "width": 8, "depth": 3, "n_classes": 3}
SEED = 6
ROWS = 64
DATA_ROWS = 8
"""Rows in data/*.npz: the tests run them with --batches 2 --batch-size 4 to keep the corpus small."""
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MARKER = "FADIAG_CORPUS_MARKER"


# ------------------------------------------------------------------------------ deterministic writers

def _zip_bytes(members: list, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def torch_bytes(obj, legacy: bool = False, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    if legacy:
        return _pin_legacy_keys(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        members = [(n, b"0" * 20 if n.endswith("serialization_id") else z.read(n)) for n in z.namelist()]
    return _zip_bytes(members)


def one_storage(sd: dict) -> dict:
    """The same tensors as views of ONE storage: the legacy format then writes its storages in a fixed order."""
    flat = torch.cat([v.reshape(-1) for v in sd.values()])
    out, at = {}, 0
    for k, v in sd.items():
        out[k] = flat[at:at + v.numel()].view(v.shape)
        at += v.numel()
    return out


def _pin_legacy_keys(raw: bytes) -> bytes:
    """Legacy files name storages by a memory address (of varying length): swap each for a fixed name."""
    import pickle
    import pickletools

    f = io.BytesIO(raw)
    for _ in range(4):  # magic, protocol, sys_info, the object: skip over each pickle without loading it
        for op, _arg, _pos in pickletools.genops(f):
            if op.name == "STOP":
                break
    keys = pickle.load(f)  # a plain list of str, in no stable order: number them by first use instead
    for i, k in enumerate(sorted(keys, key=lambda k: raw.find(k.encode()))):
        # each key is a BINUNICODE string (protocol 2 has no frames): swap the opcode whole, length included
        old = b"X" + struct.pack("<I", len(k)) + k.encode()
        raw = raw.replace(old, b"X" + struct.pack("<I", 4) + f"k{i:03d}".encode())
    return raw


def npy_bytes(arr) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array(b, np.asanyarray(arr), allow_pickle=True)
    return b.getvalue()


def npz_bytes(arrays: dict) -> bytes:
    return _zip_bytes([(f"{k}.npy", npy_bytes(v)) for k, v in arrays.items()])


def npy_header(shape, descr="<f4", data=b"\0" * 8) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue() + data


def safetensors_bytes(header, data: bytes = b"", length: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    if length is None and len(h) % 256 == 0x80:  # keep the first byte off 0x80 (a pickle PROTO): see fuzz tests
        h += b" " * 8
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def flip(raw: bytes, *positions: int) -> bytes:
    b = bytearray(raw)
    for p in positions:
        b[p % len(b)] ^= 0x10
    return bytes(b)


class _Touch:
    """Unpickling this would run ``touch MARKER`` in the working directory."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


# -------------------------------------------------------------------------------------------- the base

def tiny_state() -> dict:
    from fadiag.models.resmlp import ResMLP

    torch.manual_seed(SEED)
    m = ResMLP(**ARGS).eval()
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def tiny_xy():
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(ROWS, ARGS["in_dim"], generator=g)
    y = torch.randint(0, ARGS["n_classes"], (ROWS,), generator=g)
    return x.numpy(), y.numpy()


BASE_SPEC = {
    "model": {"arch": "resmlp", "args": dict(ARGS)},
    "checkpoint": {"state_dict": "auto"},
    "data": {"source": "npz", "path": "tiny_data.npz", "batch_size": 16, "batches": 4},
    "audit": {"method_name": "corpus"},
}


def _spec(**sections) -> dict:
    """BASE_SPEC with the data path made relative to spec/, then sections replaced (None deletes one)."""
    s = json.loads(json.dumps(BASE_SPEC))
    s["data"]["path"] = "../base/tiny_data.npz"
    for k, v in sections.items():
        if v is None:
            s.pop(k, None)
        else:
            s[k] = v
    return s


def _with(section: str, **kv) -> dict:
    s = _spec()
    s[section] = {**s.get(section, {}), **kv}
    return s


def _dump(d: dict) -> bytes:
    return yaml.safe_dump(d, sort_keys=False).encode()


# ------------------------------------------------------------------------------------------ the cases

def torch_members(obj, **save_kw) -> list:
    """[(name, bytes)] of torch.save(obj), serialization id pinned."""
    buf = io.BytesIO()
    torch.save(obj, buf, **save_kw)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return [(n, b"0" * 20 if n.endswith("serialization_id") else z.read(n)) for n in z.namelist()]


def evil_pickle() -> bytes:
    """{"model": 1, "hook": <os.system("touch MARKER")>} as a protocol-2 pickle."""
    import pickle

    return pickle.dumps({"model": 1, "hook": _Touch()}, protocol=2)


def laughs(levels: int = 9, width: int = 10) -> list:
    """x = [x] * width, ``levels`` deep: a few hundred bytes pickled (shared references), width**levels leaves."""
    a = ["lol"]
    for _ in range(levels):
        a = [a] * width
    return a


def ops_stream(n_ops: int) -> bytes:
    """A protocol-2 pickle of ~n_ops opcodes that builds one self-referencing list (BINGET 0; APPEND)."""
    return b"\x80\x02]q\x00" + b"h\x00a" * (n_ops // 2) + b"."


def hostile_cases(sd: dict) -> dict:
    """name -> (bytes, runs) for the committed attack families (each a few KB, a few at ~100 KB)."""
    tiny = torch_members({"model": sd})
    pkl = next(n for n, _ in tiny if n.endswith("/data.pkl"))
    top = pkl.split("/")[0]

    def with_members(extra, replace=None, compress=False):
        members = [(n, (replace if replace is not None and n == pkl else b)) for n, b in tiny]
        return _zip_bytes(members + extra, compress=compress)

    def dup(first, last):
        members = []
        for n, b in tiny:
            members += [(n, first), (n, last)] if n == pkl else [(n, b)]
        return _zip_bytes(members)

    A = ["audit", "{file}", "--spec", "{spec}", "-f", "json"]
    I = ["inspect", "{file}", "-f", "json"]

    def runs(audit_codes, audit_needles, inspect_codes, inspect_needles=()):
        return [{"args": A, "codes": list(audit_codes), "needles": list(audit_needles)},
                {"args": I, "codes": list(inspect_codes), "needles": list(inspect_needles)}]

    nan_view = torch.full((1,), float("nan")).expand(2**20, 2**20)
    sparse_bad = torch.sparse_coo_tensor(torch.tensor([[5], [0]]), torch.tensor([1.0]), (2, 2), check_invariants=False)
    meta = {**sd, "embed.weight": torch.empty(sd["embed.weight"].shape, device="meta")}
    bytearray_bomb = b"\x80\x02c__builtin__\nbytearray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85R."  # bytearray(2**40)
    cases = {
        # resource attacks: inspect walks under budgets, audit finds no state dict
        "laughs.pt": (torch_bytes(laughs()), runs([2], ["cannot find a state dict"], [1], ["walk stopped"])),
        "laughs_beside_model.pt": (torch_bytes({"model": sd, "hook": laughs()}),
                                   runs([0, 1], [], [1], ["visit budget"])),
        "nested_lists.pt": (torch_bytes([[[1] * 1000] * 1000] * 1000), runs([2], ["state dict"], [1], ["walk stopped"])),
        "zero_stride_2e15.pt": (torch_bytes({"model": {**sd, "big": torch.zeros(1).expand(2**15, 2**15)}}),
                                runs([2], ["unexpected", "big"], [0], ["overlapping view"])),
        "zero_stride_nan_2e20.pt": (torch_bytes({"model": sd, "big": nan_view}),
                                    runs([0, 1], [], [1], ["overlapping view", "nonfinite"])),
        "bytearray_2e40.pt": (with_members([], replace=bytearray_bomb), runs([2], ["memory"], [2], ["memory"])),
        # tensors fadiag cannot audit: one line, exit 2 (inspect lists them)
        "meta_tensor.pt": (torch_bytes({"model": meta}), runs([2], ["meta device"], [1], ["meta tensor"])),
        "sparse_coo.pt": (torch_bytes({"model": {**sd, "embed.weight": sd["embed.weight"].to_sparse()}}),
                          runs([2], ["sparse", "embed.weight"], [0], ["sparse_coo"])),
        "sparse_csr.pt": (torch_bytes({"model": {**sd, "embed.weight": sd["embed.weight"].to_sparse_csr()}}),
                          runs([2], ["sparse", "embed.weight"], [0], ["sparse_csr"])),
        "sparse_bad_indices.pt": (torch_bytes({"model": {**sd, "embed.weight": sparse_bad}}),
                                  runs([2], ["corrupt"], [2], ["corrupt"])),
        "nested_tensor.pt": (torch_bytes({"model": {**sd, "nt": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])}}),
                             runs([2], ["nested tensor"], [0], ["nested tensor of 2"])),
        # what torch never reads, and what it reads first
        "extra_pkl_evil.pt": (with_members([(f"{top}/extra.pkl", evil_pickle())]),
                              runs([2], ["tampered", "extra.pkl", "system"], [1], ["extra pickle member", "system"])),
        "extra_pkl_65mib.pt": (with_members([(f"{top}/big.pkl", ops_stream(65 * 2**20 // 3 * 2))], compress=True),
                               runs([2], ["tampered", "big.pkl"], [1], ["extra pickle member"])),
        "dup_data_pkl_evil_last.pt": (dup(dict(tiny)[pkl], evil_pickle()),
                                      runs([2], ["refusing to unpickle", "system"], [1], ["system", "dangerous"])),
        "dup_data_pkl_evil_first.pt": (dup(evil_pickle(), dict(tiny)[pkl]),
                                       runs([2], ["tampered", "more than once", "system"], [1], ["more than once"])),
        "pickle_then_zip.pt": (evil_pickle() + torch_bytes({"model": sd}),
                               runs([2], ["refusing to unpickle", "system"], [1], ["system", "dangerous"])),
        "zip_bomb_extra_member.pt": (with_members([(f"{top}/junk", b"\0" * (300 * 2**20))], compress=True),
                                     runs([2], ["zip bomb"], [2], ["zip bomb"])),
    }
    return cases


def honest_cases(sd: dict) -> dict:
    """name -> (bytes, runs): files real tools write, with what fadiag must do with each."""
    import argparse

    from fadiag.models.resmlp import ResMLP

    A = ["audit", "{file}", "--spec", "{spec}", "-f", "json"]
    T = A + ["--trust-checkpoint"]
    I = ["inspect", "{file}", "-f", "json"]

    def run(args, codes, needles=()):
        return {"args": args, "codes": list(codes), "needles": list(needles)}

    torch.manual_seed(SEED)
    module = ResMLP(**ARGS).eval()
    lightning = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.6",
        "state_dict": {f"model.{k}": v for k, v in sd.items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {"best_model_score": torch.tensor(0.5),
                                                                               "best_model_path": "ckpt/epoch=3.ckpt"}},
        "optimizer_states": [{"state": {i: {"step": torch.tensor(120.0), "exp_avg": torch.zeros_like(v),
                                            "exp_avg_sq": torch.zeros_like(v)} for i, v in enumerate(sd.values())},
                              "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                                "amsgrad": False, "params": list(range(len(sd)))}]}],
        "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 1e-3, "depth": 3},
    }
    x, _ = tiny_xy()
    return {
        "torch_zip.pt": (torch_bytes({"model": sd}), [run(A, [0, 1]), run(I, [0], ['"verdict": "trustworthy"'])]),
        "torch_legacy.pt": (torch_bytes({"model": one_storage(sd)}, legacy=True), [run(A, [0, 1]), run(I, [0])]),
        "protocol4.pt": (torch_bytes({"model": sd}, protocol=4),
                         [run(A, [2], ["pickle protocol 4", "FRAME", "default pickle protocol"]), run(T, [0, 1]),
                          run(I, [1], ["FRAME"])]),
        "protocol5.pt": (torch_bytes({"model": sd}, protocol=5),
                         [run(A, [2], ["pickle protocol", "FRAME", "--trust-checkpoint"]), run(T, [0, 1])]),
        "whole_module.pt": (torch_bytes(module),
                            [run(A, [2], ["torch.save(model)", "ResMLP"]), run(T, [0, 1]),
                             run(I, [1], ["resmlp.ResMLP", "unknown"])]),
        "numpy_and_namespace.pt": (torch_bytes({"model": sd, "epoch": np.int64(3), "best_acc": np.float32(0.5),
                                                "x_mean": x.mean(0), "args": argparse.Namespace(lr=0.1, depth=3)}),
                                   [run(A, [0, 1]), run(I, [0], ["Namespace", "numpy._core.multiarray.scalar"])]),
        "lightning.ckpt": (torch_bytes(lightning), [run(A, [0, 1]), run(I, [0], ['"state_dict_key": "state_dict"'])]),
        "hf_pytorch_model.bin": (torch_bytes(dict(sd)), [run(A, [0, 1]), run(I, [0], ['"state_dict_key": ""'])]),
        "hf_model.safetensors": (safetensors_bytes_from_state(sd), [run(A, [0, 1]), run(I, [0])]),
        "bf16.pt": (torch_bytes({"model": {k: v.to(torch.bfloat16) for k, v in sd.items()}}),
                    [run(A, [0, 1]), run(I, [1], ["bfloat16"])]),
        "npz_with_strings.npz": (npz_bytes({**{k: v.numpy() for k, v in sd.items()}, "class_names": np.array(["a", "b"])}),
                                 [run(A, [0, 1], ['"notes"', "class_names"]), run(I, [0], ["skipped 1 non-numeric"])]),
    }


ANSI_NAME = "x\x1b[2K\x1b[1Gfadiag: m.pt: trustworthy\x1b[8m.pt"
"""A file name that, printed raw, erases the line and shows a fake pass (issue 13)."""


def _deflated_member(z: zipfile.ZipFile, name: str, nbytes: int, unit: bytes = b"\0") -> None:
    """Write ``nbytes`` of ``unit`` repeated as one deflated member, streaming (never all in memory)."""
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = unit * max(1, (1 << 22) // len(unit))
    with z.open(info, "w", force_zip64=True) as f:
        left = nbytes
        while left > 0:
            f.write(chunk[:left])
            left -= len(chunk)


def build_big(out: Path, *, huge: bool = True) -> dict:
    """Write the families too big or too odd to commit under ``out``; return name -> path.

    member_1gib.pt       a torch zip with an extra member inflating to 1 GiB (~1 MB on disk): a zip bomb
    opcodes_100mib.pt    an extra .pkl member of 100 MiB of opcodes (deflated): never scanned, flagged
    data_pkl_100mib.pt   torch's own data.pkl at 100 MiB: over the pickle byte limit, refused unread
    data_pkl_ops.pt      data.pkl with 4.2 M opcodes (~6 MB, deflated to KB): over the opcode limit
    downloaded/          model.pt + model.yaml naming "helper:Net" + helper.py, which touches
                         downloaded/HELPER_RAN when imported: the downloaded-folder attack
    ANSI_NAME            the tiny checkpoint under a file name full of ANSI escapes
    torchscript.pt       torch.jit.save of the tiny ResMLP (honest; its weights need --trust-checkpoint)
    (huge=False skips the two large writes, member_1gib and opcodes_100mib.)
    """
    sd = tiny_state()
    out.mkdir(parents=True, exist_ok=True)
    tiny = torch_members({"model": sd})
    top = tiny[0][0].split("/")[0]
    pkl = f"{top}/data.pkl"
    paths = {}

    def torch_zip(name, extra=None, data_pkl=None):
        p = out / name
        with zipfile.ZipFile(p, "w") as z:
            for n, b in tiny:
                z.writestr(zipfile.ZipInfo(n, date_time=FIXED_TIME), data_pkl if (data_pkl and n == pkl) else b)
            if extra:
                extra(z)
        paths[name] = p

    if huge:
        torch_zip("member_1gib.pt", lambda z: _deflated_member(z, f"{top}/junk", 2**30))
        torch_zip("opcodes_100mib.pt", lambda z: _deflated_member(z, f"{top}/extra.pkl", 100 * 2**20, b"h\x00a"))
    p = out / "data_pkl_100mib.pt"
    with zipfile.ZipFile(p, "w") as z:
        for n, b in tiny:
            if n == pkl:
                _deflated_member(z, n, 100 * 2**20, b"h\x00a")
            else:
                z.writestr(zipfile.ZipInfo(n, date_time=FIXED_TIME), b)
    paths["data_pkl_100mib.pt"] = p
    torch_zip("data_pkl_ops.pt", data_pkl=ops_stream(4_200_000))

    d = out / "downloaded"
    d.mkdir(exist_ok=True)
    (d / "model.pt").write_bytes(torch_bytes({"model": sd}))
    spec = json.loads(json.dumps(BASE_SPEC))
    spec["model"]["arch"] = "helper:Net"
    spec["data"] = {"source": "npz", "path": "data.npz", "batch_size": 16, "batches": 4}
    (d / "model.yaml").write_bytes(_dump(spec))
    x, y = tiny_xy()
    (d / "data.npz").write_bytes(npz_bytes({"x": x, "y": y}))
    (d / "helper.py").write_text(
        "import pathlib\n"
        "pathlib.Path(__file__).with_name('HELPER_RAN').touch()  # the 'payload': proof that this file ran\n"
        "from fadiag.models.resmlp import ResMLP\n\n\nclass Net(ResMLP):\n    pass\n")
    paths["downloaded"] = d

    a = out / ANSI_NAME
    a.write_bytes(torch_bytes({"model": sd}))
    paths["ansi"] = a

    from fadiag.models.resmlp import ResMLP

    torch.manual_seed(SEED)
    ts = out / "torchscript.pt"
    torch.jit.save(torch.jit.trace(ResMLP(**ARGS).eval(), torch.zeros(2, ARGS["in_dim"])), str(ts))
    paths["torchscript.pt"] = ts
    return paths


def build(out: Path) -> dict:
    """Write the corpus under ``out``; return the manifest (also written as manifest.json)."""
    sd = tiny_state()
    x, y = tiny_xy()
    files: dict[str, bytes] = {}
    manifest: dict[str, dict] = {}

    def case(role, name, data, needles=(), codes=(2,), xfail=None):
        rel = f"{role}/{name}"
        files[rel] = data
        entry = {"role": role, "codes": list(codes), "needles": list(needles)}
        if xfail:
            entry["xfail"] = xfail
        manifest[rel] = entry

    pt = torch_bytes({"model": sd})
    legacy = torch_bytes({"model": one_storage(sd)}, legacy=True)
    st = safetensors_bytes_from_state(sd)
    npz = npz_bytes({k: v.numpy() for k, v in sd.items()})
    files["base/tiny.pt"] = pt
    files["base/tiny.yaml"] = _dump(BASE_SPEC)
    files["base/tiny_data.npz"] = npz_bytes({"x": x, "y": y})

    # --- checkpoints: truncated, bit-flipped, hostile headers -----------------------------------------
    case("ckpt", "empty.pt", b"", ["empty"])
    case("ckpt", "text.pt", b"model:\n  arch: resmlp\n", ["unrecognised file format"])
    case("ckpt", "pt_trunc_30.pt", pt[:30], ["corrupt"])
    case("ckpt", "pt_trunc_half.pt", pt[: len(pt) // 2], ["corrupt"])
    case("ckpt", "pt_trunc_minus1.pt", pt[:-1], ["corrupt"])
    case("ckpt", "legacy_trunc_half.pt", legacy[: len(legacy) // 2], ["corrupt"])
    case("ckpt", "legacy_trunc_40.pt", legacy[:40], ["corrupt"])
    pkl_at = pt.find(b"data.pkl") + 40  # inside the pickle stream
    case("ckpt", "pt_flip_pickle.pt", flip(pt, pkl_at, pkl_at + 7), codes=(0, 1, 2))
    case("ckpt", "pt_flip_tensor.pt", flip(pt, pt.find(b"data/0") + 80), codes=(0, 1, 2))
    case("ckpt", "pt_flip_magic.pt", flip(pt[:256], 0), ["unrecognised file format"])
    case("ckpt", "legacy_flip.pt", flip(legacy, 60, 61), codes=(0, 1, 2))
    case("ckpt", "st_trunc_7.safetensors", st[:7], codes=(2,))
    case("ckpt", "st_trunc_half.safetensors", st[: len(st) // 2], ["safetensors"])
    case("ckpt", "st_flip_header.safetensors", flip(st, 20), codes=(0, 1, 2))
    one = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    case("ckpt", "st_len_huge.safetensors", safetensors_bytes(one, b"\0" * 4, length=2**63), ["header length"])
    case("ckpt", "st_len_max.safetensors", safetensors_bytes(one, b"\0" * 4, length=2**64 - 1), ["header length"])
    case("ckpt", "st_len_past_end.safetensors", safetensors_bytes(one, b"\0" * 4, length=10**6), ["header length"])
    for nm, offs in (("neg", [-4, 0]), ("reversed", [4, 0]), ("past_end", [0, 4000]), ("huge", [0, 2**70]),
                     ("float", [0.0, 4.0]), ("string", "0,4")):
        case("ckpt", f"st_offsets_{nm}.safetensors",
             safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": offs}}, b"\0" * 4), ["offsets"])
    case("ckpt", "st_shape_mismatch.safetensors",
         safetensors_bytes({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4]}}, b"\0" * 4),
         ["safetensors"])
    case("ckpt", "st_shape_overflow.safetensors",
         safetensors_bytes({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, b"\0" * 4),
         ["safetensors"])
    case("ckpt", "st_dtype_unknown.safetensors",
         safetensors_bytes({"w": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), ["safetensors"])
    case("ckpt", "st_header_not_json.safetensors", safetensors_bytes(b"{not json}"), ["JSON"])
    case("ckpt", "st_header_not_utf8.safetensors", safetensors_bytes(b'{"\xff\xfe": 1}'), ["JSON"])
    case("ckpt", "st_entry_not_object.safetensors", safetensors_bytes({"w": [1, 2]}, b"\0" * 4), ["offsets"])
    case("ckpt", "st_header_deep.safetensors", safetensors_bytes(b'{"a":' + b"[" * 1500 + b"]" * 1500 + b"}"))
    case("ckpt", "npz_trunc_half.npz", npz[: len(npz) // 2], ["corrupt"])
    case("ckpt", "npz_flip.npz", flip(npz, len(npz) // 3), codes=(0, 1, 2))
    case("ckpt", "npz_object_array.npz", npz_bytes({"embed.weight": np.array([_Touch()], dtype=object)}), ["pickle"])
    case("ckpt", "npz_strings.npz", npz_bytes({"embed.weight": np.array(["a", "b"])}), ["dtype"])
    case("ckpt", "npz_complex.npz", npz_bytes({"embed.weight": np.zeros(2, np.complex64)}), ["dtype"])
    case("ckpt", "npz_huge_shape.npz", _zip_bytes([("embed.weight.npy", npy_header((2**40,)))]), ["corrupt"])
    case("ckpt", "npz_negative_shape.npz", _zip_bytes([("embed.weight.npy", npy_header((-1,)))]), ["corrupt"])
    case("ckpt", "npz_bad_descr.npz", _zip_bytes([("embed.weight.npy", npy_header((2,), "<zz"))]), ["corrupt"])
    case("ckpt", "npz_garbage_member.npz", _zip_bytes([("embed.weight.npy", b"hello world")]), ["corrupt"])
    case("ckpt", "zip_text_member.npz", _zip_bytes([("notes.txt", b"hello")]), ["neither"])
    case("ckpt", "zip_empty.npz", _zip_bytes([]), ["neither"])

    # --- specs: wrong types, unknown keys, aliases, missing sections, encodings ------------------------
    def spec_case(name, raw, needles=(), codes=(2,), xfail=None):
        case("spec", f"{name}.yaml", raw if isinstance(raw, bytes) else _dump(raw), needles, codes, xfail)

    spec_case("batches_str", _with("data", batches="8"), ["data.batches", "integer"])
    spec_case("batch_size_float", _with("data", batch_size=2.5), ["data.batch_size", "integer"])
    spec_case("batches_bool", _with("data", batches=True), ["data.batches"])
    spec_case("batches_negative", _with("data", batches=-1), ["positive"])
    spec_case("shuffle_str", _with("data", shuffle="yes"), ["data.shuffle"])
    spec_case("source_unknown", _with("data", source="csv"), ["data.source"])
    spec_case("path_int", _with("data", path=5), ["data.path"])
    spec_case("path_missing_file", _with("data", path="nope.npz"), ["nope.npz", "no such data file"])
    spec_case("model_str", _spec(model="resmlp"), ["model", "mapping"])
    spec_case("arch_int", _with("model", arch=3), ["model.arch"])
    spec_case("arch_unknown", _with("model", arch="nonet"), ["model.arch", "unknown architecture"])
    spec_case("args_list", _with("model", args=[1, 2]), ["model.args"])
    spec_case("args_width_str", _with("model", args={**ARGS, "width": "8"}), ["model.args"])
    spec_case("args_unknown", _with("model", args={**ARGS, "bogus": 1}), ["model.args", "bogus"])
    spec_case("args_wrong_shape", _with("model", args={**ARGS, "width": 16}), ["shape mismatch"])
    spec_case("method_name_int", _with("audit", method_name=3), ["audit.method_name"])
    spec_case("unknown_top_key", {**_spec(), "modle": {}}, ["modle", "unknown key", "model"])
    spec_case("unknown_nested_key", _with("data", batchsize=3), ["data.batchsize", "batch_size"])
    spec_case("no_model", _spec(model=None), ["model"])
    spec_case("no_data", _spec(data=None), ["data.path"])
    spec_case("empty", b"", ["mapping"])
    spec_case("only_comment", b"# nothing here\n", ["mapping"])
    spec_case("top_list", b"[1, 2]\n", ["mapping"])
    spec_case("invalid_yaml", b"model: [\n", ["invalid YAML"])
    spec_case("tab_indent", b"model:\n\targs: 1\n", ["invalid YAML"])
    spec_case("python_tag", f"model: !!python/object/apply:os.system ['touch {MARKER}']\n".encode(), ["invalid YAML"])
    spec_case("alias_simple", b"a: &x {arch: resmlp}\nmodel: *x\n", ["alias"])
    spec_case("alias_merge_key", b"b: &b {arch: resmlp}\nmodel:\n  <<: *b\n", ["alias"])
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    spec_case("alias_bomb", bomb.encode(), ["alias"])
    spec_case("latin1", "model:\n  arch: r\u00e9smlp\n".encode("latin-1"), ["UTF-8"])
    spec_case("utf16", yaml.safe_dump(_spec()).encode("utf-16"), ["UTF-8"])
    spec_case("nul_bytes", b"model:\x00\x00\n", codes=(2,))
    spec_case("thresholds_not_map", _with("audit", thresholds=[1]), ["audit.thresholds"])
    spec_case("threshold_nan", _yaml_threshold("g_norm_floor", ".nan"), ["g_norm_floor", "finite"])
    spec_case("threshold_inf", _yaml_threshold("h_norm_explosion_ratio", ".inf"), ["h_norm_explosion_ratio", "finite"])
    spec_case("threshold_neg_inf", _yaml_threshold("stability_drift_ceiling", "-.inf"),
              ["stability_drift_ceiling", "finite"])
    spec_case("threshold_negative", _with("audit", thresholds={"g_norm_floor": -1e-7}), ["g_norm_floor", "positive"])
    spec_case("threshold_zero_ratio", _with("audit", thresholds={"h_norm_explosion_ratio": 0}),
              ["h_norm_explosion_ratio", "positive"])
    spec_case("threshold_str", _with("audit", thresholds={"g_norm_floor": "abc"}), ["g_norm_floor", "number"])
    spec_case("threshold_null", _with("audit", thresholds={"g_norm_floor": None}), ["g_norm_floor"])
    spec_case("threshold_bool", _with("audit", thresholds={"frozen_acc_margin_pp": True}), ["frozen_acc_margin_pp"])
    spec_case("threshold_list", _with("audit", thresholds={"g_norm_floor": [1]}), ["g_norm_floor"])
    spec_case("threshold_unknown", _with("audit", thresholds={"g_norm_flor": 1}), ["g_norm_flor", "g_norm_floor"])
    spec_case("threshold_int_key", _yaml_raw_thresholds("{1: 1}"), ["audit.thresholds"])
    spec_case("headline_acc_nan", _yaml_audit("headline_acc", ".nan"), ["audit.headline_acc", "finite"])
    spec_case("headline_acc_out_of_range", _with("audit", headline_acc=5), ["audit.headline_acc"])
    spec_case("stability_layer_out_of_range", _with("audit", stability_layer=99), ["audit.stability_layer"])
    spec_case("deep_nesting", ("model: " + "[" * 3000 + "]" * 3000 + "\n").encode(), ["spec"])
    spec_case("data_batches_one", _with("data", batches=1), ["data.batches"])

    # --- eval data: shapes, dtypes, labels, non-finite ---------------------------------------------------
    def data_case(name, arrays, needles=(), codes=(2,), xfail=None):
        case("data", f"{name}.npz", npz_bytes(arrays), needles, codes, xfail)

    x, y = x[:DATA_ROWS], y[:DATA_ROWS]
    xn = x.copy()
    xn[5, 3] = np.nan
    xi = x.copy()
    xi[7, 0] = np.inf
    xm = x.copy()
    xm[1, 2] = -np.inf
    data_case("x_nan", {"x": xn, "y": y}, ["non-finite"])
    data_case("x_inf", {"x": xi, "y": y}, ["non-finite"])
    data_case("x_neg_inf", {"x": xm, "y": y}, ["non-finite"])
    data_case("x_strings", {"x": x.astype("U4"), "y": y}, ["x"])
    data_case("x_complex", {"x": x.astype(np.complex64), "y": y}, ["dtype"])
    data_case("x_bool", {"x": x > 0, "y": y}, ["dtype"])
    data_case("x_object", {"x": np.array([_Touch()] * DATA_ROWS, dtype=object), "y": y}, ["pickle"])
    data_case("x_1d", {"x": x[:, 0], "y": y}, ["shape"])
    data_case("x_scalar", {"x": np.float32(1.0), "y": y}, ["shape"])
    data_case("x_wrong_features", {"x": x[:, :5], "y": y}, ["shape"])
    yneg = y.copy()
    yneg[3] = -1
    data_case("y_negative", {"x": x, "y": yneg}, ["negative label"])
    data_case("y_too_large", {"x": x, "y": y + 3}, ["out of range"])
    data_case("y_fractional", {"x": x, "y": y + 0.5}, ["integer"])
    yn = y.astype(np.float32)
    yn[2] = np.nan
    data_case("y_nan", {"x": x, "y": yn}, ["integer"])
    data_case("y_2d", {"x": x, "y": np.stack([y, y], 1)}, ["1-D"])
    data_case("y_strings", {"x": x, "y": y.astype(str)}, ["y"])
    data_case("y_complex", {"x": x, "y": y.astype(np.complex64)}, ["dtype"])
    data_case("y_uint64_huge", {"x": x, "y": np.full(DATA_ROWS, 2**63 + 5, dtype=np.uint64)}, ["label"])
    data_case("rows_mismatch", {"x": x, "y": y[:5]}, ["rows"])
    data_case("too_few_rows", {"x": x[:3], "y": y[:3]}, ["rows"])
    data_case("no_rows", {"x": x[:0], "y": y[:0]}, ["rows"])
    data_case("missing_y", {"x": x}, ["missing", "y"])
    data_case("wrong_names", {"inputs": x, "labels": y}, ["missing"])

    # --- attack families and honest files: each with the runs it must pass ---------------------------
    for role, cases in (("hostile", hostile_cases(sd)), ("honest", honest_cases(sd))):
        for name, (data, runs) in cases.items():
            files[f"{role}/{name}"] = data
            manifest[f"{role}/{name}"] = {"role": role, "runs": runs}

    out.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    meta = {"torch": torch.__version__.split("+")[0], "numpy": np.__version__, "cases": manifest}
    lines = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(manifest.items())]
    head = json.dumps({k: v for k, v in meta.items() if k != "cases"}, sort_keys=True)[:-1]
    (out / "manifest.json").write_text(head + ', "cases": {\n' + ",\n".join(lines) + "\n}}\n")
    return meta


def safetensors_bytes_from_state(sd: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in sd.items()})


def _yaml_threshold(name: str, literal: str) -> bytes:
    """A spec whose audit.thresholds.<name> is a YAML float literal (.nan, .inf, ...) that safe_dump cannot write."""
    return _dump(_spec()) + f"  thresholds:\n    {name}: {literal}\n".encode()


def _yaml_raw_thresholds(flow: str) -> bytes:
    return _dump(_spec()) + f"  thresholds: {flow}\n".encode()


def _yaml_audit(key: str, literal: str) -> bytes:
    return _dump(_spec()) + f"  {key}: {literal}\n".encode()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    m = build(target)
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"wrote {len(m['cases'])} cases to {target} ({total} bytes in all)")
