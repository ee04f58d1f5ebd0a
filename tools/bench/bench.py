#!/usr/bin/env python3
"""One command: cuvae against PyTorch (eager and torch.compile) on the same device, model,
batch size, optimizer and data; one Markdown table, written into BENCHMARKS.md.

Usage (from anywhere; paths are relative to the current directory):
  tools/bench/bench.py [--data DIR] [--cuvae build/cuvae] [--device gpu|cpu]
                       [--batches 128,1024,4096] [--precisions fp32,tf32,bf16] [--epochs N]
                       [--warmup N] [--limit N] [--modes eager,default,reduce-overhead,max-autotune]
                       [--algo fastest|deterministic] [--ablations graph,fusion,layout|none]
                       [--threads N] [--out BENCHMARKS.md] [--no-write]

For each configuration (batch size x precision) it runs, each as its own process so that peak
memory is per process:
  * `cuvae bench` (the lead's subcommand; JSON schema in benchlib.REQUIRED_KEYS and
    benchlib.validate_result): on the GPU `--device gpu`; on the CPU twice, `--device cpu`
    (the fast engine, oneDNN) and `--device cpu-ref` (the slow reference model),
  * tools/bench/torch_vae.py once per PyTorch mode (eager, and each torch.compile mode),
and, once per run, tools/bench/gemm_rate.py for torch.mm's fp32 / TF32 / bf16 GEMM rate. It
checks every final loss against cuvae's of the same configuration (benchlib.loss_check; so
bf16 against bf16; on the CPU against the fast engine's), prints the table and replaces the
device's marked section of BENCHMARKS.md (<!-- bench:gpu:start --> ... <!-- bench:gpu:end -->,
or bench:cpu) leaving the rest intact.

FLOP floor (the "% of FLOP floor" column: the model's FLOP/s over a measured GEMM rate):
  GPU: gemm_rate.py's torch.mm rate in the row's precision.
  CPU: the single-precision GEMM rate that `cuvae bench --device cpu` measured in its own
       process before training, with the library its fast engine links ("sgemm_gflops" and
       "sgemm_what" in its JSON, required of cuvae on the CPU); the notes name it and its
       value. gemm_rate.py's torch.mm rate is PyTorch's own BLAS (a generic one made the
       column pass 100%): reported in the notes for comparison, never the denominator.

GPU table: a row per configuration (cuvae against PyTorch eager and the best torch.compile
mode), then every run. CPU table: a row per run, for each configuration the fast engine, the
reference and each PyTorch mode, with images/s, ms/epoch, the speed-up over PyTorch eager, the
fraction of the floor, peak memory, the final loss and its check against the fast engine's;
under it the issue's targets for the fast engine at batch 128, fp32 (at least 1,000 images/s,
goal 1,500, i.e. at least 8x PyTorch eager in the same run), each said met or missed.

Precisions: fp32 (strict), tf32 (cuvae --tf32, PyTorch TF32 matmuls and convolutions), bf16
(mixed precision: cuvae --bf16, PyTorch torch.autocast to bfloat16 around forward + loss).
Under the table, for each batch size with both an fp32 and a bf16 cuvae row, the accuracy
cost of --bf16 (its final loss against fp32's, same seed) and its speed-up. The issue's
targets are stated for fp32 / TF32: bf16 rows are reported, not counted towards them.

Ablations (GPU only, --ablations, default all): cuvae again, in a run of its own beside each
row's, either with an optimisation switched off (graph: --no-cuda-graph, fusion: --no-fusion;
the line under the table gives ms/epoch without it over ms/epoch with it), or with the
alternative convolution layout (layout: --layout nhwc, channels-last activations and filters,
against the row's run in cuvae's default NCHW; the line says which layout is faster and by how
much: the slower run's ms/epoch over the faster's).

Defaults per device: gpu: batches 128,1024,4096, precisions fp32,tf32,bf16, all four modes,
2 warm-up + 5 timed epochs over all 60,000 images; cpu: batch 128, fp32 (tf32 and bf16 are
GPU settings, dropped there), eager only, 1 warm-up + 2 timed epochs over the first 2,048
images (the reference, at about 200 images/s, takes about 30 s of it).
The PyTorch side runs under --python (default: the interpreter running this script).

Exit status: 0 every run succeeded and every loss agrees; 1 a run failed or a loss
disagrees (the table is still printed and written); 2 bad arguments, no cuvae binary,
or BENCHMARKS.md's markers are broken.
"""

import argparse
import collections
import datetime
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402

ALL_MODES = ("eager", "default", "reduce-overhead", "max-autotune")
DEFAULTS = {
    "gpu": dict(batches="128,1024,4096", precisions="fp32,tf32,bf16",
                modes=",".join(ALL_MODES),
                epochs=5, warmup=2, limit=0),
    "cpu": dict(batches="128", precisions="fp32", modes="eager", epochs=2, warmup=1,
                limit=2048),
}
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_SKIP = 0, 1, 2, 77

# The CPU rows: cuvae's two CPU engines, each in a run of its own (`cuvae bench --device D`),
# named in the table by their flag, and judged (device_kind) by what they report.
CPU_FAST = "cuvae --device cpu (fast engine)"
CPU_REFERENCE = "cuvae --device cpu-ref (reference)"
# The targets for the fast CPU engine, stated at batch 128 in fp32: a training rate of
# at least 1,000 images/s (goal 1,500), i.e. at least 8x PyTorch eager in the same run.
CPU_TARGET_BATCH = 128
CPU_TARGET_IMAGES_PER_S = 1000
CPU_GOAL_IMAGES_PER_S = 1500
CPU_TARGET_VS_EAGER = 8.0


# cuvae settings that tools/bench times in a cuvae run of its own beside each row's run:
# name -> Ablation(flags, what, setting).
#   flags:   the arguments added to the row's `cuvae bench` command;
#   what:    the words for it under the table;
#   setting: None for an optimisation switched off (its gain: ms/epoch without it over
#            ms/epoch with it), or (JSON key, value) for an alternative setting, which the run
#            must report under that key and which is compared with the value the row's own
#            run reports (stated as "<value> is N x faster/slower").
Ablation = collections.namedtuple("Ablation", "flags what setting")
ABLATIONS = {
    "graph": Ablation(("--no-cuda-graph",), "CUDA graph replay of the step", None),
    "fusion": Ablation(("--no-fusion",), "fused kernels (output bias + loss; latent heads + "
                       "reparameterization)", None),
    "layout": Ablation(("--layout", "nhwc"), "channels-last activations and filters",
                       ("layout", "nhwc")),
}
# ablations that a precision cannot run: name -> {precision: why}
ABLATION_CONFLICTS = {
    "fusion": {"bf16": "--bf16 needs the fused kernels"},
}


