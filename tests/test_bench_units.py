"""Unit tests of edgekd.bench without subprocesses: timer statistics, tegrastats parsing, environment probing,
results schema round-trip, Markdown, plots and --compare."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

from edgekd import EdgekdError
from edgekd.bench import env, tegrastats
from edgekd.bench.compare import compare_markdown, compare_rows
from edgekd.bench.plot import eval_metric, pareto_front
from edgekd.bench.report import add_speedups, load_results, markdown, validate_results, write_results
from edgekd.bench.timer import Timer, latency_stats

# --- timer --------------------------------------------------------------------------------------------------------


def test_latency_stats_known_values():
    s = latency_stats(np.arange(1, 101) / 1000.0)  # 1..100 ms
    assert s["n"] == 100
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0)
    assert s["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    with pytest.raises(EdgekdError):
        latency_stats([])


def test_timer_measures_sleep_and_honours_min_iters_and_min_time():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.01)

    timer = Timer(warmup_s=0.03, min_time_s=0.1, min_iters=3)
    t = timer.measure(work)
    s = t.stats_ms()
    assert 9.0 <= s["p50"] <= 40.0  # sleep(10 ms) never returns early; a loaded machine may be slower
    assert s["n"] >= 3 and t.elapsed_s >= 0.1
    assert t.warmup_iters >= 1 and len(calls) == t.warmup_iters + s["n"]
    # a slow call: the iteration minimum decides (5 x 30 ms > 0.05 s)
    t2 = Timer(warmup_s=0, min_time_s=0.05, min_iters=5).measure(lambda: time.sleep(0.03))
    assert t2.stats_ms()["n"] == 5 and 29.0 <= t2.stats_ms()["p50"] <= 100.0


def test_timer_sync_runs_after_every_call_and_throughput():
    synced = []
    timer = Timer(warmup_s=0, min_time_s=0, min_iters=4, sync=lambda: synced.append(1))
    timer.measure(lambda: None)
    assert len(synced) == 1 + 4  # the warm-up call + 4 timed calls
    thr = Timer(sync=lambda: synced.append(2)).throughput(lambda: time.sleep(0.005), items_per_call=8,
                                                          min_time_s=0.05)
    assert synced[-1] == 2 and synced.count(2) == 1  # pipelined: one sync at the end
    assert 8 / 0.05 <= thr["ips"] <= 8 / 0.005 and thr["iters"] >= 2


@pytest.mark.parametrize("kwargs", [{"min_iters": 0}, {"warmup_s": -1}, {"min_time_s": -0.5}])
def test_timer_rejects_bad_settings(kwargs):
    with pytest.raises(EdgekdError):
        Timer(**kwargs)


# --- tegrastats ---------------------------------------------------------------------------------------------------

ORIN_NANO = ("03-15-2024 10:01:02 RAM 2611/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@1510,1%@1510,"
             "off,off] EMC_FREQ 0% GR3D_FREQ 0% cpu@47.75C soc2@46.28C VDD_IN 4937mW/4900mW VDD_CPU_GPU_CV "
             "593mW/593mW VDD_SOC 1423mW/1423mW")
NANO = ("RAM 1516/3956MB (lfb 114x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [11%@1479,3%@1479] "
        "EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@34C CPU@36.5C POM_5V_IN 2127/2127 POM_5V_GPU 40/40 "
        "POM_5V_CPU 359/359")
AGX_ORIN = ("RAM 4722/30536MB (lfb 6463x4MB) CPU [0%@729,0%@729] GR3D_FREQ 0% VDD_GPU_SOC 4369mW/4369mW "
            "VDD_CPU_CV 1191mW/1191mW VIN_SYS_5V0 4424mW/4424mW")


def test_tegrastats_parses_recorded_lines():
    assert tegrastats.parse_line(ORIN_NANO) == {"VDD_IN": 4937.0, "VDD_CPU_GPU_CV": 593.0, "VDD_SOC": 1423.0}
    nano = tegrastats.parse_line(NANO)
    assert nano == {"POM_5V_IN": 2127.0, "POM_5V_GPU": 40.0, "POM_5V_CPU": 359.0}  # RAM/SWAP/IRAM are not rails
    assert tegrastats.total_power(nano) == (2127.0, "POM_5V_IN")
    total, rail = tegrastats.total_power(tegrastats.parse_line(AGX_ORIN))
    assert total == pytest.approx(4369 + 1191 + 4424) and rail.startswith("sum(")
    assert tegrastats.parse_line("RAM 2611/7620MB SWAP 0/3810MB CPU [2%@1510]") == {}


def test_tegrastats_summary_average_and_peak():
    lines = [ORIN_NANO.replace("VDD_IN 4937mW", f"VDD_IN {mw}mW") for mw in (4000, 5000, 6000)]
    summ = tegrastats.summarize([(float(i), tegrastats.parse_line(ln)) for i, ln in enumerate(lines)])
    assert summ["avg_mw"] == pytest.approx(5000) and summ["peak_mw"] == 6000 and summ["samples"] == 3
    assert summ["rail"] == "VDD_IN" and summ["rails_avg_mw"]["VDD_SOC"] == pytest.approx(1423)
    assert tegrastats.summarize([]) is None


def test_tegrastats_sampler_reads_a_process(tmp_path):
    fake = tmp_path / "fake_tegrastats.sh"
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{NANO}'; sleep 0.02; done\n")
    fake.chmod(0o755)
    with tegrastats.TegrastatsSampler(command=[str(fake)]) as s:
        time.sleep(0.3)
    summ = s.summary()
    assert summ is not None and summ["samples"] >= 2 and summ["avg_mw"] == pytest.approx(2127)


# --- environment --------------------------------------------------------------------------------------------------

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni amx_tile amx_int8 avx512_bf16
"""


