#!/usr/bin/env bash
# `cuvae bench` end to end on the CPU (a small synthetic IDX set): its JSON follows the schema
# tools/bench/bench.py reads (benchlib.validate_result), counts the warm-up and timed epochs
# asked for, the images of --limit, loss = reconstruction + beta * KL for every epoch and for
# final_* (taken from the last epoch), with beta 1 (the default), 0, 0.5 and 4, the median over
# the timed epochs only; and its losses are those of `cuvae train` with the same settings (the
# same training, only timed), epoch for epoch, as many epochs in both. The GPU-only switches
# (--no-cuda-graph, --no-fusion) are accepted and reported as off on the CPU; --bf16 is a GPU
# setting, and so is --layout nhwc: bench and train note each on the CPU, train in fp32 NCHW,
# and config.json records the CPU's precision, none of the GPU settings; the bench JSON reports
# the layout the run used (NCHW on the CPU).
# The pixels and the training seed come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_bench.sh <cuvae-binary> <python3> <repo-root>
set -u
if [ $# -ne 3 ]; then
  echo "usage: $0 <cuvae-binary> <python3> <repo-root>"
  exit 1
fi
CUVAE=$1
PYTHON=$2
ROOT=$3
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup bench "$CUVAE"
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
make_mnist_dir "$TMP/data" 80 10
SIZES=(--device cpu --data "$TMP/data" --limit 72 --batch-size 16 --seed "$SEED")

# bench_and_train NAME [FLAGS...]: `cuvae bench` (1 warm-up + 2 timed epochs) into
# $TMP/NAME.json and `cuvae train` (3 epochs) into $TMP/NAME-run, both with FLAGS; exits on a
# failed run (nothing left to check).
bench_and_train() {
  local name=$1
  shift
  "$CUVAE" bench "${SIZES[@]}" --warmup-epochs 1 --epochs 2 --json "$TMP/$name.json" "$@" \
    >"$TMP/$name.bench.out" 2>&1 ||
    { cat "$TMP/$name.bench.out"; echo "FAIL: cuvae bench $*"; exit 1; }
  "$CUVAE" train "${SIZES[@]}" --epochs 3 --out "$TMP/$name-run" "$@" >"$TMP/$name.train.out" 2>&1 ||
    { cat "$TMP/$name.train.out"; echo "FAIL: cuvae train $*"; exit 1; }
}
# The default beta, with the GPU-only switches; train's --bf16 leaves bench's losses unchanged
# on the CPU (fp32 either way).
"$CUVAE" bench "${SIZES[@]}" --warmup-epochs 1 --epochs 2 --no-cuda-graph --no-fusion \
  --layout nhwc --json "$TMP/beta1.json" >"$TMP/beta1.bench.out" 2>&1 ||
  { cat "$TMP/beta1.bench.out"; echo "FAIL: cuvae bench"; exit 1; }
"$CUVAE" train "${SIZES[@]}" --epochs 3 --no-cuda-graph --bf16 --layout nhwc --out "$TMP/beta1-run" \
  >"$TMP/beta1.train.out" 2>&1 ||
  { cat "$TMP/beta1.train.out"; echo "FAIL: cuvae train"; exit 1; }
for beta in 0 0.5 4; do bench_and_train "beta$beta" --beta "$beta"; done

"$PYTHON" - "$ROOT/tools/bench" "$TMP" <<'PY'
import csv, json, os, statistics, sys
sys.path.insert(0, sys.argv[1])
import benchlib
tmp = sys.argv[2]
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)