def flag_text(name):
    """The ablation's cuvae arguments as one string: '--no-fusion', '--layout nhwc'."""
    return " ".join(ABLATIONS[name].flags)


def run_name(name):
    """The ablation's part of its runs' file names: 'no-fusion', 'layout-nhwc'."""
    if ABLATIONS[name].setting is None:
        return "no-" + name
    return "-".join(f.lstrip("-") for f in ABLATIONS[name].flags)


def alternative_line(cfg, name, alt_ms, base_ms, base_value):
    """The line under the table for an alternative setting (ABLATIONS[name].setting): its
    ms/epoch against the row's run, and which is faster by the slower's ms/epoch over the
    faster's, so that the ratio is never below 1 and always says whom it favours."""
    ab = ABLATIONS[name]
    alt, base = ab.setting[1].upper(), str(base_value).upper()
    ratio = max(alt_ms, base_ms) / min(alt_ms, base_ms)
    if bl.fmt_ratio(ratio) == bl.fmt_ratio(1.0):
        verdict = "%s and %s take the same time (%s)" % (alt, base, bl.fmt_ratio(ratio))
    else:
        verdict = "%s is %s %s" % (alt, bl.fmt_ratio(ratio),
                                   "faster" if alt_ms < base_ms else "slower")
    return "- %s, %s (%s): %s ms/epoch against %s with %s: %s" % (
        cfg, ab.what, flag_text(name), bl.fmt_ms(alt_ms), bl.fmt_ms(base_ms), base, verdict)


def log(msg):
    print("bench: %s" % msg, file=sys.stderr, flush=True)


def one_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------
def usage_error(msg):
    sys.stderr.write("bench: error: %s\n" % msg)
    raise SystemExit(EXIT_USAGE)


def parse_list(text, cast, what, allowed=None):
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = cast(part)
        except ValueError:
            usage_error("bad %s %r" % (what, part))
        if allowed is not None and v not in allowed:
            usage_error("unknown %s %r (choose from %s)" % (what, part, ", ".join(allowed)))
        if isinstance(v, int) and v < 1:
            usage_error("%s must be >= 1, got %d" % (what, v))
        out.append(v)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Benchmark cuvae against PyTorch eager and torch.compile on one device "
        "(on the CPU: cuvae's fast engine and its reference model against PyTorch).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MNIST folder (default $CUVAE_MNIST_DIR, else data/mnist)")
    p.add_argument("--cuvae", default=os.path.join(REPO, "build", "cuvae"),
                   help="cuvae binary (default build/cuvae in the repository)")
    p.add_argument("--device", default="gpu", choices=("gpu", "cpu"),
                   help="gpu, or cpu: cuvae's fast CPU engine and its CPU reference, each in "
                   "a run of its own, against PyTorch on the CPU")
    p.add_argument("--batches", help="batch sizes (gpu: 128,1024,4096; cpu: 128)")
    p.add_argument("--precisions", help="fp32, tf32 and/or bf16 (gpu: fp32,tf32,bf16; "
                   "cpu: fp32)")
    p.add_argument("--epochs", type=int, help="timed epochs per run (gpu 5, cpu 2)")
    p.add_argument("--warmup", type=int, help="warm-up epochs per run (gpu 2, cpu 1)")
    p.add_argument("--limit", type=int, help="first N training images, 0 = all (gpu 0, "
                   "cpu 2048)")
    p.add_argument("--modes", help="PyTorch modes: eager and torch.compile modes "
                   "(gpu: eager,default,reduce-overhead,max-autotune; cpu: eager)")
    p.add_argument("--algo", default="fastest", choices=("fastest", "deterministic"),
                   help="cuDNN algorithms for both systems: benchmarked fastest (cuvae "
                   "--algo fastest, PyTorch cudnn.benchmark) or deterministic")
    p.add_argument("--ablations", help="GPU: also time cuvae in a run of its own beside "
                   "each row's, in the same run: graph (--no-cuda-graph) and fusion "
                   "(--no-fusion) switch an optimisation off to measure its gain; layout "
                   "(--layout nhwc) runs the convolutions channels-last, against the default "
                   "NCHW. A list of %s, or none (gpu default: all; cpu: none)"
                   % ",".join(ABLATIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for every run (OMP_NUM_THREADS, and PyTorch's "
                   "--threads); 0: each system's default, one per usable core")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter with PyTorch for the PyTorch runs (default: this one)")
    p.add_argument("--pytorch-script", default=os.path.join(HERE, "torch_vae.py"),
                   help=argparse.SUPPRESS)
    p.add_argument("--gemm-script", default=os.path.join(HERE, "gemm_rate.py"),
                   help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=int, default=3600, help="seconds per process")
    p.add_argument("--work-dir", help="keep each run's JSON and log here (default: a new "
                   "temporary folder, printed)")
    p.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"),
                   help="file whose marked section receives the table")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    d = DEFAULTS[args.device]
    args.data = args.data or os.environ.get("CUVAE_MNIST_DIR") or "data/mnist"
    args.batches = parse_list(args.batches or d["batches"], int, "batch size")
    args.precisions = parse_list(args.precisions or d["precisions"], str, "precision",
                                 bl.PRECISIONS)
    args.modes = parse_list(args.modes if args.modes is not None else d["modes"], str,
                            "mode", ALL_MODES)
    args.epochs = d["epochs"] if args.epochs is None else args.epochs
    args.warmup = d["warmup"] if args.warmup is None else args.warmup
    args.limit = d["limit"] if args.limit is None else args.limit
    if args.ablations is None:
        args.ablations = list(ABLATIONS) if args.device == "gpu" else []
    elif args.ablations == "none":
        args.ablations = []
    else:
        args.ablations = parse_list(args.ablations, str, "ablation", tuple(ABLATIONS))
    if args.device == "cpu" and args.ablations:
        log("the ablations (--no-cuda-graph, --no-fusion, --layout) are GPU settings: "
            "none on the CPU")
        args.ablations = []
    if args.epochs < 1 or args.warmup < 0 or args.limit < 0:
        p.error("--epochs must be >= 1, --warmup and --limit >= 0")
    if not args.batches or not args.precisions:
        p.error("nothing to run: give at least one batch size and one precision")
    if args.device == "cpu":
        for name, why in (("tf32", "TF32 is a GPU setting"),
                          ("bf16", "bf16 mixed precision (cuvae --bf16) is GPU-only")):
            if name in args.precisions:
                log("%s: dropping %s on the CPU" % (why, name))
                args.precisions = [x for x in args.precisions if x != name] or ["fp32"]
    return args


# ------------------------------------------------------------------------------------------
# Running the systems
# ------------------------------------------------------------------------------------------
def run_json(cmd, json_path, log_path, timeout, validate=bl.validate_result, env=None):
    """Runs cmd (its own process group) with output to log_path -> (result, error, skipped).
    result is the JSON object or None; error a one-line reason; skipped a reason string."""
    with open(log_path, "w", encoding="utf-8") as logf:
        logf.write("$ %s\n" % " ".join(shlex.quote(c) for c in cmd))
        logf.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
        except OSError as e:
            return None, "cannot start %s: %s" % (cmd[0], e), None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the child started above
            proc.wait()
            return None, "timed out after %d s (log %s)" % (timeout, log_path), None
    obj = None
    if os.path.exists(json_path):
        try:
            with open(json_path, encoding="utf-8") as f:
                obj = json.load(f)
        except (OSError, ValueError) as e:
            return None, "exit %d, unreadable JSON %s (%s)" % (rc, json_path, e), None
    if rc == EXIT_SKIP:
        reason = obj.get("skipped") if isinstance(obj, dict) else None
        return None, None, reason or "skipped (exit 77)"
    if rc != 0 or obj is None:
        tail = ""
        try:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                lines = [l for l in f.read().splitlines() if l.strip()]
            tail = lines[-1] if lines else ""
        except OSError:
            pass
        return None, "exit %d%s: %s (log %s)" % (rc, "" if obj else ", no JSON",
                                                one_line(tail, 200), log_path), None
    problems = validate(obj)
    if problems:
        return None, "bad result JSON %s: %s" % (json_path, "; ".join(problems[:5])), None
    return obj, None, None


def validate_gemm(obj):
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    problems = []
    for key in ("n", "reps", "fp32_tflops"):
        v = obj.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            problems.append("%s must be a positive number, got %r" % (key, v))
    for key in ("tf32_tflops", "bf16_tflops"):
        v = obj.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not v > 0):
            problems.append("%s must be null or a positive number, got %r" % (key, v))
    return problems


