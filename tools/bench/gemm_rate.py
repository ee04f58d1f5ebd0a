#!/usr/bin/env python3
"""Measures the device's dense matrix-multiply rate with torch.mm. On the GPU it is the
denominator of the benchmark's FLOP-floor column; on the CPU it is PyTorch's own BLAS rate,
which bench.py reports beside the table and never divides by (the CPU floor is the SGEMM rate
that `cuvae bench --device cpu` measures with the library its fast engine links: PyTorch's
BLAS may be a generic one, far below what the processor can do).

Usage:
  gemm_rate.py [--device gpu|cpu] [--n N] [--reps R] [--json FILE]

GPU: N x N x N GEMMs (default N = 8192, 2 N^3 FLOP each): float32 in strict fp32 and with
TF32 allowed, and bfloat16 (the floor of the bf16 mixed-precision rows; fp32 accumulation),
3 warm-up runs then R runs each timed by CUDA events; reports the median as TFLOP/s. The
bf16 rate is null where the GPU or PyTorch cannot run bf16 GEMMs. CPU: fp32 only, default
N = 2048, wall clock. Writes one JSON object:
  {"device": ..., "n": N, "reps": R, "fp32_tflops": x, "tf32_tflops": y or null,
   "bf16_tflops": z or null, "torch_version": ...}
"""

import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from benchlib import median  # noqa: E402
from benchlib import cpu_name, usable_cores  # noqa: E402
from torch_vae import bf16_native, set_precision  # noqa: E402


def gemm_tflops(n, reps, device, tf32, dtype=None):
    """Median rate of torch.mm on N x N matrices of dtype (default float32) in TFLOP/s."""
    dtype = dtype or torch.float32
    if device.type == "cuda":
        set_precision(tf32)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b, out=c)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / median(times) / 1e12


def bf16_tflops(n, reps, device):
    """The bf16 GEMM rate on a GPU, or None where bf16 is not native there (with a note)."""
    if not bf16_native():
        print("gemm_rate: no native bf16 on this GPU in PyTorch %s: bf16_tflops null"
              % torch.__version__, file=sys.stderr)
        return None
    try:
        return gemm_tflops(n, reps, device, False, torch.bfloat16)
    except RuntimeError as e:
        print("gemm_rate: bf16 GEMM failed (%s): bf16_tflops null"
              % " ".join(str(e).split())[:200], file=sys.stderr)
        return None


def blas_info():
    """PyTorch's BLAS_INFO build setting ("mkl", "open", "generic", ...), or None."""
    try:
        text = torch.__config__.show()
    except Exception:
        return None
    m = re.search(r"BLAS_INFO=([^,\s]+)", text)
    return m.group(1) if m else None


def main(argv=None):
    p = argparse.ArgumentParser(description="fp32 / TF32 / bf16 GEMM rate of this device "
                                "(torch.mm)")
    p.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    p.add_argument("--n", type=int, default=0, help="matrix size (default 8192 GPU, 2048 CPU)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = usable cores)")
    p.add_argument("--json", help="write the result here (default stdout)")
    args = p.parse_args(argv)
    if args.device == "gpu":
        if not torch.cuda.is_available():
            print("gemm_rate: no usable CUDA device", file=sys.stderr)
            return 77
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        n = args.n or 8192
        out = dict(device=name, n=n, reps=args.reps,
                   fp32_tflops=gemm_tflops(n, args.reps, device, False),
                   tf32_tflops=gemm_tflops(n, args.reps, device, True))
        set_precision(False)
        out["bf16_tflops"] = bf16_tflops(n, args.reps, device)
    else:
        torch.set_num_threads(args.threads or usable_cores())
        device = torch.device("cpu")
        n = args.n or 2048
        out = dict(device="cpu (%s, %d threads)" % (cpu_name(), torch.get_num_threads()),
                   n=n, reps=args.reps, fp32_tflops=gemm_tflops(n, args.reps, device, False),
                   tf32_tflops=None, bf16_tflops=None)
    out["torch_version"] = torch.__version__
    out["blas"] = blas_info()
    text = json.dumps(out, indent=1) + "\n"
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    print("gemm_rate: %s: fp32 %.3g TFLOP/s%s%s (N=%d)"
          % (out["device"], out["fp32_tflops"],
             "" if out["tf32_tflops"] is None else ", TF32 %.3g TFLOP/s" % out["tf32_tflops"],
             "" if out["bf16_tflops"] is None else ", bf16 %.3g TFLOP/s" % out["bf16_tflops"],
             n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