# bench's figures are doubles printed in full: loss = recon + beta * kl holds to rounding
# (1e-12 leaves a thousand times that); metrics.csv keeps 9 significant digits (1e-7).
BENCH_TOL, CSV_TOL = 1e-12, 1e-7
for beta in (1.0, 0.0, 0.5, 4.0):
    name = "beta%g" % beta
    before = len(problems)
    r = json.load(open(os.path.join(tmp, name + ".json")))
    problems += ["%s: %s" % (name, p) for p in benchlib.validate_result(r)]
    need(r["system"] == "cuvae" and r["device_kind"] == "cpu", name + ": system/device_kind")
    need(r["images"] == 72 and r["batch_size"] == 16 and r["warmup_epochs"] == 1, name + ": sizes")
    eps = r["epochs"]
    need([e["epoch"] for e in eps] == [1, 2, 3], name + ": epoch numbers")
    need([e["warmup"] for e in eps] == [True, False, False], name + ": warm-up flags")
    for e in eps:
        need(abs(e["loss"] - (e["recon"] + beta * e["kl"])) <= BENCH_TOL * e["loss"],
             "%s: epoch %d: loss %r != recon %r + %g * kl %r"
             % (name, e["epoch"], e["loss"], e["recon"], beta, e["kl"]))
        need(e["ms"] > 0 and e["loss"] > 0 and e["kl"] >= 0, name + ": positive figures")
    if beta != 1.0:
        # worth checking only if a loss that ignored beta would fail it
        need(any(abs(1 - beta) * e["kl"] > 3 * BENCH_TOL * e["loss"] for e in eps),
             name + ": no epoch has a KL large enough for a loss that ignored beta to show")
    need(eps and r["final_loss"] == eps[-1]["loss"] and r["final_recon"] == eps[-1]["recon"]
         and r["final_kl"] == eps[-1]["kl"], name + ": final_* = last epoch")
    need(abs(r["final_loss"] - (r["final_recon"] + beta * r["final_kl"]))
         <= BENCH_TOL * r["final_loss"], name + ": final_loss = final_recon + beta * final_kl")
    need(r["ms_per_epoch_median"] == statistics.median([e["ms"] for e in eps[1:]]),
         name + ": median of timed")
    need(r["peak_memory_bytes"] > 0, name + ": peak memory")
    rows = list(csv.DictReader(open(os.path.join(tmp, name + "-run", "metrics.csv"))))
    need(len(rows) == len(eps) == 3,
         "%s: %d bench epochs and %d metrics.csv rows, expected 3 of each" % (name, len(eps), len(rows)))
    for e, row in zip(eps, rows):
        need(abs(float(row["loss"]) - e["loss"]) <= CSV_TOL * e["loss"],
             "%s: epoch %d loss differs from cuvae train" % (name, e["epoch"]))
    if len(problems) == before:
        print("ok: beta %g: %d epochs, median %.1f ms, losses %s equal cuvae train's, loss = recon "
              "+ beta * kl" % (beta, len(eps), r["ms_per_epoch_median"],
                               [round(e["loss"], 3) for e in eps]))

r = json.load(open(os.path.join(tmp, "beta1.json")))
need(r["cuda_graph"] is False and r["fused"] is False, "the GPU switches are off on the CPU")
need(r.get("layout") == "nchw", "the CPU bench reports its NCHW layout, --layout nhwc notwithstanding")
config = json.load(open(os.path.join(tmp, "beta1-run", "config.json")))
gpu_keys = sorted({"tf32", "bf16", "layout", "cuda_graph", "cudnn_algorithms"} & set(config))
need(not gpu_keys, "config.json of a CPU run records GPU settings: %s" % gpu_keys)
need(config.get("precision") == "fp32", "config.json records the CPU's fp32")
train_out = open(os.path.join(tmp, "beta1.train.out")).read()
need("--bf16 applies to the GPU trainer only" in train_out, "the CPU run notes that --bf16 is ignored")
need("--layout nhwc applies to the GPU trainer only" in train_out, "the CPU run notes that --layout is ignored")
need("--no-cuda-graph applies to the GPU trainer only" in train_out,
     "the CPU run notes that --no-cuda-graph is ignored")
bench_out = open(os.path.join(tmp, "beta1.bench.out")).read()
for flag in ("--layout nhwc", "--no-cuda-graph", "--no-fusion"):
    need("cuvae: note: %s applies to the GPU trainer only" % flag in bench_out,
         "the CPU bench notes that %s is ignored, as train does" % flag)
if problems:
    print("FAIL: " + "; ".join(problems))
    sys.exit(1)
print("ok: the GPU-only switches are off on the CPU, noted by bench and train, and left out of "
      "config.json")
PY