def common_flags(args, batch, precision, device=None):
    """The arguments cuvae bench and torch_vae.py share; device: cuvae's --device when it is
    not args.device (cpu-ref, cuvae's CPU reference)."""
    flags = ["--device", device or args.device, "--batch-size", str(batch),
             "--epochs", str(args.epochs), "--warmup-epochs", str(args.warmup),
             "--limit", str(args.limit),
             "--algo", args.algo, "--seed", str(args.seed), "--latent-dim",
             str(args.latent_dim)]
    flags += ["--data", args.data]
    if precision == "tf32":
        flags.append("--tf32")
    elif precision == "bf16":
        flags.append("--bf16")  # cuvae and torch_vae.py both take it
    return flags


def check_matches(obj, batch, precision, expected_images=None, settings=()):
    """Mismatches between what was asked and what a system reports it ran. settings: (JSON
    key, value) pairs the result must also report, e.g. ("layout", "nhwc")."""
    bad = []
    if obj["batch_size"] != batch:
        bad.append("ran batch %s, asked %d" % (obj["batch_size"], batch))
    if obj["precision"] != precision:
        bad.append("ran %s, asked %s" % (obj["precision"], precision))
    if expected_images is not None and obj["images"] != expected_images:
        bad.append("trained on %s images, cuvae on %s" % (obj["images"], expected_images))
    for key, value in settings:
        if obj.get(key) != value:
            bad.append("ran %s %s, asked %s" % (key, obj.get(key), value))
    return bad


def gpu_identity():
    """(name, driver) from nvidia-smi, or (None, None)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=60)
        line = out.stdout.strip().splitlines()[0] if out.returncode == 0 else ""
        if "," in line:
            name, driver = [x.strip() for x in line.split(",", 1)]
            return name, driver
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return None, None


def shown_command(argv):
    """The command as typed, with absolute paths made repository-relative (or reduced to
    their last component when outside it) so the written file names no machine's paths."""
    def show(tok):
        for prefix in ("", "--data=", "--cuvae=", "--out=", "--python=", "--work-dir="):
            if tok.startswith(prefix) and os.path.isabs(tok[len(prefix):]):
                path = tok[len(prefix):]
                rel = os.path.relpath(path, REPO)
                if not rel.startswith(".."):
                    return prefix + rel
                return prefix + "<%s>" % (os.path.basename(path.rstrip("/")) or "path")
        return tok
    kept, skip_next = [], False
    for a in argv:  # where the logs went does not change the results
        if skip_next:
            skip_next = False
        elif a == "--work-dir":
            skip_next = True
        elif not a.startswith("--work-dir="):
            kept.append(a)
    script = os.path.relpath(os.path.abspath(__file__), REPO)
    return " ".join(shlex.quote(show(a)) for a in [script] + kept)


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------
GEMM_RATE_KEY = {"fp32": "fp32_tflops", "tf32": "tf32_tflops", "bf16": "bf16_tflops"}


def gemm_rate_for(gemm, precision):
    """The FLOP-floor denominator of a precision's rows in FLOP/s: the GEMM rate measured in
    that precision, or None (no floor) where it was not measured."""
    if not gemm:
        return None
    v = gemm.get(GEMM_RATE_KEY[precision])
    return None if v is None else v * 1e12


def build_report(args, configs, gemm, header_lines):
    """configs: list of dicts {batch, precision, cuvae: (obj, err, skip), torch: {mode: (...)},
    and on the GPU ablations: {name: (...)}, on the CPU reference: (...)}
    -> (markdown text, failed?)"""
    if args.device == "cpu":
        return build_cpu_report(args, configs, gemm, header_lines)
    return build_gpu_report(args, configs, gemm, header_lines)


def judge_loss(base, obj, total_epochs):
    """obj's final loss against base's (benchlib.loss_check, allowing for the larger of the
    two runs' last-epoch drops) -> (status, diff, tol)."""
    drops = [x for x in (bl.last_drop(base["epochs"]), bl.last_drop(obj["epochs"]))
             if x is not None]
    return bl.loss_check(base["final_loss"], obj["final_loss"], total_epochs,
                         max(drops) if drops else None)


def loss_failed(check):
    return check[0] in ("DISAGREE", "non-finite")


def loss_problem(cfg, who, obj, base_name, base, check):
    """The Problem line of a loss that disagrees with (or is not finite against) base's."""
    status, diff, tol = check
    return "%s %s final loss %.3f vs %s %.3f: %s (|diff| %s, tolerance %s)" % (
        cfg, who, obj["final_loss"], base_name, base["final_loss"], status,
        "-" if diff is None else "%.3f" % diff, "-" if tol is None else "%.3f" % tol)


def check_cell(check):
    """A loss check as a table cell: 'agree (0.00, tol 3.20)', or its status alone."""
    if check is None:
        return "-"
    return "%s (%.2f, tol %.2f)" % check if check[1] is not None else check[0]


