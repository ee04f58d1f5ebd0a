#!/usr/bin/env python3
"""Where the fast CPU engine's training step spends its time: `cuvae bench --device cpu` run
once with oneDNN's verbose mode (DNNL_VERBOSE=1, which times every primitive it executes),
the timed epochs' primitive executions summed per primitive and per layer shape, printed as a
Markdown table in milliseconds per step, with each one's share of the step's wall time.

Usage:
  tools/bench/cpu_profile.py [--cuvae build/cuvae] [--data data/mnist] [--batch-size 128]
                             [--limit 2048] [--top 25]

The step's wall time is the bench's median epoch time over its steps; what the primitives do
not account for is the engine's own loops (reparameterization, loss, ReLU masks), Adam,
batch assembly and oneDNN's dispatch. oneDNN's verbose timing itself costs a little: the wall
time is from the same run, so the shares are of a slightly slowed step.

Exit status: 0 success, 1 the bench failed or printed no primitive times, 2 bad arguments.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile


def parse_verbose(lines):
    """{(kind, implementation, propagation, shape): [total ms, executions]} from the
    'onednn_verbose,exec,...' lines (oneDNN 2.x: the last two fields are the problem
    description and the time in ms)."""
    table = collections.defaultdict(lambda: [0.0, 0])
    for line in lines:
        if not line.startswith("onednn_verbose,exec,"):
            continue
        f = line.rstrip("\n").split(",")
        if len(f) < 8:
            continue
        try:
            ms = float(f[-1])
        except ValueError:
            continue
        key = (f[3], f[4], f[5], f[-2])
        table[key][0] += ms
        table[key][1] += 1
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cuvae", default="build/cuvae")
    p.add_argument("--data", default="data/mnist")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=2048)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.limit < args.batch_size or args.top < 1:
        p.error("need 1 <= --batch-size <= --limit and --top >= 1")
    if not os.access(args.cuvae, os.X_OK):
        print("cpu_profile: %s is not an executable cuvae" % args.cuvae, file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="cuvae_cpu_profile_") as tmp:
        out_json = os.path.join(tmp, "bench.json")
        # One warm-up epoch (primitive creation, first touches), one timed epoch.
        cmd = [args.cuvae, "bench", "--device", "cpu", "--data", args.data, "--limit",
               str(args.limit), "--batch-size", str(args.batch_size), "--warmup-epochs", "1",
               "--epochs", "1", "--json", out_json]
        env = dict(os.environ, DNNL_VERBOSE="1")
        run = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        if run.returncode != 0:
            print(run.stdout[-4000:], file=sys.stderr)
            print("cpu_profile: cuvae bench exited %d" % run.returncode, file=sys.stderr)
            return 1
        with open(out_json) as f:
            bench = json.load(f)

    lines = run.stdout.splitlines()
    # The timed epoch's executions: those after the warm-up epoch's line.
    marks = [i for i, line in enumerate(lines) if line.startswith("epoch 1 (warm-up)")]
    table = parse_verbose(lines[marks[0] + 1:] if marks else lines)
    if not table:
        print("cpu_profile: no oneDNN primitive times in the output (is cuvae linked with "
              "oneDNN 2.x?)", file=sys.stderr)
        return 1
    steps = -(-args.limit // args.batch_size)
    step_ms = bench["ms_per_epoch_median"] / steps
    rows = sorted(table.items(), key=lambda kv: -kv[1][0])
    total = sum(v[0] for v in table.values()) / steps
    print("device: %s; batch %d; %d steps per epoch; step %.2f ms wall (%.0f images/s); "
          "oneDNN primitives %.2f ms (%.0f%%)" % (bench["device"], args.batch_size, steps,
                                                step_ms, bench["images_per_s"], total,
                                                100 * total / step_ms))
    print()
    print("| primitive | implementation | pass | problem | calls/step | ms/step | share |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (kind, impl, prop, shape), (ms, n) in rows[:args.top]:
        print("| %s | %s | %s | `%s` | %.0f | %.3f | %.1f%% |"
              % (kind, impl, prop, shape, n / steps, ms / steps, 100 * ms / steps / step_ms))
    rest = rows[args.top:]
    if rest:
        ms = sum(v[0] for _, v in rest) / steps
        print("| (%d more) | | | | | %.3f | %.1f%% |" % (len(rest), ms, 100 * ms / step_ms))
    other = step_ms - total
    print("| everything else (loops, Adam, batches) | | | | | %.3f | %.1f%% |"
          % (other, 100 * other / step_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
