"""Minimal reproduction of an OpenVINO CPU-plugin segfault on Intel AMX (edgekd issue #13), for the upstream report.

The graph, built with openvino.opset13 (no NNCF, no torch):

    Parameter [?, CIN, H, H] f32
      -> FakeQuantize 256 levels, per-tensor input range          (IN: asym = u8 with a zero point, as NNCF's
      -> Convolution 1x1, int8 weights (i8 Constant * scale)            "mixed" preset makes them; sym = NNCF's
      -> [Swish |] Relu                                                 symmetric signed range)
      -> FakeQuantize 256 levels, per-channel output ranges        (OUT: see VARIANTS)
      -> [depthwise 3x3 GroupConvolution, int8 weights] -> Result

    python benchmarks/openvino_amx/repro.py one 96 192 2 asym pcdead dw [--save DIR]   # one graph, inferred here
    python benchmarks/openvino_amx/repro.py matrix --out benchmarks/results/openvino_amx.md

`matrix` runs each variant in its own process under every oneDNN ISA cap this CPU supports (ONEDNN_MAX_CPU_ISA)
and records the exit status and the convolution kernel OpenVINO picked (runtime model, primitiveType).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT_FQ = {
    "pt": "per-tensor [0, hi]",
    "pc": "per-channel [0, hi_c]",
    "pcdead": "per-channel [0, hi_c], every 8th channel [-0.0008, 0.0008] (NNCF mixed on a dead ReLU channel)",
    "pcsym": "per-channel symmetric [-s_c, s_c*127/128]",
}
# (CIN, COUT, H, IN, OUT, tail) -- the rows of the published table
VARIANTS = [
    (96, 192, 2, "asym", "pcdead", "dw"), (96, 192, 1, "asym", "pcdead", "dw"), (96, 192, 3, "asym", "pcdead", "dw"),
    (96, 192, 4, "asym", "pcdead", "dw"), (16, 192, 2, "asym", "pcdead", "dw"), (32, 64, 2, "asym", "pcdead", "dw"),
    (96, 192, 2, "sym", "pcdead", "dw"), (96, 192, 2, "asym", "pc", "dw"), (96, 192, 2, "asym", "pt", "dw"),
    (96, 192, 2, "asym", "pc", "none"), (96, 192, 2, "sym", "pc", "none"), (96, 192, 2, "sym", "pcsym", "dw"),
]


def build(cin: int, cout: int, h: int, in_range: str, out_fq: str, tail: str):
    import openvino as ov
    import openvino.opset13 as o

    rng = np.random.default_rng(0)
    x = o.parameter(ov.PartialShape([-1, cin, h, h]), ov.Type.f32, name="x")
    lo, hi = {"asym": (-0.678, 0.622), "sym": (-0.65, 0.65 * 127 / 128)}[in_range]
    y = o.fake_quantize(x, np.float32(lo), np.float32(hi), np.float32(lo), np.float32(hi), 256)

    def int8_weights(shape: tuple[int, ...]):
        w = o.constant(rng.integers(-127, 128, shape).astype(np.int8))
        scale = np.full((shape[0],) + (1,) * (len(shape) - 1), 0.01, np.float32)
        return o.multiply(o.convert(w, ov.Type.f32), o.constant(scale))

    y = o.relu(o.convolution(y, int8_weights((cout, cin, 1, 1)), [1, 1], [0, 0], [0, 0], [1, 1]))
    n = 1 if out_fq == "pt" else cout
    ohi = rng.uniform(0.1, 1.0, n).astype(np.float32).reshape(1, n, 1, 1)
    olo = np.zeros_like(ohi)
    if out_fq == "pcdead":
        olo[:, ::8], ohi[:, ::8] = -0.0008, 0.0008
    if out_fq == "pcsym":
        olo, ohi = -ohi, ohi * 127 / 128
    y = o.fake_quantize(y, olo, ohi, olo, ohi, 256)
    if tail == "dw":
        y = o.group_convolution(y, int8_weights((cout, 1, 1, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    return ov.Model([o.result(y)], [x], "amx_repro")


def run_one(args: list[str], save: str | None) -> None:
    """Build, (save,) compile in f32 as NNCF does, print the convolution kernels, then infer once."""
    import openvino as ov

    cin, cout, h = (int(a) for a in args[:3])
    model = build(cin, cout, h, *args[3:6])
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(Path(save) / f"repro_{'_'.join(args)}.xml"), compress_to_fp16=False)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kernels = [op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
               if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    print(json.dumps({"kernels": kernels}), flush=True)
    x = np.random.default_rng(1).standard_normal((1, cin, h, h)).astype(np.float32)
    compiled(x)
    print("inference OK", flush=True)


def isa_caps() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from edgekd.cpu import cpu_facts

    return [level for level in cpu_facts(env={})["onednn_isa_levels"] if level != "AVX512_CORE"]


def matrix(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import openvino

    from edgekd.cpu import cpu_facts, describe
    from edgekd.runtime.isolated import signal_name

    caps = isa_caps()
    rows = []
    for v in VARIANTS:
        row = {"variant": list(v), "by_isa": {}}
        for cap in caps:
            env = {**os.environ, "ONEDNN_MAX_CPU_ISA": cap}
            proc = subprocess.run([sys.executable, __file__, "one", *map(str, v)], env=env, capture_output=True,
                                  text=True, timeout=300, check=False)
            kernels = next((json.loads(ln)["kernels"] for ln in proc.stdout.splitlines() if ln.startswith("{")), [])
            status = "ok" if proc.returncode == 0 else signal_name(proc.returncode) if proc.returncode < 0 \
                else f"exit {proc.returncode}"
            row["by_isa"][cap] = {"status": status, "first_conv_kernel": kernels[0] if kernels else None}
        rows.append(row)
        print(v, {c: r["status"] for c, r in row["by_isa"].items()}, flush=True)
    facts = cpu_facts(env={})
    result = {"cpu": facts, "openvino": openvino.__version__, "created": time.strftime("%Y-%m-%d"), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# OpenVINO {openvino.__version__} CPU plugin: INT8 1x1 convolution crash on AMX",
             "", f"Host: {describe(facts)}; written by `python benchmarks/openvino_amx/repro.py matrix` on "
             f"{result['created']}. Each cell: exit of one inference in a fresh process under "
             "`ONEDNN_MAX_CPU_ISA=<column>`, and the kernel OpenVINO picked for the 1x1 convolution.", "",
             "| CIN | COUT | HxW | input FQ | output FQ | then | " + " | ".join(caps) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(caps)]
    for row in rows:
        cin, cout, h, inp, outq, tail = row["variant"]
        cells = [f"{r['status']} `{r['first_conv_kernel']}`" for r in row["by_isa"].values()]
        then = "depthwise conv" if tail == "dw" else "Result (f32)"
        lines.append(f"| {cin} | {cout} | {h}x{h} | {inp} | {OUT_FQ[outq]} | {then} | " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("one", help="build and infer one variant: CIN COUT H IN(asym|sym) OUT(pt|pc|pcdead|pcsym) "
                                     "TAIL(dw|none)")
    one.add_argument("variant", nargs=6)
    one.add_argument("--save", help="also write the IR (.xml/.bin) to this folder")
    mat = sub.add_parser("matrix", help="every variant under every ISA cap, as a Markdown table")
    mat.add_argument("--out", type=Path, default=Path("benchmarks/results/openvino_amx.md"))
    a = ap.parse_args()
    if a.cmd == "one":
        run_one(a.variant, a.save)
    else:
        matrix(a.out)