def run_note(args, configs):
    """The notes' line on what each run did and how ms/epoch is measured."""
    images = next((c["cuvae"][0]["images"] for c in configs if c["cuvae"][0]), None)
    return "- Each run: %d warm-up + %d timed epochs%s; ms/epoch is the median over the " \
        "timed epochs of %s." % (
            args.warmup, args.epochs,
            " over %s training images" % format(images, ",") if images else "",
            "the device time between CUDA events at the epoch's start and end"
            if args.device == "gpu" else "wall-clock time")


def memory_notes(notes_mem):
    """notes_mem: peak_memory_what -> the systems that reported it."""
    return ["- Peak memory of %s: %s." % (" and ".join(sorted(set(who))), what)
            for what, who in notes_mem.items()]


def build_gpu_report(args, configs, gemm, header_lines):
    total_epochs = args.warmup + args.epochs
    failed = False
    main_rows, detail_rows, notes_mem, problems, target_lines = [], [], {}, [], []
    ablation_lines, alternative_lines = [], []
    for c in configs:
        cfg = "gpu b%d %s" % (c["batch"], c["precision"])
        cu, cu_err, cu_skip = c["cuvae"]
        if cu_err or cu_skip:
            failed = failed or bool(cu_err)
            problems.append("%s cuvae: %s" % (cfg, cu_err or cu_skip))
        eager = c["torch"].get("eager", (None, None, None))[0]
        compiled = [(m, r[0]) for m, r in c["torch"].items() if m != "eager" and r[0]]
        best_mode, best = (min(compiled, key=lambda t: t[1]["ms_per_epoch_median"])
                           if compiled else (None, None))
        for m, (obj, err, skip) in c["torch"].items():
            if err:
                failed = True
                problems.append("%s PyTorch %s: %s" % (cfg, m, err))
            elif skip:
                problems.append("%s PyTorch %s skipped: %s" % (cfg, m, skip))
        rate = gemm_rate_for(gemm, c["precision"])

        def ratio(other):
            if not cu or not other:
                return None
            return other["ms_per_epoch_median"] / cu["ms_per_epoch_median"]

        # loss checks, every PyTorch mode against cuvae
        checks = {}
        for m, (obj, _, _) in c["torch"].items():
            if obj and cu:
                checks[m] = judge_loss(cu, obj, total_epochs)
                if loss_failed(checks[m]):
                    failed = True
                    problems.append(loss_problem(cfg, "PyTorch " + m, obj, "cuvae", cu,
                                                 checks[m]))
            for bad in (check_matches(obj, c["batch"], c["precision"],
                                      cu["images"] if cu else None) if obj else []):
                failed = True
                problems.append("%s PyTorch %s: %s" % (cfg, m, bad))
        if cu:
            for bad in check_matches(cu, c["batch"], c["precision"]):
                failed = True
                problems.append("%s cuvae: %s" % (cfg, bad))
        if cu and not math.isfinite(cu["final_loss"]):
            failed = True
            problems.append("%s cuvae: non-finite final loss" % cfg)
        if cu and cu.get("cuda_graph") is False:
            problems.append("%s cuvae: the step was not replayed from a CUDA graph (capture "
                            "failed: see its log)" % cfg)
        ablation_checks = {}  # "cuvae <flags>" -> its loss against the row's cuvae run
        for name, (off, off_err, _) in c.get("ablations", {}).items():
            flag, what, setting = flag_text(name), ABLATIONS[name].what, ABLATIONS[name].setting
            if off_err:
                failed = True
                problems.append("%s cuvae %s: %s" % (cfg, flag, off_err))
            bad = check_matches(off, c["batch"], c["precision"], cu["images"] if cu else None,
                                [setting] if setting else []) if off else []
            for b in bad:
                failed = True
                problems.append("%s cuvae %s: %s" % (cfg, flag, b))
            if not (cu and off) or bad:
                continue
            # the same seed as the row's run: a loss that disagrees means the run trained
            # something else, and its time says nothing about the setting
            check = judge_loss(cu, off, total_epochs)
            ablation_checks["cuvae " + flag] = check
            if loss_failed(check):
                failed = True
                problems.append(loss_problem(cfg, "cuvae " + flag, off, "cuvae", cu, check))
                continue
            if setting:
                base_value = cu.get(setting[0])
                if base_value == setting[1]:
                    problems.append("%s cuvae %s: the row's own run already used %s %s: "
                                    "nothing to compare" % (cfg, flag, setting[0], base_value))
                else:
                    alternative_lines.append(alternative_line(
                        cfg, name, off["ms_per_epoch_median"], cu["ms_per_epoch_median"],
                        base_value))
            else:
                ablation_lines.append(
                    "- %s, %s: %s ms/epoch without it (%s), %s with it: %s" % (
                        cfg, what, bl.fmt_ms(off["ms_per_epoch_median"]), flag,
                        bl.fmt_ms(cu["ms_per_epoch_median"]),
                        bl.fmt_ratio(off["ms_per_epoch_median"]
                                     / cu["ms_per_epoch_median"])))
        statuses = sorted(set(s for s, _, _ in checks.values()))
        loss_cell = ", ".join(statuses) if statuses else "-"

        def mem(o):
            return bl.fmt_bytes(o["peak_memory_bytes"]) if o else "-"

        def loss(o):
            return bl.fmt_loss(o["final_loss"]) if o else "-"

        main_rows.append([
            cfg,
            bl.fmt_ms(cu["ms_per_epoch_median"]) if cu else "failed" if cu_err else "-",
            bl.fmt_ms(eager["ms_per_epoch_median"]) if eager else "-",
            ("%s (%s)" % (bl.fmt_ms(best["ms_per_epoch_median"]), best_mode)) if best else "-",
            bl.fmt_ratio(ratio(eager)), bl.fmt_ratio(ratio(best)),
            bl.fmt_rate(cu["images_per_s"]) if cu else "-",
            bl.fmt_pct(bl.floor_fraction(cu["images_per_s"], rate, args.latent_dim))
            if cu else "-",
            " / ".join([mem(cu), mem(eager), mem(best)]),
            " / ".join([loss(cu), loss(eager), loss(best)]),
            loss_cell,
        ])
        if cu:
            r_e, r_c = ratio(eager), ratio(best)
            frac = bl.floor_fraction(cu["images_per_s"], rate, args.latent_dim)
            parts = []
            if c["precision"] == "bf16":
                # the targets are stated for fp32 and TF32: a mixed-precision row is
                # reported beside them and never counted towards them
                if r_e is not None:
                    parts.append("vs eager %.2fx" % r_e)
                if r_c is not None:
                    parts.append("vs best compile %.2fx" % r_c)
                if frac is not None:
                    parts.append("%.1f%% of the bf16 floor" % (100 * frac))
            elif r_e is not None:
                parts.append("vs eager %.2fx (target 5x: %s)" % (r_e, "met" if r_e >= 5
                                                                 else "missed"))
            if r_c is not None and c["precision"] != "bf16":
                parts.append("vs best compile %.2fx (target 1.5x: %s)"
                             % (r_c, "met" if r_c >= 1.5 else "missed"))
            if c["batch"] == 128 and c["precision"] == "fp32":
                epoch_ms, keras_s = bl.schedule_times(cu["images_per_s"])
                parts.append("a 60,000-image epoch %s ms at this rate (target 60 ms: %s); the "
                             "Keras schedule, 30 epochs x 70,000 images, %.2f s (target 2 s: %s)"
                             % (bl.fmt_ms(epoch_ms), "met" if epoch_ms <= 60 else "missed",
                                keras_s, "met" if keras_s <= 2 else "missed"))
            if c["batch"] == 4096 and c["precision"] == "tf32" and frac is not None:
                parts.append("%.1f%% of the TF32 floor (target 30%%: %s)"
                             % (100 * frac, "met" if frac >= 0.30 else "missed"))
            if parts and c["precision"] == "bf16":
                target_lines.append("- %s (mixed precision against PyTorch's bf16 autocast; "
                                    "not counted towards the targets, which are stated for "
                                    "fp32 and TF32): %s" % (cfg, "; ".join(parts)))
            elif parts:
                target_lines.append("- %s: %s" % (cfg, "; ".join(parts)))

        systems = [("cuvae", c["cuvae"])]
        systems += [("cuvae " + flag_text(n), r) for n, r in c.get("ablations", {}).items()]
        systems += [("PyTorch " + m, r) for m, r in c["torch"].items()]
        for name, (obj, err, skip) in systems:
            if not obj:
                detail_rows.append([cfg, name, "failed" if err else "skipped", "-", "-", "-",
                                    "-", "-", "-"])
                continue
            notes_mem.setdefault(obj["peak_memory_what"], []).append(
                "cuvae" if name.startswith("cuvae") else "PyTorch")
            ach = bl.train_flop_per_image(args.latent_dim) * obj["images_per_s"]
            chk = (checks.get(name[len("PyTorch "):]) if name.startswith("PyTorch")
                   else ablation_checks.get(name))
            detail_rows.append([
                cfg, name, bl.fmt_ms(obj["ms_per_epoch_median"]),
                bl.fmt_rate(obj["images_per_s"]),
                "%.3g" % (ach / 1e12),
                bl.fmt_pct(bl.floor_fraction(obj["images_per_s"], rate, args.latent_dim)),
                bl.fmt_bytes(obj["peak_memory_bytes"]),
                bl.fmt_loss(obj["final_loss"]),
                check_cell(chk),
            ])

    out = list(header_lines)
    out.append("")
    out.append(bl.markdown_table(
        ["configuration", "cuvae ms/epoch", "PyTorch eager ms/epoch",
         "best torch.compile ms/epoch (mode)", "cuvae vs eager", "cuvae vs compile",
         "cuvae images/s", "cuvae % of FLOP floor", "peak memory cuvae / eager / compile",
         "final loss cuvae / eager / compile", "losses"], main_rows))
    out.append("")
    out.append("Every run:")
    out.append("")
    out.append(bl.markdown_table(
        ["configuration", "system", "ms/epoch", "images/s", "model TFLOP/s",
         "% of FLOP floor", "peak memory", "final loss", "loss vs cuvae (|diff|, tol)"],
        detail_rows))
    out.append("")
    out.append("Notes:")
    out.append("")
    out.append(run_note(args, configs))
    out.append("- Ratios are PyTorch ms/epoch over cuvae ms/epoch (above 1: cuvae is "
               "faster); best torch.compile is the fastest of the compile modes run.")
    out.append("- FLOP floor: %.2f MFLOP per image per step (forward %.2f MFLOP from the layer "
               "shapes, x3 for forward + backward), over the GEMM rate in the row's precision "
               "measured in this run%s." % (
                   bl.train_flop_per_image(args.latent_dim) / 1e6,
                   bl.forward_flop_per_image(args.latent_dim) / 1e6,
                   gemm_note(gemm)))
    out.append("- Losses: " + bl.rule_text() + ".")
    out.append("- cuDNN algorithms: %s (cuvae --algo %s; PyTorch cudnn.benchmark=%s)."
               % (args.algo, args.algo, args.algo == "fastest"))
    out.extend(memory_notes(notes_mem))
    if target_lines:
        out.append("- Targets:")
        out.extend("  " + t for t in target_lines)
    not_run = sorted(set("%s with --%s (%s)" % (flag_text(n), prec, why)
                         for n in args.ablations
                         for prec, why in ABLATION_CONFLICTS.get(n, {}).items()
                         if any(c["precision"] == prec for c in configs)))
    if ablation_lines or not_run:
        out.append("- Optimisations, each switched off in a cuvae run of its own (ratio: "
                   "ms/epoch without over ms/epoch with; other settings as in the row):")
        out.extend("  " + t for t in ablation_lines)
        if not_run:
            out.append("  - not run: %s" % "; ".join(not_run))
    if alternative_lines:
        out.append("- Alternative settings, each in a cuvae run of its own beside the row's "
                   "(other settings as in the row; the ratio is the slower run's ms/epoch over "
                   "the faster's, and the line says which is faster). --layout nhwc: the "
                   "convolutions' activations and filters channels-last (cuDNN NHWC/KRSC, the "
                   "layout its tensor-core kernels read), against cuvae's default NCHW:")
        out.extend("  " + t for t in alternative_lines)
    if any(c["precision"] == "bf16" for c in configs):
        out.append("- Mixed precision (bf16 rows): cuvae --bf16 runs bf16 activations and bf16 "
                   "tensor-core convolutions and encoder GEMM with fp32 accumulation, and "
                   "keeps in fp32 the master weights, Adam, the loss, the latent heads, the "
                   "reparameterization and the decoder's first dense layer; PyTorch runs "
                   "torch.autocast(bfloat16) around forward + loss (which also puts its small "
                   "dense layers in bf16) with fp32 parameters, the loss terms in fp32 and "
                   "TF32 off. Their losses are judged against each other (bf16 against bf16, "
                   "as fp32 against fp32).")
        cost = mixed_precision_lines(configs)
        if cost:
            out.append("- Accuracy cost and speed of cuvae --bf16 against cuvae in strict fp32 "
                       "(same seed, so the same init, shuffles and noise: the change comes "
                       "from the precision, and from nondeterministic cuDNN algorithms under "
                       "--algo fastest; speed: fp32 ms/epoch over bf16 ms/epoch, above 1: "
                       "bf16 is faster):")
            out.extend("  " + t for t in cost)
    for prob in problems:
        out.append("- Problem: %s" % prob)
    return "\n".join(out) + "\n", failed