def test_cpu_info_picks_model_and_isa_flags():
    info = env.cpu_info(CPUINFO)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "fma"} <= set(info["flags"])
    assert "sse2" not in info["flags"]
    assert env.cpu_info("")["flags"] == "unknown"


def test_jetson_info_from_files(tmp_path):
    assert env.jetson_info(tmp_path) is None
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref")
    j = env.jetson_info(tmp_path)
    assert j["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert j["l4t"] == "35.4.1" and j["jetpack"] == "5.1.2"
    assert j["nvpmodel"] in ("unknown",) or isinstance(j["nvpmodel"], str)
    assert env.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == "MAXN (0)"
    assert env.parse_nvpmodel("garbage") == "unknown"
    locked = "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600\n"
    free = "cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=1420800\n"
    assert env.parse_jetson_clocks(locked) == "on" and env.parse_jetson_clocks(free) == "off"
    assert env.parse_jetson_clocks("") == "unknown"


def test_collect_environment_has_every_field():
    e = env.collect_environment([1, 2])
    for key in ("cpu", "gpu", "os", "python", "packages", "jetson", "threads_used", "memory_gb", "load_avg"):
        assert key in e
    for pkg in ("torch", "onnxruntime", "openvino", "tensorrt", "numpy"):
        assert e["packages"][pkg]
    assert e["threads_used"] == [1, 2] and e["cpu"]["cores_usable"] >= 1


# --- results documents --------------------------------------------------------------------------------------------

def _row(model, backend, batch, threads, p50, teacher=False, precision="fp32", status="ok", **kw):
    r = {"model": model, "backend": backend, "precision": precision, "batch": batch, "threads": threads,
         "status": status, "reason": None, "teacher": teacher, "mode": "model",
         "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "mean": p50, "std": 0.1, "n": 10}
         if status == "ok" else None, "throughput_ips": 1000 / p50 * batch if status == "ok" else None,
         "peak_rss_mb": 100.0, "peak_gpu_mb": None, "load_s": 0.5, "model_mb": 10.0}
    r.update(kw)
    return r


def _doc(rows):
    return {"schema": "edgekd.bench", "version": 1, "environment": env.collect_environment([1]), "config": {},
            "rows": rows}


def test_speedups_against_teacher_same_backend_and_eager():
    rows = [_row("teacher:T", "torch", 1, 1, 100.0, teacher=True), _row("teacher:T", "openvino", 1, 1, 50.0,
                                                                        teacher=True),
            _row("s", "openvino", 1, 1, 2.0, precision="int8"), _row("s", "openvino", 1, 2, 1.0),
            _row("x", "openvino", 1, 1, 0, status="skipped", reason="not installed")]
    add_speedups(rows)
    assert rows[2]["speedup_vs_teacher"] == pytest.approx(25.0)
    assert rows[2]["speedup_vs_teacher_eager"] == pytest.approx(50.0)
    assert rows[3]["speedup_vs_teacher"] is None  # no teacher row at 2 threads
    assert rows[4]["speedup_vs_teacher"] is None


def test_results_round_trip_markdown_and_plots(tmp_path):
    rows = [_row("teacher:T", "onnxruntime", 1, 1, 40.0, teacher=True), _row("s", "onnxruntime", 1, 1, 4.0,
                                                                             eval={"fidelity": {"top1": 0.8}}),
            _row("s", "onnxruntime", 8, 1, 20.0), _row("s2", "onnxruntime", 1, 1, 8.0, eval={"fidelity": 0.9}),
            _row("s", "tensorrt", None, None, 0, status="skipped", reason="tensorrt is not installed"),
            _row("s", "openvino", 1, 1, 0, status="failed", reason="RuntimeError: boom | bad")]
    doc = _doc(rows)
    paths = write_results(copy.deepcopy(doc), tmp_path / "out", command="edgekd bench s --batch 1,8")
    loaded = load_results(paths["json"])
    assert loaded["rows"][1]["speedup_vs_teacher"] == pytest.approx(10.0)
    assert [r["model"] for r in loaded["rows"]] == [r["model"] for r in rows]
    assert load_results(tmp_path / "out")["command"] == "edgekd bench s --batch 1,8"
    md = paths["md"].read_text()
    assert "edgekd bench s --batch 1,8" in md and "| s | onnxruntime | fp32 | 1 | 1 | 4.00 |" in md
    assert "10.0x" in md and "tensorrt is not installed" in md and "boom \\| bad" in md
    for name in ("latency", "throughput", "pareto"):
        assert paths[name].is_file() and paths[name].read_bytes()[:4] == b"\x89PNG"


def test_validate_results_rejects_bad_documents(tmp_path):
    with pytest.raises(EdgekdError, match="not an edgekd bench result"):
        validate_results({"schema": "other"})
    with pytest.raises(EdgekdError, match="version 2"):
        validate_results({"schema": "edgekd.bench", "version": 2, "rows": []})
    with pytest.raises(EdgekdError, match="lacks"):
        validate_results(_doc([{"model": "m"}]))
    with pytest.raises(EdgekdError, match="status"):
        validate_results(_doc([_row("m", "torch", 1, 1, 1.0, status="weird")]))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EdgekdError, match="unreadable"):
        load_results(tmp_path / "bad.json")
    with pytest.raises(EdgekdError, match="no such"):
        load_results(tmp_path / "missing.json")


