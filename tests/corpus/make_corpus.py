"""Regenerate tests/corpus/: small, fixed, byte-reproducible bad inputs for tests/test_safety_fuzz.py.

    python tests/corpus/make_corpus.py            # rewrite the corpus beside this script
    python tests/corpus/make_corpus.py OUT_DIR    # or anywhere else (the test does this to prove it is fresh)

Layout:
    base/tiny.pt, base/tiny.yaml, base/tiny_data.npz   a valid tiny ResMLP (in_dim 8, width 8, depth 3,
                                                       3 classes; seed 6, as conftest.tiny_resmlp)
    ckpt/*        bad checkpoints, run as   audit FILE --spec base/tiny.yaml   (and inspect FILE)
    spec/*.yaml   bad specs, run as         audit base/tiny.pt --spec FILE
    data/*.npz    bad eval data (8 rows), run as
                  audit base/tiny.pt --spec base/tiny.yaml --data FILE --batches 2 --batch-size 4
    manifest.json one entry per bad file: role, the exit codes allowed, the substrings its one stderr
                  line must hold, and "xfail" (a known fadiag bug) where fadiag does not meet the contract yet.

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


def torch_bytes(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
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