def build_cpu_report(args, configs, gemm, header_lines):
    """One table, a row per run: cuvae's fast engine, cuvae's reference and each PyTorch mode
    of every configuration, with the speed-up over PyTorch eager and the fraction of the
    SGEMM rate that the fast engine's run measured (the CPU's FLOP-floor denominator)."""
    total_epochs = args.warmup + args.epochs
    failed = False
    rows, problems, notes_mem, floor_lines, target_lines = [], [], {}, [], []
    for c in configs:
        cfg = "cpu b%d %s" % (c["batch"], c["precision"])
        fast, ref = c["cuvae"][0], c["reference"][0]
        eager = c["torch"].get("eager", (None, None, None))[0]
        sgemm = fast["sgemm_gflops"] * 1e9 if fast else None
        floor_lines.append(sgemm_line(cfg, fast, ref))
        runs = [(CPU_FAST, c["cuvae"], "cpu"), (CPU_REFERENCE, c["reference"], "cpu-ref")]
        runs += [("PyTorch " + m, r, None) for m, r in c["torch"].items()]
        for name, (obj, err, skip), kind in runs:
            if err or skip:
                failed = failed or bool(err)
                problems.append("%s %s%s: %s" % (cfg, name, " skipped" if skip and not err
                                                 else "", err or skip))
            if not obj:
                rows.append([cfg, name, "failed" if err else "skipped"] + ["-"] * 7)
                continue
            notes_mem.setdefault(obj["peak_memory_what"], []).append(
                "cuvae" if name.startswith("cuvae") else "PyTorch")
            for bad in check_matches(obj, c["batch"], c["precision"],
                                     fast["images"] if fast and obj is not fast else None,
                                     [("device_kind", kind)] if kind else []):
                failed = True
                problems.append("%s %s: %s" % (cfg, name, bad))
            check = None
            if obj is fast and not math.isfinite(fast["final_loss"]):
                failed = True
                problems.append("%s %s: non-finite final loss" % (cfg, name))
            elif obj is not fast and fast:
                check = judge_loss(fast, obj, total_epochs)
                if loss_failed(check):
                    failed = True
                    problems.append(loss_problem(cfg, name, obj, "the fast engine", fast,
                                                 check))
            rows.append([
                cfg, name, bl.fmt_rate(obj["images_per_s"]),
                bl.fmt_ms(obj["ms_per_epoch_median"]),
                bl.fmt_ratio(eager["ms_per_epoch_median"] / obj["ms_per_epoch_median"]
                             if eager else None),
                fmt_gflops(bl.train_flop_per_image(args.latent_dim) * obj["images_per_s"]),
                bl.fmt_pct(bl.floor_fraction(obj["images_per_s"], sgemm, args.latent_dim)),
                bl.fmt_bytes(obj["peak_memory_bytes"]),
                bl.fmt_loss(obj["final_loss"]),
                check_cell(check),
            ])
        target_lines.append(cpu_target_line(cfg, c["batch"], fast, ref, eager))

    out = list(header_lines)
    out.append("")
    out.append(bl.markdown_table(
        ["configuration", "system", "images/s", "ms/epoch", "vs PyTorch eager",
         "model GFLOP/s", "% of FLOP floor", "peak memory", "final loss",
         "loss vs fast engine (|diff|, tol)"], rows))
    out.append("")
    out.append("Notes:")
    out.append("")
    out.append(run_note(args, configs))
    out.append("- vs PyTorch eager: PyTorch eager's ms/epoch over the row's (above 1: faster "
               "than PyTorch eager); every run of a configuration trains on the same images, "
               "each in a process of its own.")
    out.append("- FLOP floor: %.2f MFLOP per image per step (forward %.2f MFLOP from the layer "
               "shapes, x3 for forward + backward), over the processor's single-precision "
               "GEMM rate as cuvae measured it with the library its fast engine links, in the "
               "fast engine's own process before training; every row of a configuration is "
               "divided by that configuration's measurement:" % (
                   bl.train_flop_per_image(args.latent_dim) / 1e6,
                   bl.forward_flop_per_image(args.latent_dim) / 1e6))
    out.extend("  " + t for t in floor_lines)
    out.append(torch_blas_note(gemm))
    out.append("- Losses: " + bl.rule_text() + "; the reference's and PyTorch's final losses "
               "are judged against the fast engine's.")
    out.append("- Threads: %s." % ("%d for every run (OMP_NUM_THREADS)" % args.threads
                                   if args.threads else "each system's default, one per "
                                   "usable core"))
    out.extend(memory_notes(notes_mem))
    if any(c["cuvae"][0] or c["reference"][0] for c in configs):
        out.append("- cuvae's peak resident set is the process's high-water mark, so it also "
                   "covers the SGEMM measurement's matrices (allocated and freed before "
                   "training).")
    out.append("- Targets (the issue's, for the fast engine at batch %d in fp32: at least "
               "%s images/s, goal %s, i.e. at least %gx PyTorch eager in the same run):"
               % (CPU_TARGET_BATCH, format(CPU_TARGET_IMAGES_PER_S, ","),
                  format(CPU_GOAL_IMAGES_PER_S, ","), CPU_TARGET_VS_EAGER))
    out.extend("  " + t for t in target_lines)
    for prob in problems:
        out.append("- Problem: %s" % prob)
    return "\n".join(out) + "\n", failed


