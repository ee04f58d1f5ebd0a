"""Pure parts of the cuvae benchmark driver (no torch, no subprocesses): the model's FLOP
count, the rule that decides whether two final losses agree, the result-JSON schema, the
Markdown table and the replacement of a marked section of BENCHMARKS.md.

bench.py uses these; test_bench.py tests them. Standard library only.
"""

import json
import math
import os
import tempfile

# ------------------------------------------------------------------------------------------
# FLOP count
# ------------------------------------------------------------------------------------------
# Layer shapes of the model in tools/parity/cuvae_torch.py (README "The model"), per image:
#   (name, kind, c_in, c_out, h_in, w_in, h_out, w_out, k)
# kind "conv": MACs = h_out*w_out * c_out * c_in * k*k   (each output sums c_in*k*k taps)
# kind "deconv": MACs = h_in*w_in * c_in * c_out * k*k   (each input scatters k*k taps to
#     every output channel; the GEMM + col2im form the libraries use, padding taps included)
# kind "dense": MACs = c_in * c_out
# The count is "dense" (as cuBLAS/cuDNN execute it): taps that land on padding are counted.


def model_layers(latent_dim=2):
    d = int(latent_dim)
    return [
        ("encoder.conv1", "conv", 1, 32, 28, 28, 14, 14, 3),
        ("encoder.conv2", "conv", 32, 64, 14, 14, 7, 7, 3),
        ("encoder.fc", "dense", 3136, 16, 1, 1, 1, 1, 1),
        ("encoder.mu", "dense", 16, d, 1, 1, 1, 1, 1),
        ("encoder.logvar", "dense", 16, d, 1, 1, 1, 1, 1),
        ("decoder.fc", "dense", d, 3136, 1, 1, 1, 1, 1),
        ("decoder.deconv1", "deconv", 64, 64, 7, 7, 14, 14, 3),
        ("decoder.deconv2", "deconv", 64, 32, 14, 14, 28, 28, 3),
        ("decoder.out", "deconv", 32, 1, 28, 28, 28, 28, 3),
    ]


def layer_macs(layer):
    _, kind, cin, cout, hin, win, hout, wout, k = layer
    if kind == "conv":
        return hout * wout * cout * cin * k * k
    if kind == "deconv":
        return hin * win * cin * cout * k * k
    if kind == "dense":
        return cin * cout
    raise ValueError("unknown layer kind %r" % kind)


def forward_flop_per_image(latent_dim=2):
    """2 FLOP per multiply-add over the layers' GEMM-shaped work (bias, ReLU, the
    reparameterization and the loss are elementwise, ~10^4 FLOP per image, not counted).

    At latent_dim 2 (MACs per image):
      conv1    14*14 * 32 * 1*9         =    56,448
      conv2     7*7  * 64 * 32*9        =   903,168
      enc.fc   3136 * 16                =    50,176
      mu, lv   2 * 16*2                 =        64
      dec.fc   2 * 3136                 =     6,272
      deconv1   7*7  * 64 * 64*9        = 1,806,336
      deconv2  14*14 * 64 * 32*9        = 3,612,672
      out      28*28 * 32 * 1*9         =   225,792
      total                             = 6,660,928 MACs = 13,321,856 FLOP forward
    """
    return 2 * sum(layer_macs(l) for l in model_layers(latent_dim))


def train_flop_per_image(latent_dim=2, exact=False):
    """FLOP of one training step per image: forward + backward.

    Backward of each layer = a data-gradient GEMM and a weight-gradient GEMM, each the size of
    the forward one, so the usual convention is step = 3 x forward:
      3 * 13,321,856 = 39,965,568 FLOP ~ 40.0 MFLOP per image per step.
    exact=True drops conv1's data gradient, which nobody needs (its input is the image):
      39,965,568 - 2 * 56,448 = 39,852,672 FLOP.
    The optimizer (~10 FLOP per parameter per step, i.e. per batch) is not counted.
    """
    fwd = forward_flop_per_image(latent_dim)
    total = 3 * fwd
    if exact:
        total -= 2 * layer_macs(model_layers(latent_dim)[0])
    return total


