"""`edgekd export RUN --target T --precision P --out BUNDLE`: thin wrapper over edgekd.export.pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

TARGET_NAMES = ("onnx", "openvino", "tensorrt")


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated and/or comma-separated names -> list."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _kv(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--option")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value
    return out


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--target", "-t", type=click.Choice(TARGET_NAMES), default="onnx", help="Export target.")
@click.option("--precision", "-p", type=click.Choice(("fp32", "fp16", "int8", "auto")), default="fp32",
              help="Numeric precision of the exported model; auto = export fp32 and int8 (int8 as --precision int8 "
                   "does it: overflow fix, --auto-mixed retry), keep the fastest on this machine that passes the "
                   "parity gate, and say why when int8 failed.")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=False,
              help="Bundle directory to write (default: RUN/export-TARGET-PRECISION).")
@click.option("--calib", type=click.Path(path_type=Path), help="Folder of calibration images (int8; part is held out "
              "for the parity gate when --val is not given).")
@click.option("--val", type=click.Path(path_type=Path), help="Folder of held-out images for the parity gate "
              "(ImageFolder layout also measures the zero-shot accuracy drop).")
@click.option("--labels", type=click.Path(path_type=Path),
              help="Label pack (.npz); default: RUN/labels.npz if present.")
@click.option("--calib-images", type=click.IntRange(1), default=300, help="Calibration images sampled from --calib.")
@click.option("--val-images", type=click.IntRange(1), default=500, help="Parity images sampled from --val.")
@click.option("--calib-method", type=click.Choice(("minmax", "entropy", "percentile")), default=None,
              help="INT8 calibration method [default: minmax for onnx, the target's own otherwise].")
@click.option("--static-batch", type=click.IntRange(1), default=None, help="Fixed batch size instead of dynamic.")
@click.option("--preprocess-in-graph", type=click.Choice(("normalize", "full")), is_flag=False,
              flag_value="normalize", default=None,
              help="Model takes uint8 NHWC 'frames': alone or 'normalize' = frames already resized to HxW, the graph "
                   "normalises; 'full' = camera frames of any size, the graph also crops and resizes (onnx target, "
                   "bicubic/bilinear students).")
@click.option("--with-labels", is_flag=True, help="Bake the label pack into the graph: extra output 'scores'.")
@click.option("--opset", type=click.IntRange(13, 21), default=17, help="ONNX opset.")
@click.option("--gate/--no-gate", default=True, help="Run the parity gate (the skip is recorded in edgekd.json).")
@click.option("--max-drop", type=float, default=None,
              help="INT8: max zero-shot accuracy drop in points [default: 1.0].")
@click.option("--tie-margin", type=click.FloatRange(0), default=None,
              help="INT8 gate: a top-1 flip is a tie, not a disagreement, when the PyTorch student's embedding lies "
                   "within this distance of the two classes' decision boundary [default: 0.005; 0 = every flip "
                   "counts].")
@click.option("--gate-isa", type=click.Choice(("all", "host")), default="all", show_default=True,
              help="OpenVINO: run the parity gate under every oneDNN ISA level of this CPU (AVX2, AVX-512 VNNI, AMX; "
                   "a verdict for the kernels other CPUs take) or only under the one in force. INT8 follows it: 'all' "
                   "quantises every layer's weights to 7 bits (NNCF overflow_fix=enable, no saturation on CPUs "
                   "without VNNI) and --auto-mixed judges under AVX2; 'host' (VNNI/AMX-only fleets) keeps NNCF's "
                   "default (first layer only). --option overflow_fix=enable|first_layer|disable overrides.")
@click.option("--small-gate-ok", is_flag=True,
              help="Accept a parity gate on fewer than 200 held-out images (its verdict says how many).")
@click.option("--keep-fp32", multiple=True, help="onnx INT8: node names to leave unquantised (repeat or comma-list).")
@click.option("--keep-fp16", multiple=True, help="openvino/tensorrt INT8: layers to keep in higher precision.")
@click.option("--auto-mixed/--no-auto-mixed", default=None,
              help="INT8: keep the most sensitive layers in float until parity passes (onnx: per-node sensitivity "
                   "search; openvino: NNCF accuracy control). Default: full INT8 first, and only if it fails the gate "
                   "exported again with this on; --auto-mixed: from the start; --no-auto-mixed: never.")
@click.option("--quant-format", type=click.Choice(("qdq", "qoperator")), default="qdq",
              help="onnx INT8: QDQ (portable, TensorRT/OpenVINO read it) or QOperator (QLinearConv etc.).")
@click.option("--activation-type", type=click.Choice(("uint8", "int8")), default="uint8",
              help="onnx INT8 activation type (uint8 = U8S8, the fast path on x86).")
@click.option("--reduce-range", is_flag=True, help="onnx INT8: 7-bit weights (avoids U8S8 saturation without VNNI).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the parity run.")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty folder that is not a bundle.")
@click.option("--min-batch", type=click.IntRange(1), default=None, help="TensorRT optimisation profile minimum.")
@click.option("--opt-batch", type=click.IntRange(1), default=None, help="TensorRT optimisation profile optimum.")
@click.option("--max-batch", type=click.IntRange(1), default=None, help="TensorRT optimisation profile maximum.")
@click.option("--workspace-gb", type=float, default=None, help="TensorRT builder workspace (GiB).")
@click.option("--dla-core", type=click.IntRange(0), default=None, help="TensorRT: build for this DLA core (Jetson).")
@click.option("--timing-cache", type=click.Path(path_type=Path), default=None, help="TensorRT timing cache file.")
@click.option("--from-onnx", is_flag=False, flag_value="auto", default=None,
              help="TensorRT on the device: RUN is a bundle prepared elsewhere; build its engine from the bundle's "
                   "ONNX for this TensorRT (alone), or from the ONNX file given.")
@click.option("--trt-calibrator", is_flag=True, default=None,
              help="TensorRT < 10 only (JetPack 5), legacy: INT8 by implicit calibration (IInt8EntropyCalibrator2) "
                   "instead of the Q/DQ ONNX.")
@click.option("--eval", "eval_file", type=click.Path(path_type=Path), default=None,
              help="Results of `edgekd eval RUN --out FILE` to embed in edgekd.json (bench plots them vs latency).")
@click.option("--option", "extra", multiple=True, help="Extra target option KEY=VALUE (repeatable).")
def export(run: Path, target: str, precision: str, out: Path | None, calib: Path | None, val: Path | None,
           labels: Path | None, calib_images: int, val_images: int, calib_method: str | None,
           static_batch: int | None, preprocess_in_graph: str | None, with_labels: bool, opset: int, gate: bool,
           max_drop: float | None, tie_margin: float | None, gate_isa: str, small_gate_ok: bool,
           keep_fp32: tuple[str, ...],
           keep_fp16: tuple[str, ...], auto_mixed: bool | None,
           quant_format: str, activation_type: str, reduce_range: bool, threads: int | None, overwrite: bool,
           min_batch: int | None, opt_batch: int | None, max_batch: int | None, workspace_gb: float | None,
           dla_core: int | None, timing_cache: Path | None, from_onnx: str | None, trt_calibrator: bool | None,
           eval_file: Path | None, extra: tuple[str, ...]) -> None:
    """Export the student of RUN (a run directory from `edgekd distill`) to a bundle and check its parity.

    Exit status 3 when the parity gate fails (bundle and parity.json are kept), 4 when a TensorRT build was
    prepared for another machine.
    """
    trt_opts = {"min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch, "workspace_gb": workspace_gb,
                "dla_core": dla_core, "timing_cache": str(timing_cache) if timing_cache else None,
                "trt_calibrator": trt_calibrator}
    options = {k: v for k, v in {**trt_opts, "calib_method": calib_method, "keep_fp16": _split(keep_fp16) or None,
                                 **_kv(extra)}.items() if v is not None}
    if from_onnx is not None:
        if target != "tensorrt":
            raise click.UsageError("--from-onnx is for --target tensorrt (build the engine on the device)")
        from edgekd.export.tensorrt import build_from_onnx

        # on the device the bundle's recorded precision holds unless --precision is given explicitly
        ctx = click.get_current_context()
        if ctx.get_parameter_source("precision") not in (None, click.core.ParameterSource.DEFAULT):
            options["precision"] = precision
        engine = build_from_onnx(run, None if from_onnx == "auto" else Path(from_onnx), **options)
        click.echo(f"built {engine}")
        return
    out = out or run / f"export-{target}-{precision}"
    kwargs = dict(calib_dir=calib, val_dir=val, labels=labels, preprocess_in_graph=preprocess_in_graph,
                  with_labels=with_labels, static_batch=static_batch, opset=opset, gate=gate,
                  calib_images=calib_images, eval_file=eval_file, val_images=val_images, max_drop=max_drop,
                  tie_margin=tie_margin, gate_isa=gate_isa, small_gate_ok=small_gate_ok, threads=threads,
                  overwrite=overwrite,
                  keep_fp32=_split(keep_fp32), auto_mixed=auto_mixed, quant_format=quant_format,
                  activation_type=activation_type, reduce_range=reduce_range, **options)
    if precision == "auto":
        from edgekd.export.auto import export_auto

        bundle = export_auto(run, target, out, **kwargs)
    else:
        from edgekd.export.pipeline import export_bundle

        bundle = export_bundle(run, target, precision, out, **kwargs)
    from edgekd.export.bundle import load_bundle_manifest
    from edgekd.runtime.bundle import gate_summary

    m = load_bundle_manifest(bundle)
    verdict = "parity gate " + gate_summary(m)
    size = sum((bundle / f).stat().st_size for f in m["sha256"]) / 1e6
    if "precision_auto" in m:
        for p, c in m["precision_auto"]["candidates"].items():
            timing = f"{c['p50_ms']:.3f} ms at batch 1" if "p50_ms" in c else "not timed"
            click.echo(f"  {p}: {'passed' if c['passed'] else 'FAILED'} parity, {c['model_mb']:.2f} MB, {timing}"
                       + ("  <- fastest" if p == m["precision_auto"]["chosen"] else ""))
    click.echo(f"{bundle}: {target} {m['precision']}, {size:.2f} MB, {m['build_seconds']:.1f} s; {verdict}")