def fmt_gflops(flop_per_s):
    return "-" if flop_per_s is None else "%.1f" % (flop_per_s / 1e9)


def sgemm_line(cfg, fast, ref):
    """The notes' line naming a CPU configuration's FLOP-floor denominator: the SGEMM rate the
    fast engine's run measured, with the reference run's own measurement beside it."""
    if not fast:
        return "- %s: not measured (no result from the fast engine's run): no floor" % cfg
    line = "- %s: %s GFLOP/s (%s)" % (cfg, fmt_gflops(fast["sgemm_gflops"] * 1e9),
                                      fast["sgemm_what"])
    if ref:
        line += "; the reference run's own measurement: %s GFLOP/s" % fmt_gflops(
            ref["sgemm_gflops"] * 1e9)
    return line


def torch_blas_note(gemm):
    """gemm_rate.py's torch.mm rate on the CPU: PyTorch's own BLAS, reported beside the floor
    and never used as its denominator (a generic BLAS can be far below the processor's)."""
    head = "- PyTorch's own BLAS, for comparison (not the FLOP floor): "
    if not gemm:
        return head + "not measured (tools/bench/gemm_rate.py did not finish: see its log)."
    return head + "torch.mm fp32 %d^3, median of %d%s: %s GFLOP/s (tools/bench/gemm_rate.py " \
        "in this run)." % (gemm["n"], gemm["reps"],
                           ", BLAS %s" % gemm["blas"] if gemm.get("blas") else "",
                           fmt_gflops(gemm["fp32_tflops"] * 1e12))