def test_compare_side_by_side(tmp_path):
    a = _doc([_row("s", "onnxruntime", 1, 1, 4.0), _row("s", "openvino", 1, 1, 3.0)])
    b = _doc([_row("s", "onnxruntime", 1, 1, 2.0), _row("s", "onnxruntime", 8, 1, 9.0)])
    write_results(a, tmp_path / "a", plots=False)
    write_results(b, tmp_path / "b", plots=False)
    rows = compare_rows(a, b)
    assert rows[0]["p50_ratio"] == pytest.approx(0.5)
    assert rows[1]["b_status"] == "absent" and rows[2]["a_status"] == "absent"
    md = compare_markdown(tmp_path / "a" / "results.json", tmp_path / "b" / "results.json")
    assert "| s | onnxruntime | fp32 | 1 | 1 | model | 4.00 | 2.00 | 0.50x |" in md
    assert "absent" in md


def test_eval_metric_and_pareto_front():
    assert eval_metric({"zero_shot": {"top1": 0.5}, "fidelity": {"cosine": 0.93}}) == ("fidelity.cosine", 0.93)
    assert eval_metric({"loss": "x"}) is None and eval_metric(None) is None
    assert pareto_front([(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (0.5, 0.4)]) == [0, 1, 3]


def test_markdown_lists_e2e_rows():
    rows = [_row("s", "onnxruntime", 1, 2, 4.0),
            _row("s", "onnxruntime", 1, 2, 8.0, mode="e2e", stages_ms={"decode": 2.0, "preprocess": 1.5,
                                                                       "infer": 4.1, "score": 0.1, "frame": 5.7})]
    md = markdown(_doc(rows))
    assert "End-to-end" in md
    assert "| s | onnxruntime | fp32 | 2 | 8.00 | 2.00 | 1.50 | 4.10 | 0.10 | 5.70 | 4.00 | 49% |" in md
