#!/usr/bin/env python3
"""PyTorch training benchmark of cuvae's model: the same architecture (the module of
tools/parity/cuvae_torch.py), loss, optimizer, batch size and data, timed like `cuvae bench`,
writing a result JSON with the same keys.

Usage:
  torch_vae.py [--data DIR] [--device gpu|cpu] [--batch-size N] [--epochs N]
               [--warmup-epochs N] [--limit N] [--tf32 | --bf16]
               [--algo deterministic|fastest]
               [--seed N] [--latent-dim D] [--mode eager|default|reduce-overhead|max-autotune]
               [--adam auto|fused|foreach|for-loop] [--json FILE]

What runs:
  * weights Glorot-uniform (xavier_uniform_), biases zero, from torch.manual_seed(seed); the
    Glorot limit sqrt(6 / (fan_in + fan_out)) only needs the fan sum, (c_in + c_out) * 9 for
    a (transposed) convolution whichever way round, so it is cuvae's limit;
  * Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-7 (Keras's, as cuvae uses; cuvae's update is
    PyTorch's: eps added after the bias correction of sqrt(v));
  * loss = mean over the batch of (BCE-with-logits summed over 784 pixels + beta * KL)
    (cuvae_torch.vae_loss), eps ~ N(0, I) drawn on the device;
  * the training images (uint8) are uploaded once; each epoch draws a permutation on the
    device (torch.randperm with its own generator); each step gathers its batch and divides
    by 255 on the device; the last partial batch is kept (60000 % 128 = 96);
  * the step (zero_grad, gather, forward, loss, backward, Adam) is one Python function; the
    compile modes wrap all of it in torch.compile(mode=...). Dynamo breaks the graph at
    loss.backward(), so this compiles (gather + forward + loss, with AOTAutograd's backward)
    and (Adam step) as two graphs. dynamic=False: a partial last batch compiles a second
    static specialisation once, during the first warm-up epoch, and CUDA-graph modes record
    it in the second, so use >= 2 warm-up epochs for those. If tracing the whole step fails,
    the run restarts from a fresh init compiling only model + loss (compile_scope "model").
  * the epoch's loss sums stay on the device; the host syncs once per epoch.
  * precision: strict fp32 by default; --tf32 lets cuBLAS and cuDNN use TF32; --bf16 is mixed
    precision, PyTorch's usual way: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    around forward + loss (mixed_vae_loss), fp32 parameters, Adam and gradients, TF32 off
    for everything autocast leaves in fp32. The BCE-with-logits and the KL term are computed
    in fp32 (the logits, mu and logvar are cast to float first). Unlike cuvae --bf16, autocast
    also runs the small dense layers (latent heads, the decoder's first layer) in bf16.
    --tf32 and --bf16 exclude each other; both are GPU settings (the CPU skips them).

Timing: on the GPU each epoch is bracketed by CUDA events on the current stream and `ms` is
the device time between them; on the CPU it is wall clock. ms_per_epoch_median is the median
over the timed (non-warm-up) epochs.

Exit status: 0 done, 2 bad arguments or data (or no importable PyTorch), 77 the mode or the
precision cannot run here (the JSON, when asked for, then holds {"skipped": reason}).
"""

import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
sys.path.insert(0, HERE)

from benchlib import cpu_name, usable_cores  # noqa: E402
from benchlib import median  # noqa: E402

try:  # argument parsing (and its tests) works without PyTorch; main() reports its absence
    import numpy as np  # noqa: E402
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
    from torch import nn  # noqa: E402

    from cuvae_torch import CuvaeVAE, vae_loss  # noqa: E402
    IMPORT_ERROR = None
except ImportError as e:
    IMPORT_ERROR = e

MODES = ("eager", "default", "reduce-overhead", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
EXIT_OK, EXIT_USAGE, EXIT_SKIP = 0, 2, 77


class UsageError(Exception):
    pass


def torch_major_minor():
    parts = torch.__version__.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return 0, 0


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def data_dir_from(arg):
    return arg or os.environ.get("CUVAE_MNIST_DIR") or "data/mnist"


def load_train_images(folder):
    """The IDX training images as a (N, 1, 28, 28) uint8 array (.gz or plain file)."""
    name = "train-images-idx3-ubyte"
    for candidate in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(candidate):
            path = candidate
            break
    else:
        raise UsageError("no %s[.gz] in %s (use --data DIR or CUVAE_MNIST_DIR)" % (name, folder))
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UsageError("%s: cannot read (%s)" % (path, e)) from None
    if len(raw) < 16:
        raise UsageError("%s: too short for an IDX header" % path)
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 0x00000803 or rows != 28 or cols != 28:
        raise UsageError("%s: not an IDX file of 28x28 uint8 images (magic 0x%08x, %dx%d)"
                         % (path, magic, rows, cols))
    if len(raw) != 16 + n * 784:
        raise UsageError("%s: header says %d images but the file holds %d bytes of pixels"
                         % (path, n, len(raw) - 16))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, 28, 28)