def cpu_target_line(cfg, batch, fast, ref, eager):
    """A CPU configuration's line under Targets: the fast engine's measured training rate and
    its speed-up over PyTorch eager (and over the reference), judged at CPU_TARGET_BATCH."""
    if not fast:
        return "- %s: not measured (no result from the fast engine's run)" % cfg

    def verdict(ok):
        return "met" if ok else "missed"
    judged = batch == CPU_TARGET_BATCH
    rate = fast["images_per_s"]
    rate_text = "the fast engine trains at %s images/s" % format(int(round(rate)), ",")
    if judged:
        rate_text += " (target %s: %s; goal %s: %s)" % (
            format(CPU_TARGET_IMAGES_PER_S, ","), verdict(rate >= CPU_TARGET_IMAGES_PER_S),
            format(CPU_GOAL_IMAGES_PER_S, ","), verdict(rate >= CPU_GOAL_IMAGES_PER_S))
    parts = [rate_text]
    if eager:
        r_e = eager["ms_per_epoch_median"] / fast["ms_per_epoch_median"]
        parts.append("%.2fx PyTorch eager's %s images/s in this run%s" % (
            r_e, format(int(round(eager["images_per_s"])), ","),
            " (target %gx: %s)" % (CPU_TARGET_VS_EAGER, verdict(r_e >= CPU_TARGET_VS_EAGER))
            if judged else ""))
    else:
        parts.append("PyTorch eager not measured%s" % (": the %gx target not judged"
                                                       % CPU_TARGET_VS_EAGER if judged
                                                       else ""))
    if ref:
        parts.append("%.2fx the reference" % (ref["ms_per_epoch_median"]
                                              / fast["ms_per_epoch_median"]))
    line = "- %s: %s" % (cfg, "; ".join(parts))
    if not judged:
        line += " (not judged: the targets are stated at batch %d)" % CPU_TARGET_BATCH
    return line


def mixed_precision_lines(configs):
    """For each batch size with both a strict-fp32 and a bf16 cuvae result: the accuracy cost
    of --bf16 (its final loss against fp32's; both from the same seed) and its speed-up (fp32
    ms/epoch over bf16 ms/epoch), with PyTorch eager's own fp32 -> bf16 autocast change
    beside it where both ran. Only measured figures of this run."""
    by_key = {(c["batch"], c["precision"]): c for c in configs}
    lines = []
    for batch in sorted(set(c["batch"] for c in configs)):
        fp32_c, bf16_c = by_key.get((batch, "fp32")), by_key.get((batch, "bf16"))
        if not fp32_c or not bf16_c:
            continue
        ref, mixed = fp32_c["cuvae"][0], bf16_c["cuvae"][0]
        if not ref or not mixed:
            lines.append("- accuracy cost of --bf16 at batch %d: not measured (the %s cuvae "
                         "run did not finish)" % (batch, "fp32" if not ref else "bf16"))
            continue
        n_epochs = len(mixed["epochs"])
        line = "- accuracy cost of --bf16 at batch %d: final loss %s vs fp32 %s (%s), " \
            "%d epochs" % (batch, bl.fmt_loss(mixed["final_loss"]),
                           bl.fmt_loss(ref["final_loss"]),
                           fmt_change(bl.loss_change(ref["final_loss"], mixed["final_loss"])),
                           n_epochs)
        line += "; speed: %s ms/epoch vs fp32 %s, %s" % (
            bl.fmt_ms(mixed["ms_per_epoch_median"]), bl.fmt_ms(ref["ms_per_epoch_median"]),
            bl.fmt_ratio(ref["ms_per_epoch_median"] / mixed["ms_per_epoch_median"]))
        t_ref = fp32_c["torch"].get("eager", (None,))[0]
        t_mixed = bf16_c["torch"].get("eager", (None,))[0]
        if t_ref and t_mixed:
            line += "; PyTorch eager, bf16 autocast: %s vs fp32 %s (%s)" % (
                bl.fmt_loss(t_mixed["final_loss"]), bl.fmt_loss(t_ref["final_loss"]),
                fmt_change(bl.loss_change(t_ref["final_loss"], t_mixed["final_loss"])))
        lines.append(line)
    return lines


def fmt_change(change):
    """'+0.40 nats, +0.25%' from benchlib.loss_change, or 'not comparable'."""
    if change is None:
        return "not comparable"
    diff, rel = change
    text = "%+.2f nats" % diff
    return text if rel is None else text + ", %+.2f%%" % (100 * rel)