def schedule_times(images_per_s):
    """(ms for a 60,000-image epoch, s for the Keras schedule of 30 epochs x 70,000 images)
    at a training rate measured in images/s: the issue's time targets, 60 ms and 2 s."""
    return 60000 / images_per_s * 1e3, 30 * 70000 / images_per_s


def floor_fraction(images_per_s, gemm_flops_per_s, latent_dim=2):
    """Achieved model FLOP/s (train_flop_per_image * images/s) over a measured GEMM rate."""
    if not images_per_s or not gemm_flops_per_s:
        return None
    return train_flop_per_image(latent_dim) * images_per_s / gemm_flops_per_s


# ------------------------------------------------------------------------------------------
# Loss agreement
# ------------------------------------------------------------------------------------------
# The systems start from their own seeded Glorot initialisations and draw their own shuffles
# and noise, so their final epoch losses differ by seed-to-seed noise, not by rounding.
# Rule: after at least MIN_EPOCHS epochs in all (warm-up + timed), the final epoch losses
# agree when
#     |a - b| <= max(REL_TOL * max(|a|, |b|), ABS_TOL_NATS, SLOPE_TOL * last_drop)
# where last_drop is the larger of the two systems' loss change over their last epoch.
# The first two terms are the noise of a run that has flattened out (a latent-2 VAE's loss
# varies by a few nats from seed to seed). The third covers runs still on the steep part of
# the curve (few steps: small --limit, or batch 4096 over a few epochs), where the seed moves
# the whole curve: measured on the CPU, 2,048 images, batch 128, 3 epochs (48 steps), seeds
# 0-2, the final losses spread over 236-261 nats (PyTorch) and 236-263 (cuvae) while the
# last epoch took off 58-88 nats: the spread was about a third of one epoch's drop.
REL_TOL = 0.02
ABS_TOL_NATS = 3.0
SLOPE_TOL = 0.5
MIN_EPOCHS = 3


def last_drop(epochs):
    """|loss change| over the last epoch of a result's epochs list (None if < 2 epochs)."""
    losses = [ep["loss"] for ep in epochs if isinstance(ep, dict) and "loss" in ep]
    if len(losses) < 2 or not all(math.isfinite(x) for x in losses[-2:]):
        return None
    return abs(losses[-1] - losses[-2])


def loss_tolerance(a, b, drop=None):
    tol = max(REL_TOL * max(abs(a), abs(b)), ABS_TOL_NATS)
    if drop is not None:
        tol = max(tol, SLOPE_TOL * drop)
    return tol


def loss_check(a, b, total_epochs, drop=None):
    """-> (status, diff, tol): status "agree", "DISAGREE", "not judged (<3 epochs)",
    "non-finite" or "missing". drop: the larger last-epoch loss change of the two runs."""
    if a is None or b is None:
        return "missing", None, None
    if not (math.isfinite(a) and math.isfinite(b)):
        return "non-finite", None, None
    diff = abs(a - b)
    tol = loss_tolerance(a, b, drop)
    if total_epochs < MIN_EPOCHS:
        return "not judged (<%d epochs)" % MIN_EPOCHS, diff, tol
    return ("agree" if diff <= tol else "DISAGREE"), diff, tol


def loss_change(reference, other):
    """-> (other - reference in nats, that over |reference|), or None when either loss is
    missing or non-finite (the relative change None when the reference is 0). Used for the
    accuracy cost of mixed precision: one system's bf16 final loss against its own fp32 one
    from the same seed (same init, shuffles and noise), so the change comes from the precision
    (and any nondeterministic cuDNN algorithm), not from a different seed."""
    if reference is None or other is None:
        return None
    if not (math.isfinite(reference) and math.isfinite(other)):
        return None
    diff = other - reference
    return diff, (diff / abs(reference) if reference else None)


def rule_text():
    return ("each system trains from its own seeded Glorot init, shuffle and noise, so the "
            "final losses agree when |a - b| <= max(%g%% of the larger, %g nats, %g x the "
            "larger loss drop over the last epoch), judged after at least %d epochs in all "
            "(seeds 0-2 on the CPU, 2,048 images, 3 epochs: spread 236-261 nats for PyTorch "
            "and 236-263 for cuvae with a last-epoch drop of 58-88)"
            % (REL_TOL * 100, ABS_TOL_NATS, SLOPE_TOL, MIN_EPOCHS))