# ------------------------------------------------------------------------------------------
# Set-up
# ------------------------------------------------------------------------------------------
def set_precision(tf32):
    """fp32 strict or TF32 for cuBLAS matmuls and cuDNN convolutions. torch >= 2.9 has the
    fp32_precision settings (the allow_tf32 flags are deprecated there and must not be mixed
    with them); older versions only have the flags."""
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv,
                                                                          "fp32_precision"):
        mode = "tf32" if tf32 else "ieee"
        matmul.fp32_precision = mode
        conv.fp32_precision = mode
        return "matmul.fp32_precision=%s, cudnn.conv.fp32_precision=%s" % (
            matmul.fp32_precision, conv.fp32_precision)
    matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    return "cuda.matmul.allow_tf32=%s, cudnn.allow_tf32=%s" % (
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def bf16_native():
    """Whether the current GPU runs bf16 natively (compute capability >= 8.0). Newer PyTorch
    also answers True for an emulated (slow) bf16 unless told not to count emulation."""
    supported = getattr(torch.cuda, "is_bf16_supported", None)
    if supported is None:
        return False
    try:
        return bool(supported(including_emulation=False))
    except TypeError:  # PyTorch before 2.3: no emulation counted
        return bool(supported())


def mixed_vae_loss(model, x, eps, beta=1.0):
    """cuvae_torch.vae_loss under bf16 autocast: the convolutions and dense layers run in
    bfloat16 (fp32 parameters cast on the fly, fp32 accumulation), the loss in fp32.
    Batch means (loss, recon, kl), all float32."""
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        logits, mu, logvar = model(x, eps)
        # autocast runs binary_cross_entropy_with_logits in fp32 on CUDA; the casts make the
        # whole loss fp32 explicitly, on any device
        logits, mu, logvar = logits.float(), mu.float(), logvar.float()
        recon = F.binary_cross_entropy_with_logits(logits, x.float(),
                                                   reduction="none").flatten(1).sum(1)
        kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        loss = (recon + float(beta) * kl).mean()
    return loss, recon.mean(), kl.mean()


def glorot_init(model, seed):
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            nn.init.zeros_(p)
        else:
            nn.init.xavier_uniform_(p)


def make_adam(params, impl, lr):
    kwargs = dict(lr=lr, betas=(0.9, 0.999), eps=1e-7)
    if impl == "fused":
        kwargs["fused"] = True
    elif impl == "foreach":
        kwargs["foreach"] = True
    elif impl == "for-loop":
        kwargs["foreach"] = False
    return torch.optim.Adam(params, **kwargs)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
class Run:
    """One training run: model, optimizer, data and the step function on one device."""

    def __init__(self, args, images, device, scope):
        self.args = args
        self.device = device
        self.scope = scope
        self.model = CuvaeVAE(args.latent_dim)
        glorot_init(self.model, args.seed)  # on the CPU: the same weights on every device
        self.model.to(device)
        eager_impl = args.adam
        if eager_impl == "auto":
            # eager GPU: the fused kernel (fastest eager option, torch >= 2.0); compiled modes:
            # the default (foreach) implementation, which inductor fuses itself.
            fused_ok = device.type == "cuda" and torch_major_minor() >= (2, 0)
            eager_impl = "fused" if (args.mode == "eager" and fused_ok) else "default"
        self.adam_impl = eager_impl
        self.opt = make_adam(self.model.parameters(), eager_impl, args.lr)
        self.data = torch.from_numpy(np.array(images, copy=True)).to(device)  # (N,1,28,28) u8
        self.n = self.data.shape[0]
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(args.seed + 1)  # the permutation stream; the noise uses the
        torch.manual_seed(args.seed + 2)     # global generator (works inside torch.compile)
        self.acc = torch.zeros(3, dtype=torch.float64, device=device)
        self.step_fn = self._build_step()

    def _loss(self, x, eps):
        if self.args.bf16:
            return mixed_vae_loss(self.model, x, eps, self.args.beta)
        return vae_loss(self.model, x, eps, self.args.beta)

    def _build_step(self):
        opt, data, args, dev = self.opt, self.data, self.args, self.device
        loss_fn = self._loss
        if args.mode != "eager" and self.scope == "model":
            loss_fn = torch.compile(loss_fn, mode=args.mode, dynamic=False)

        def step(idx):
            opt.zero_grad(set_to_none=True)
            x = data.index_select(0, idx).to(torch.float32).div(255.0)  # (b,1,28,28)
            eps = torch.randn(idx.shape[0], args.latent_dim, device=dev)
            loss, recon, kl = loss_fn(x, eps)
            loss.backward()
            opt.step()
            # sums over the batch's images, accumulated in float64 by the caller
            return torch.stack([loss.detach(), recon.detach(), kl.detach()]) * idx.shape[0]

        if args.mode == "eager" or self.scope == "model":
            return step
        mark_static = getattr(torch._dynamo, "mark_static_address", None)
        if mark_static is not None:
            # the dataset never moves: CUDA-graph modes must not copy it into the graph
            mark_static(data)
        return torch.compile(step, mode=args.mode, dynamic=False)

    def epoch(self):
        """Trains one epoch -> (ms, [loss, recon, kl] epoch means)."""
        cuda = self.device.type == "cuda"
        mark_step = None
        if self.args.mode in CUDA_GRAPH_MODES:
            mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin",
                                None)
        if cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        self.acc.zero_()
        perm = torch.randperm(self.n, device=self.device, generator=self.gen)
        bs = self.args.batch_size
        for s in range(0, self.n, bs):
            if mark_step is not None:
                mark_step()
            self.acc += self.step_fn(perm[s:s + bs])
        if cuda:
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
            sums = self.acc.tolist()
        else:
            sums = self.acc.tolist()
            ms = (time.perf_counter() - t0) * 1e3
        return ms, [v / self.n for v in sums]