def gemm_note(gemm):
    if not gemm:
        return " (not measured: no floor)"
    parts = ["fp32 %.3g TFLOP/s" % gemm["fp32_tflops"]]
    if gemm.get("tf32_tflops") is not None:
        parts.append("TF32 %.3g TFLOP/s" % gemm["tf32_tflops"])
    if gemm.get("bf16_tflops") is not None:
        parts.append("bf16 %.3g TFLOP/s" % gemm["bf16_tflops"])
    blas = (", PyTorch's BLAS: %s" % gemm["blas"]) if gemm.get("blas") else ""
    return ": %s (torch.mm %d^3, median of %d%s)" % (", ".join(parts), gemm["n"], gemm["reps"],
                                                     blas)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not (os.path.isfile(args.cuvae) and os.access(args.cuvae, os.X_OK)):
        log("error: no cuvae binary at %s (build it first, or pass --cuvae PATH)" % args.cuvae)
        return EXIT_USAGE
    probe = subprocess.run([args.cuvae, "bench", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        log("error: %s has no 'bench' command (%s)"
            % (args.cuvae, one_line(probe.stderr or probe.stdout, 200)))
        return EXIT_USAGE
    out_text = ""
    if not args.no_write:
        try:
            if os.path.exists(args.out):
                with open(args.out, encoding="utf-8") as f:
                    out_text = f.read()
            bl.replace_section(out_text, args.device, "")  # refuse broken markers up front
        except (OSError, bl.SectionError) as e:
            log("error: %s: %s" % (args.out, e))
            return EXIT_USAGE
    env = None
    if args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    work = args.work_dir or tempfile.mkdtemp(prefix="cuvae-bench-")
    os.makedirs(work, exist_ok=True)
    log("logs and JSON in %s" % work)
    started = datetime.datetime.now(datetime.timezone.utc)

    gemm_json = os.path.join(work, "gemm_rate.json")
    gemm, err, skip = run_json([args.python, args.gemm_script, "--device", args.device,
                                "--json", gemm_json] + (
                                    ["--threads", str(args.threads)] if args.threads else []), gemm_json,
                               os.path.join(work, "gemm_rate.log"), args.timeout,
                               validate=validate_gemm, env=env)
    if err or skip:
        log("GEMM rate not measured: %s" % (err or skip))
    elif gemm:
        log("%s: %s" % ("GEMM rate" if args.device == "gpu" else
                        "PyTorch's own BLAS rate (not the CPU floor)",
                        gemm_note(gemm).lstrip(": ")))

    configs = []
    for batch in args.batches:
        for precision in args.precisions:
            tag = "%s-b%d-%s" % (args.device, batch, precision)
            flags = common_flags(args, batch, precision)
            c = dict(batch=batch, precision=precision, torch={})
            path = os.path.join(work, "cuvae-%s.json" % tag)
            log("[%s] cuvae%s ..." % (tag, " --device cpu" if args.device == "cpu" else ""))
            c["cuvae"] = run_json([args.cuvae, "bench"] + flags + ["--json", path], path,
                                  os.path.join(work, "cuvae-%s.log" % tag), args.timeout,
                                  env=env)
            report_one("cuvae --device cpu" if args.device == "cpu" else "cuvae", tag,
                       c["cuvae"])
            if args.device == "cpu":
                path = os.path.join(work, "cuvae-reference-%s.json" % tag)
                log("[%s] cuvae --device cpu-ref ..." % tag)
                c["reference"] = run_json(
                    [args.cuvae, "bench"] + common_flags(args, batch, precision, "cpu-ref")
                    + ["--json", path], path,
                    os.path.join(work, "cuvae-reference-%s.log" % tag), args.timeout, env=env)
                report_one("cuvae --device cpu-ref", tag, c["reference"])
            c["ablations"] = {}
            for name in args.ablations:
                flag = flag_text(name)
                why = ABLATION_CONFLICTS.get(name, {}).get(precision)
                if why:
                    log("[%s] cuvae %s not run: %s" % (tag, flag, why))
                    continue
                path = os.path.join(work, "cuvae-%s-%s.json" % (run_name(name), tag))
                log("[%s] cuvae %s ..." % (tag, flag))
                c["ablations"][name] = run_json(
                    [args.cuvae, "bench"] + flags + list(ABLATIONS[name].flags)
                    + ["--json", path], path,
                    os.path.join(work, "cuvae-%s-%s.log" % (run_name(name), tag)),
                    args.timeout, env=env)
                report_one("cuvae " + flag, tag, c["ablations"][name])
            for mode in args.modes:
                path = os.path.join(work, "pytorch-%s-%s.json" % (mode, tag))
                log("[%s] PyTorch %s ..." % (tag, mode))
                threads = ["--threads", str(args.threads)] if args.threads else []
                c["torch"][mode] = run_json(
                    [args.python, args.pytorch_script] + flags + threads + [
                        "--mode", mode, "--json", path],
                    path, os.path.join(work, "pytorch-%s-%s.log" % (mode, tag)), args.timeout,
                    env=env)
                report_one("PyTorch " + mode, tag, c["torch"][mode])
            configs.append(c)

    header = make_header(args, argv, configs, gemm, started)
    report, failed = build_report(args, configs, gemm, header)
    sys.stdout.write(report)
    if not args.no_write:
        try:
            if os.path.exists(args.out):
                with open(args.out, encoding="utf-8") as f:
                    out_text = f.read()
            bl.write_atomic(args.out, bl.replace_section(out_text, args.device, report))
            log("wrote the %s section of %s" % (args.device, args.out))
        except (OSError, bl.SectionError) as e:
            log("error: could not write %s: %s" % (args.out, e))
            return EXIT_USAGE
    return EXIT_FAIL if failed else EXIT_OK


def report_one(name, tag, res):
    obj, err, skip = res
    if obj:
        log("[%s] %s: %s ms/epoch, %s images/s, final loss %.3f"
            % (tag, name, bl.fmt_ms(obj["ms_per_epoch_median"]),
               bl.fmt_rate(obj["images_per_s"]), obj["final_loss"]))
    else:
        log("[%s] %s: %s" % (tag, name, err or ("skipped: %s" % skip)))


def make_header(args, argv, configs, gemm, started):
    results = [c["cuvae"][0] for c in configs if c["cuvae"][0]]
    results += [c["reference"][0] for c in configs if c.get("reference", (None,))[0]]
    results += [r[0] for c in configs for r in c["torch"].values() if r[0]]
    torch_res = next((r for r in results if "torch_version" in r), {})
    cuvae_res = next((r for r in results if r.get("system") == "cuvae"), {})
    lines = []
    if args.device == "gpu":
        name, driver = gpu_identity()
        name = name or torch_res.get("device") or cuvae_res.get("device") or "unknown GPU"
        lines.append("### GPU: %s" % name)
        lines.append("")
        lines.append("- Device: %s, driver %s" % (name, driver or "unknown (no nvidia-smi)"))
        lines.append("- PyTorch %s (CUDA %s, cuDNN %s); cuvae %s"
                     % (torch_res.get("torch_version", "?"), torch_res.get("cuda_version", "?"),
                        torch_res.get("cudnn_version", "?"), cuvae_res.get("version", "?")))
    else:
        fast_res, ref_res = (next((r for r in results if r.get("system") == "cuvae"
                                   and r.get("device_kind") == kind), {})
                             for kind in ("cpu", "cpu-ref"))
        lines.append("### CPU (no GPU): %s" % bl.cpu_name())
        lines.append("")
        lines.append("- Device: CPU, %s; cuvae reports '%s' (fast engine) and '%s' "
                     "(reference), PyTorch '%s'"
                     % (bl.cpu_name(), fast_res.get("device", "?"), ref_res.get("device", "?"),
                        torch_res.get("device", "?")))
        lines.append("- PyTorch %s; cuvae %s" % (torch_res.get("torch_version", "?"),
                                                 cuvae_res.get("version", "?")))
        try:
            load = "%.1f" % os.getloadavg()[0]
        except OSError:
            load = "unknown"
        lines.append("- CPU timings are wall clock and share the machine: load average %s "
                     "at the end of the run, %d usable cores" % (load, bl.usable_cores()))
    lines.append("- Date: %s" % started.strftime("%Y-%m-%d %H:%M UTC"))
    lines.append("- Command: `%s`" % shown_command(argv))
    return lines


if __name__ == "__main__":
    sys.exit(main())