# ------------------------------------------------------------------------------------------
# Result JSON schema (cuvae bench and torch_vae.py write the same keys)
# ------------------------------------------------------------------------------------------
_NUM = (int, float)
# fp32: strict fp32; tf32: fp32 with TF32 tensor cores (cuvae --tf32); bf16: mixed precision
# (cuvae --bf16: bf16 activations and tensor-core GEMMs with fp32 accumulation, fp32 master
# weights, Adam and loss; PyTorch: torch.autocast to bfloat16 around forward + loss).
PRECISIONS = ("fp32", "tf32", "bf16")
# The memory layout of cuvae's convolution activations and filters (cuvae --layout, GPU only):
# nchw (the default) or nhwc (channels-last: cuDNN NHWC activations, KRSC filters). A GPU cuvae
# result must say which it ran ("layout"); any other result that states one is checked too.
LAYOUTS = ("nchw", "nhwc")
# What a result ran on ("device_kind"): gpu, or one of the CPU_KINDS: cpu (cuvae's fast CPU
# engine, or PyTorch on the CPU) and cpu-ref (cuvae's slow CPU reference model).
CPU_KINDS = ("cpu", "cpu-ref")
DEVICE_KINDS = ("gpu",) + CPU_KINDS
REQUIRED_KEYS = {
    "system": str,
    "device": str,
    "device_kind": str,
    "batch_size": int,
    "precision": str,
    "latent_dim": int,
    "images": int,
    "seed": int,
    "warmup_epochs": int,
    "epochs": list,
    "ms_per_epoch_median": _NUM,
    "images_per_s": _NUM,
    "peak_memory_bytes": int,
    "peak_memory_what": str,
    "final_loss": _NUM,
    "final_recon": _NUM,
    "final_kl": _NUM,
}
EPOCH_KEYS = {"epoch": int, "warmup": bool, "ms": _NUM, "loss": _NUM, "recon": _NUM,
              "kl": _NUM}


def _type_ok(value, want):
    if isinstance(value, bool) and want is not bool:
        return False  # bool is an int in Python; never accept it as a number
    if want is int and isinstance(value, float) and value.is_integer():
        return True  # JSON writers may print 60000 as 60000.0
    return isinstance(value, want)


def validate_result(obj):
    """-> list of problems (empty when obj follows the schema)."""
    if not isinstance(obj, dict):
        return ["result is JSON %s, expected an object" % type(obj).__name__]
    problems = []
    for key, want in REQUIRED_KEYS.items():
        if key not in obj:
            problems.append("missing key %r" % key)
        elif not _type_ok(obj[key], want):
            problems.append("key %r is %s, expected %s"
                            % (key, type(obj[key]).__name__,
                               want.__name__ if isinstance(want, type) else "number"))
    if problems:
        return problems
    if obj["device_kind"] not in DEVICE_KINDS:
        problems.append("device_kind %r is not one of %s"
                        % (obj["device_kind"], ", ".join(repr(k) for k in DEVICE_KINDS)))
    if obj["precision"] not in PRECISIONS:
        problems.append("precision %r is not one of %s"
                        % (obj["precision"], ", ".join(repr(p) for p in PRECISIONS)))
    if "layout" in obj:
        if obj["layout"] not in LAYOUTS:
            problems.append("layout %r is not one of %s"
                            % (obj["layout"], ", ".join(repr(x) for x in LAYOUTS)))
    elif obj["system"] == "cuvae" and obj["device_kind"] == "gpu":
        problems.append("missing key 'layout' (cuvae on the GPU states its convolution "
                        "layout)")
    if obj["system"] == "cuvae" and obj["device_kind"] in CPU_KINDS:
        problems += sgemm_problems(obj)
    for i, ep in enumerate(obj["epochs"]):
        if not isinstance(ep, dict):
            problems.append("epochs[%d] is not an object" % i)
            continue
        for key, want in EPOCH_KEYS.items():
            if key not in ep:
                problems.append("epochs[%d] lacks %r" % (i, key))
            elif not _type_ok(ep[key], want):
                problems.append("epochs[%d].%s has the wrong type" % (i, key))
    timed = [ep for ep in obj["epochs"] if isinstance(ep, dict) and ep.get("warmup") is False]
    if not timed:
        problems.append("no timed (warmup: false) epoch")
    n_warm = sum(1 for ep in obj["epochs"] if isinstance(ep, dict) and ep.get("warmup") is True)
    if not problems and n_warm != obj["warmup_epochs"]:
        problems.append("warmup_epochs is %d but %d epochs are marked warmup"
                        % (obj["warmup_epochs"], n_warm))
    for key in ("ms_per_epoch_median", "images_per_s"):
        if not problems and not obj[key] > 0:
            problems.append("%s must be > 0, got %r" % (key, obj[key]))
    return problems