def compiled_graph_count():
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return None


def train(args, images, device, scope):
    """Runs warm-up + timed epochs -> the result dict (without the device description)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        free0, total = torch.cuda.mem_get_info()  # after context creation, before any tensor
    run = Run(args, images, device, scope)
    epochs = []
    warm_wall = []
    for e in range(args.warmup_epochs):
        t0 = time.perf_counter()
        ms, means = run.epoch()
        warm_wall.append(time.perf_counter() - t0)
        epochs.append(dict(epoch=e + 1, warmup=True, ms=ms, loss=means[0], recon=means[1],
                           kl=means[2]))
        print("torch_vae: %s warm-up epoch %d: %.1f ms device, %.1f s wall, loss %.4f"
              % (args.mode, e + 1, ms, warm_wall[-1], means[0]), file=sys.stderr)
    graphs_before = compiled_graph_count()
    mem = {}
    if cuda:
        # Steady state: drop what warm-up left cached (autotuning buffers), then measure.
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        min_free = torch.cuda.mem_get_info()[0]
    for e in range(args.epochs):
        ms, means = run.epoch()
        if cuda:
            min_free = min(min_free, torch.cuda.mem_get_info()[0])
        epochs.append(dict(epoch=args.warmup_epochs + e + 1, warmup=False, ms=ms,
                           loss=means[0], recon=means[1], kl=means[2]))
        print("torch_vae: %s epoch %d: %.2f ms, loss %.4f"
              % (args.mode, args.warmup_epochs + e + 1, ms, means[0]), file=sys.stderr)
    graphs_after = compiled_graph_count()
    if cuda:
        mem = dict(
            peak_memory_bytes=max(0, int(free0 - min_free)),
            peak_memory_what=("device memory this process holds beyond its CUDA context "
                              "(cudaMemGetInfo free before the first tensor minus the lowest "
                              "free seen after each timed epoch; allocator cache emptied "
                              "after warm-up; includes cuBLAS/cuDNN workspaces, kernels, "
                              "CUDA graphs)"),
            device_in_use_peak_bytes=int(total - min_free),
            max_memory_allocated_bytes=int(torch.cuda.max_memory_allocated()),
            max_memory_reserved_bytes=int(torch.cuda.max_memory_reserved()),
        )
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        mem = dict(peak_memory_bytes=int(rss),
                   peak_memory_what=("peak resident set size of the process (getrusage "
                                     "ru_maxrss; includes the Python/torch runtime and the "
                                     "dataset)"))
    timed = [ep["ms"] for ep in epochs if not ep["warmup"]]
    med = median(timed)
    last = epochs[-1]
    out = dict(
        ms_per_epoch_median=med,
        images_per_s=run.n / (med / 1e3),
        final_loss=last["loss"], final_recon=last["recon"], final_kl=last["kl"],
        epochs=epochs, images=run.n, adam=run.adam_impl, compile_scope=(
            None if args.mode == "eager" else scope),
        warmup_wall_s=warm_wall,
    )
    if graphs_before is not None and graphs_after is not None and args.mode != "eager":
        out["graphs_compiled_during_timing"] = graphs_after - graphs_before
    out.update(mem)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="PyTorch training benchmark of cuvae's VAE (same JSON as `cuvae bench`).")
    p.add_argument("--data", help="MNIST folder (default $CUVAE_MNIST_DIR or data/mnist)")
    p.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs")
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="first N training images (0 = all)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--tf32", action="store_true", help="allow TF32 (default strict fp32)")
    prec.add_argument("--bf16", action="store_true",
                      help="mixed precision: bf16 autocast around forward + loss, fp32 "
                      "parameters and Adam, TF32 off (default strict fp32)")
    p.add_argument("--algo", default="deterministic", choices=("deterministic", "fastest"),
                   help="cuDNN: deterministic algorithms, or cudnn.benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mode", default="eager", choices=MODES)
    p.add_argument("--adam", default="auto", choices=("auto", "fused", "foreach", "for-loop",
                                                     "default"))
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0 = one per usable core)")
    p.add_argument("--json", help="write the result here (default: stdout)")
    args = p.parse_args(argv)
    for name in ("batch_size", "epochs", "latent_dim"):
        if getattr(args, name) < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    if args.warmup_epochs < 0 or args.limit < 0:
        p.error("--warmup-epochs and --limit must be >= 0")
    return args


def emit(obj, path):
    text = json.dumps(obj, indent=1) + "\n"
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def precision_of(args):
    return "bf16" if args.bf16 else "tf32" if args.tf32 else "fp32"


def main(argv=None):
    args = parse_args(argv)
    if IMPORT_ERROR is not None:
        print("torch_vae: error: cannot import PyTorch or numpy with %s (%s); pass bench.py "
              "--python an interpreter that has them" % (sys.executable, IMPORT_ERROR),
              file=sys.stderr)
        return EXIT_USAGE
    system = "pytorch-eager" if args.mode == "eager" else "pytorch-compile-" + args.mode
    base = dict(system=system, version=torch.__version__, torch_version=torch.__version__,
                mode=args.mode, batch_size=args.batch_size, precision=precision_of(args),
                algo=args.algo, latent_dim=args.latent_dim, seed=args.seed,
                warmup_epochs=args.warmup_epochs)

    def skip(reason):
        print("torch_vae: skipped: %s" % reason, file=sys.stderr)
        emit(dict(base, skipped=reason), args.json)
        return EXIT_SKIP

    if args.device == "gpu":
        if not torch.cuda.is_available():
            return skip("no usable CUDA device for PyTorch %s" % torch.__version__)
        device = torch.device("cuda")
        torch.cuda.init()
        props = torch.cuda.get_device_properties(device)
        base.update(device=props.name, device_kind="gpu", cuda_version=torch.version.cuda,
                    cudnn_version=torch.backends.cudnn.version())
        base["precision_settings"] = set_precision(args.tf32)
        if args.bf16:
            if not bf16_native():
                return skip("%s has no native bf16 support in PyTorch %s"
                            % (props.name, torch.__version__))
            base["precision_settings"] += ("; torch.autocast(cuda, bfloat16) around forward "
                                           "+ loss, loss terms in fp32")
    else:
        device = torch.device("cpu")
        # like cuvae's CPU path: one thread per usable core unless told otherwise
        torch.set_num_threads(args.threads or usable_cores())
        if args.tf32:
            return skip("TF32 is a GPU setting")
        if args.bf16:
            return skip("bf16 mixed precision is GPU-only (as cuvae --bf16)")
        base.update(device="cpu (%s, %d threads)" % (cpu_name(), torch.get_num_threads()),
                    device_kind="cpu")
    if args.mode != "eager":
        if torch_major_minor() < (2, 0) or not hasattr(torch, "compile"):
            return skip("torch.compile needs PyTorch >= 2.0 (found %s)" % torch.__version__)
    if args.algo == "fastest":
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    else:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True

    try:
        images = load_train_images(data_dir_from(args.data))
    except UsageError as e:
        print("torch_vae: error: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    if args.limit:
        images = images[:args.limit]

    scope = "step"
    try:
        result = train(args, images, device, scope)
    except Exception as e:  # tracing the whole step failed: compile model + loss only
        if args.mode == "eager":
            raise
        print("torch_vae: compiling the whole step failed (%s: %s); retrying with model + "
              "loss compiled" % (type(e).__name__, " ".join(str(e).split())[:300]),
              file=sys.stderr)
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        scope = "model"
        result = train(args, images, device, scope)
        result["compile_step_error"] = "%s: %s" % (type(e).__name__,
                                                   " ".join(str(e).split())[:300])
    base.update(result)
    emit(base, args.json)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
