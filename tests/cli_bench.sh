#!/usr/bin/env bash
# `cuvae bench` end to end on the CPU (a small synthetic IDX set): its JSON follows the schema
# tools/bench/bench.py reads (benchlib.validate_result), counts the warm-up and timed epochs
# asked for, the images of --limit, loss = reconstruction + KL for every epoch, final_* from
# the last epoch, the median over the timed epochs only; and its losses are those of
# `cuvae train` with the same settings (the same training, only timed). The GPU-only switches
# (--no-cuda-graph, --no-fusion) are accepted and reported as off on the CPU; --bf16 is a GPU
# setting, and so is --layout nhwc: the CPU notes each, trains in fp32 NCHW and config.json
# records the flags; the bench JSON reports the layout the run used (NCHW on the CPU).
# usage: cli_bench.sh <cuvae-binary> <python3> <repo-root>
set -u
CUVAE=$1
PYTHON=$2
ROOT=$3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuvae_bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
SEED=$((RANDOM * 32768 + RANDOM))
echo "seed $SEED"
make_mnist_dir "$TMP/data" 80 10
"$CUVAE" bench --device cpu --data "$TMP/data" --limit 72 --batch-size 16 --warmup-epochs 1 \
  --epochs 2 --seed "$SEED" --no-cuda-graph --no-fusion --layout nhwc --json "$TMP/bench.json" \
  >"$TMP/bench.out" 2>&1 ||
  { cat "$TMP/bench.out"; echo "FAIL: cuvae bench"; exit 1; }
"$CUVAE" train --device cpu --data "$TMP/data" --limit 72 --batch-size 16 --epochs 3 \
  --seed "$SEED" --no-cuda-graph --bf16 --layout nhwc --out "$TMP/run" >"$TMP/train.out" 2>&1 ||
  { cat "$TMP/train.out"; echo "FAIL: cuvae train"; exit 1; }
"$PYTHON" - "$ROOT/tools/bench" "$TMP/bench.json" "$TMP/run/metrics.csv" "$TMP/run/config.json" \
  "$TMP/train.out" <<'PY'
import csv, json, statistics, sys
sys.path.insert(0, sys.argv[1])
import benchlib
r = json.load(open(sys.argv[2]))
problems = benchlib.validate_result(r)
def need(cond, what):
    if not cond:
        problems.append(what)
need(r["system"] == "cuvae" and r["device_kind"] == "cpu", "system/device_kind")
need(r["images"] == 72 and r["batch_size"] == 16 and r["warmup_epochs"] == 1, "sizes")
eps = r["epochs"]
need([e["epoch"] for e in eps] == [1, 2, 3], "epoch numbers")
need([e["warmup"] for e in eps] == [True, False, False], "warm-up flags")
for e in eps:
    need(abs(e["loss"] - (e["recon"] + e["kl"])) <= 1e-9 * e["loss"], "loss = recon + kl")
    need(e["ms"] > 0 and e["loss"] > 0 and e["kl"] >= 0, "positive figures")
need(r["final_loss"] == eps[-1]["loss"] and r["final_kl"] == eps[-1]["kl"], "final_* = last epoch")
need(r["ms_per_epoch_median"] == statistics.median([e["ms"] for e in eps[1:]]), "median of timed")
need(r["peak_memory_bytes"] > 0, "peak memory")
need(r["cuda_graph"] is False and r["fused"] is False, "the GPU switches are off on the CPU")
need(r.get("layout") == "nchw", "the CPU bench reports its NCHW layout, --layout nhwc notwithstanding")
config = json.load(open(sys.argv[4]))
need(config.get("cuda_graph") is False, "config.json records --no-cuda-graph")
need(config.get("bf16") is True, "config.json records --bf16")
need(config.get("layout") == "nhwc", "config.json records --layout nhwc")
train_out = open(sys.argv[5]).read()
need("--bf16 applies to the GPU trainer only" in train_out, "the CPU run notes that --bf16 is ignored")
need("--layout nhwc applies to the GPU trainer only" in train_out, "the CPU run notes that --layout is ignored")
rows = list(csv.DictReader(open(sys.argv[3])))
for e, row in zip(eps, rows):
    # metrics.csv holds 9 significant digits
    need(abs(float(row["loss"]) - e["loss"]) <= 1e-7 * e["loss"], "epoch %d loss differs from cuvae train" % e["epoch"])
if problems:
    print("FAIL: " + "; ".join(problems))
    sys.exit(1)
print("ok: %d epochs, median %.1f ms, losses %s equal cuvae train's"
      % (len(eps), r["ms_per_epoch_median"], [round(e["loss"], 3) for e in eps]))
PY