def sgemm_problems(obj):
    """cuvae on the CPU states the single-precision GEMM rate it measured in the same process
    with the library its fast engine links ("sgemm_gflops", GFLOP/s) and how ("sgemm_what"):
    the FLOP-floor denominator of the CPU rows. -> list of problems."""
    problems = []
    why = "(cuvae on the CPU reports the SGEMM rate it measured: the FLOP-floor denominator)"
    v = obj.get("sgemm_gflops")
    if "sgemm_gflops" not in obj:
        problems.append("missing key 'sgemm_gflops' %s" % why)
    elif isinstance(v, bool) or not isinstance(v, _NUM) or not (math.isfinite(v) and v > 0):
        problems.append("sgemm_gflops must be a positive number, got %r" % (v,))
    what = obj.get("sgemm_what")
    if "sgemm_what" not in obj:
        problems.append("missing key 'sgemm_what' %s" % why)
    elif not isinstance(what, str) or not what.strip():
        problems.append("sgemm_what must be a non-empty string, got %r" % (what,))
    return problems


def median(values):
    v = sorted(values)
    n = len(v)
    if n == 0:
        raise ValueError("median of nothing")
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


# ------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------
def fmt_ms(ms):
    if ms is None:
        return "-"
    return "%.1f" % ms if ms >= 10 else "%.2f" % ms


def fmt_rate(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return "%.2fM" % (x / 1e6)
    if x >= 1e4:
        return "%.0fk" % (x / 1e3)
    return "%.0f" % x


def fmt_bytes(n):
    if n is None:
        return "-"
    if n >= 1 << 30:
        return "%.2f GiB" % (n / float(1 << 30))
    return "%.0f MiB" % (n / float(1 << 20)) if n >= 10 << 20 else "%.1f MiB" % (
        n / float(1 << 20))


def fmt_loss(x):
    return "-" if x is None else "%.2f" % x


def fmt_ratio(x):
    return "-" if x is None else "%.2fx" % x


def fmt_pct(x):
    return "-" if x is None else "%.1f%%" % (100.0 * x)


def markdown_table(header, rows):
    def cell(c):
        return str(c).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(cell(h) for h in header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
    for r in rows:
        out.append("| " + " | ".join(cell(c) for c in r) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# BENCHMARKS.md section replacement
# ------------------------------------------------------------------------------------------
def markers(section):
    return "<!-- bench:%s:start -->" % section, "<!-- bench:%s:end -->" % section


class SectionError(ValueError):
    pass


def replace_section(text, section, body):
    """Returns text with everything between the section's start and end markers replaced by
    body (the markers kept, on their own lines). A section that is absent is appended at the
    end; a start without an end, an end before its start, or a marker that appears twice is
    an error (nothing is guessed)."""
    start, end = markers(section)
    n_start, n_end = text.count(start), text.count(end)
    if n_start > 1 or n_end > 1:
        raise SectionError("marker %s or %s appears more than once" % (start, end))
    if n_start != n_end:
        raise SectionError("unbalanced markers %s / %s" % (start, end))
    block = "%s\n%s\n%s" % (start, body.strip("\n"), end)
    if n_start == 0:
        sep = "" if text.endswith("\n\n") or not text else ("\n" if text.endswith("\n")
                                                            else "\n\n")
        return text + sep + block + "\n"
    i, j = text.index(start), text.index(end)
    if j < i:
        raise SectionError("%s comes before %s" % (end, start))
    return text[:i] + block + text[j + len(end):]


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_result(path):
    """Reads and validates a result JSON file -> (obj, problems)."""
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    return obj, validate_result(obj)


# ---- the machine ----
def usable_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"
