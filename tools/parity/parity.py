#!/usr/bin/env python3
"""Gradient/loss parity check of a cuvae CPU engine against PyTorch (float64).

Usage:
  parity.py DUMP.safetensors [--grad-rtol 1e-5] [--loss-rtol 1e-6] [--relu-rtol 1e-5]
  parity.py --self-test

DUMP is written by `cuvae parity-dump [--device cpu-ref|cpu]` (format "cuvae-parity-2"): the
model parameters under their PyTorch names (F32), batch.x F32 [B,1,28,28], batch.eps F32 [B,D],
and what the engine under test computed, named ref.* whichever engine it was: ref.loss/
ref.recon/ref.kl F64 [1], ref.grad.<param> F32 and ref.act.<layer> F32, the output after the
ReLU of each layer that has one (RELU_LAYERS, in the layer's output shape); metadata format,
device ("cpu-ref" or "cpu"), latent_dim, beta, batch_size. The older format "cuvae-parity-1"
(no ref.act.*, no device: always the CPU reference) is still read, and checked without the
ReLU alignment below.

ReLU alignment: a unit whose pre-activation is within rounding of 0 may fall on one side of 0 in
the fp32 engine and on the other in float64; its whole gradient then flows on one side only,
and a gradient tensor can differ by 1e-2 relative although both are right. So the float64 model
takes the engine's side at such units: where the engine's ReLU output and the float64
pre-activation disagree on the side of 0 and both are within relu_rtol x the RMS of the layer's
float64 output (after its ReLU) from 0, the float64 ReLU passes or cuts the unit as the engine
did, its value becoming the engine's (the loss is continuous, so it moves by rounding only).
A disagreement farther from 0 is a real error: the layer's "relu" row fails and lists the
units. tests/test_cpu_fast.cpp (align_relu_masks) aligns its double reference the same way.

Exit status: 0 all checks pass, 1 some check fails, 2 bad/unsupported dump or usage,
77 PyTorch is not available.
"""

import argparse
import copy
import io
import math
import os
import sys
import tempfile

try:
    import torch
except Exception:  # ImportError, or a broken installation
    print("skipped: PyTorch not available")
    sys.exit(77)
try:
    import numpy as np  # noqa: F401  (needed by cuvae_torch)
except Exception:
    print("skipped: numpy not available (needed next to PyTorch)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cuvae_torch  # noqa: E402
from cuvae_torch import (CuvaeVAE, load_safetensors, save_safetensors,  # noqa: E402
                         vae_loss)

FORMAT = "cuvae-parity-2"
FORMAT_V1 = "cuvae-parity-1"  # no ref.act.*, no device metadata; still read
DEVICES = ("cpu-ref", "cpu")
LOSS_TERMS = ("loss", "recon", "kl")
# The CuvaeVAE modules whose output goes through a ReLU (F.relu in cuvae_torch.py), in forward
# order: the layers the model description marks relu, whose outputs the dump holds.
RELU_LAYERS = ("encoder.conv1", "encoder.conv2", "encoder.fc",
               "decoder.fc", "decoder.deconv1", "decoder.deconv2")
ZERO_NORM_ATOL = 1e-12
MAX_LISTED_UNITS = 5  # far ReLU disagreements listed per layer

EXIT_PASS, EXIT_FAIL, EXIT_BAD_DUMP, EXIT_SKIP = 0, 1, 2, 77


class BadDump(Exception):
    """The dump is malformed or does not follow the cuvae-parity-2 (or -1) contract."""


def _one_line(msg):
    return " ".join(str(msg).split())


# ------------------------------------------------------------------------------------------
# Dump loading / validation
# ------------------------------------------------------------------------------------------
def _meta_int(meta, key):
    if key not in meta:
        raise BadDump("metadata %r is missing" % key)
    try:
        v = int(meta[key].strip())
    except ValueError:
        raise BadDump("metadata %r=%r is not an integer" % (key, meta[key])) from None
    if v < 1:
        raise BadDump("metadata %r=%d must be >= 1" % (key, v))
    return v


def _meta_float(meta, key):
    if key not in meta:
        raise BadDump("metadata %r is missing" % key)
    try:
        v = float(meta[key].strip())
    except ValueError:
        raise BadDump("metadata %r=%r is not a number" % (key, meta[key])) from None
    if not math.isfinite(v) or v < 0:
        raise BadDump("metadata %r=%r must be finite and >= 0" % (key, meta[key]))
    return v


def _expect(tensors, name, dtype, shape):
    if name not in tensors:
        raise BadDump("tensor %r is missing" % name)
    t = tensors[name]
    if t.dtype != dtype:
        raise BadDump("tensor %r has dtype %s, expected %s" % (name, t.dtype, dtype))
    if tuple(t.shape) != tuple(shape):
        raise BadDump("tensor %r has shape %s, expected %s"
                      % (name, list(t.shape), list(shape)))
    return t


def relu_output_shapes(model, batch):
    """{layer: shape of its output for `batch` images} for every layer in RELU_LAYERS."""
    shapes = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, y, name=name: shapes.__setitem__(name, (batch,) + tuple(y.shape[1:])))
        for name in RELU_LAYERS]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28), torch.zeros(1, model.latent_dim))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def load_dump(path):
    """Returns a dict with model (float32, loaded strictly), x, eps, beta, ref scalars, ref grads,
    acts (the engine's ReLU outputs by layer; None for a cuvae-parity-1 dump) and device."""
    try:
        tensors, meta = load_safetensors(path)
    except (OSError, ValueError) as e:
        raise BadDump(e) from None

    fmt = meta.get("format")
    if fmt not in (FORMAT, FORMAT_V1):
        raise BadDump("metadata format=%r, expected %r (or the older %r)"
                      % (fmt, FORMAT, FORMAT_V1))
    d = _meta_int(meta, "latent_dim")
    b = _meta_int(meta, "batch_size")
    beta = _meta_float(meta, "beta")
    if fmt == FORMAT_V1:
        device = "cpu-ref"
    else:
        device = meta.get("device")
        if device not in DEVICES:
            raise BadDump("metadata device=%r, expected one of %s" % (device, ", ".join(DEVICES)))

    params = {k: v for k, v in tensors.items() if not k.startswith(("batch.", "ref."))}
    for k, v in params.items():
        if v.dtype != torch.float32:
            raise BadDump("parameter %r has dtype %s, expected float32 (F32)" % (k, v.dtype))
    model = CuvaeVAE(d)
    try:
        model.load_state_dict(params, strict=True)
    except RuntimeError as e:
        raise BadDump("parameters do not match CuvaeVAE(latent_dim=%d): %s"
                      % (d, _one_line(e))) from None

    x = _expect(tensors, "batch.x", torch.float32, (b, 1, 28, 28))
    eps = _expect(tensors, "batch.eps", torch.float32, (b, d))
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise BadDump("batch.x must hold finite values in [0, 1]")
    if not bool(torch.isfinite(eps).all()):
        raise BadDump("batch.eps holds non-finite values")

    ref = {}
    for term in LOSS_TERMS:
        ref[term] = float(_expect(tensors, "ref." + term, torch.float64, (1,))[0])
    ref_grads = {}
    for name, p in model.named_parameters():
        ref_grads[name] = _expect(tensors, "ref.grad." + name, torch.float32, p.shape)
    acts = None
    if fmt == FORMAT:
        acts = {}
        for name, shape in relu_output_shapes(model, b).items():
            a = _expect(tensors, "ref.act." + name, torch.float32, shape)
            # A NaN is the engine's error, for the checks to report; a negative value cannot
            # come out of a ReLU (-0 can).
            if bool((a < 0).any()):
                raise BadDump("tensor %r holds negative values: not a ReLU output"
                              % ("ref.act." + name))
            acts[name] = a

    known = set(params) | {"batch.x", "batch.eps"} | {"ref." + t for t in LOSS_TERMS} \
        | {"ref.grad." + n for n in ref_grads} | {"ref.act." + n for n in (acts or {})}
    unknown = sorted(set(tensors) - known)
    if unknown:
        raise BadDump("unexpected tensor(s) in dump: %s" % ", ".join(unknown))

    return {"model": model, "x": x, "eps": eps, "beta": beta, "latent_dim": d,
            "batch_size": b, "ref": ref, "ref_grads": ref_grads, "acts": acts,
            "device": device, "format": fmt}


# ------------------------------------------------------------------------------------------
# ReLU alignment
# ------------------------------------------------------------------------------------------
class _TakeEngineSide(torch.autograd.Function):
    """The pre-activation y with the units in `where` replaced by `value`; the gradient flows
    to y unchanged. Between a layer and its ReLU, value = the engine's ReLU output (> 0 where
    the engine passed the unit, 0 where it cut it) makes the ReLU pass or cut the unit as the
    engine did, with the engine's value, and autograd follows: d relu / dy is 1 or 0 there."""

    @staticmethod
    def forward(ctx, y, where, value):
        return torch.where(where, value, y)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class ReluAlignment:
    """Forward hooks on the RELU_LAYERS of a model that put its ReLUs on the engine's side of 0
    where the two disagree within rel_tol x the RMS of the layer's output (after its ReLU).
    After a forward pass, stats[layer] says what was seen there."""

    def __init__(self, acts, rel_tol):
        self.acts = acts
        self.rel_tol = rel_tol
        self.stats = {}

    def attach(self, model):
        return [model.get_submodule(name).register_forward_hook(self._hook(name))
                for name in RELU_LAYERS]

    def _hook(self, name):
        def hook(module, inputs, y):
            engine = self.acts[name].to(y.dtype)
            pre = y.detach()
            out = torch.relu(pre)
            rms = float(out.pow(2).mean().sqrt())
            tol = self.rel_tol * rms
            # NaN > 0 is False: an engine NaN where float64 passes counts as a far disagreement.
            differ = (pre > 0) != (engine > 0)
            size = torch.maximum(pre.abs(), engine.abs())
            near = differ & (size <= tol)
            far = differ & ~(size <= tol)
            aligned = torch.where(near, engine, out)
            self.stats[name] = {
                "shape": list(y.shape), "rms": rms, "tol": tol,
                "aligned": int(near.sum()), "far": int(far.sum()),
                "worst": float(size[differ].max()) if bool(differ.any()) else 0.0,
                "far_units": [(i, float(pre[i]), float(engine[i]))
                              for i in map(tuple, far.nonzero()[:MAX_LISTED_UNITS].tolist())],
                "act_err": rel_error(self.acts[name], aligned)[0],
            }
            return _TakeEngineSide.apply(y, near, engine)
        return hook


# ------------------------------------------------------------------------------------------
# Torch computation and comparison
# ------------------------------------------------------------------------------------------
def torch_loss_and_grads(model, x, eps, beta, dtype, hooks=()):
    """Loss terms (python floats) and parameter gradients (dtype tensors) of the batch loss.
    hooks: objects whose attach(m) registers forward hooks on the dtype copy m of the model
    (a ReluAlignment: the loss of the model that takes the engine's side at its ReLUs)."""
    m = copy.deepcopy(model).to(dtype)
    for h in hooks:
        h.attach(m)  # m is a copy: the hooks go with it
    params = list(m.named_parameters())
    loss, recon, kl = vae_loss(m, x.to(dtype), eps.to(dtype), beta)
    grads = torch.autograd.grad(loss, [p for _, p in params])
    terms = {"loss": float(loss), "recon": float(recon), "kl": float(kl)}
    with torch.no_grad():  # the KL's terms in magnitude (kl_tolerance)
        mu, logvar = m.encode(x.to(dtype))
        kl_terms = 0.5 * (mu * mu + torch.exp(logvar) + 1 + logvar.abs()).sum(1).mean()
    terms["kl_terms"] = float(kl_terms)
    return terms, {n: g.detach() for (n, _), g in zip(params, grads)}


def kl_tolerance(loss_rtol, kl, kl_terms):
    """The KL's relative tolerance: loss_rtol of the sum of its terms in magnitude, at least
    loss_rtol of itself. The KL, 0.5 sum(mu^2 + exp(logvar) - 1 - logvar), nearly cancels when
    q is close to the prior (a fresh model: KL ~ 1e-3 from terms of order 1), and its rounding
    error scales with the terms: fp32 mu and logvar, exact to ~1e-7 of themselves, put it
    ~1e-9 off, which is 1e-6 of a KL of 1e-3."""
    return loss_rtol * max(1.0, kl_terms / abs(kl)) if kl != 0 else loss_rtol


def scalar64(v):
    """A one-element float64 tensor (torch.tensor([v]) alone would round v to float32)."""
    return torch.tensor([v], dtype=torch.float64)


def rel_error(tested, reference):
    """(relative L2 error, max abs error, ||reference||, zero_guarded) in float64."""
    a = tested.detach().to(torch.float64).reshape(-1)
    b = reference.detach().to(torch.float64).reshape(-1)
    diff = a - b
    ref_norm = float(torch.linalg.norm(b))
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    if ref_norm == 0.0:
        return float(torch.linalg.norm(a)), max_abs, ref_norm, True
    return float(torch.linalg.norm(diff)) / ref_norm, max_abs, ref_norm, False


def compare(dump, loss_rtol, grad_rtol, relu_rtol):
    """Returns (rows, info). Each row: (label, shape, ref_norm, err, max_abs, tol, ok).

    A "relu <layer>" row (dumps with ReLU outputs only): norm is the RMS of the layer's float64
    output, err the largest |value| of a unit whose side of 0 differs over that RMS, max abs
    that value; it fails when err > relu_rtol (units within it are aligned, see the top)."""
    model, x, eps, beta = dump["model"], dump["x"], dump["eps"], dump["beta"]
    align = ReluAlignment(dump["acts"], relu_rtol) if dump["acts"] is not None else None
    t64, g64 = torch_loss_and_grads(model, x, eps, beta, torch.float64,
                                    [align] if align is not None else [])
    t32, g32 = torch_loss_and_grads(model, x, eps, beta, torch.float32)

    rows = []
    for term in LOSS_TERMS:
        err, max_abs, norm, guarded = rel_error(scalar64(dump["ref"][term]), scalar64(t64[term]))
        tol = ZERO_NORM_ATOL if guarded else (
            kl_tolerance(loss_rtol, t64["kl"], t64["kl_terms"]) if term == "kl" else loss_rtol)
        rows.append((term, "[1]", norm, err, max_abs, tol, err <= tol))  # NaN -> False
    relu = align.stats if align is not None else {}
    for name, s in relu.items():
        err = s["worst"] / s["rms"] if s["rms"] > 0 else (0.0 if s["worst"] == 0 else math.inf)
        rows.append(("relu " + name, str(s["shape"]), s["rms"], err, s["worst"], relu_rtol,
                     s["far"] == 0))
    for name, g in g64.items():
        err, max_abs, norm, guarded = rel_error(dump["ref_grads"][name], g)
        tol = ZERO_NORM_ATOL if guarded else grad_rtol
        rows.append(("grad " + name, str(list(g.shape)), norm, err, max_abs, tol, err <= tol))

    f32_terms = max(rel_error(scalar64(t32[t]), scalar64(t64[t]))[0]
                    for t in LOSS_TERMS)
    f32_grads = max(rel_error(g32[n], g64[n])[0] for n in g64)
    return rows, {"f32_terms": f32_terms, "f32_grads": f32_grads, "torch64": t64, "relu": relu}


def print_table(rows, info, out=sys.stdout):
    hdr = "%-32s %-16s %12s %11s %11s %9s  %s" % (
        "tensor", "shape", "norm(torch)", "rel err", "max abs", "tol", "result")
    print("reference: PyTorch float64 on the dump's parameters/batch/eps; tested: cuvae ref.*",
          file=out)
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for label, shape, norm, err, max_abs, tol, ok in rows:
        print("%-32s %-16s %12.5e %11.3e %11.3e %9.1e  %s"
              % (label, shape, norm, err, max_abs, tol, "PASS" if ok else "FAIL"), file=out)
    relu = info["relu"]
    for name, s in relu.items():
        for index, pre, engine in s["far_units"]:
            print("FAIL relu %s%s: float64 pre-activation %.6e (%s), engine output %.6e (%s): "
                  "farther from 0 than rounding explains (%.3e), a real mismatch"
                  % (name, list(index), pre, "passed" if pre > 0 else "cut", engine,
                     "passed" if engine > 0 else "cut", s["tol"]), file=out)
        if s["far"] > len(s["far_units"]):
            print("FAIL relu %s: %d more unit(s) like these"
                  % (name, s["far"] - len(s["far_units"])), file=out)
    if relu:
        print("info: ReLU units aligned to the engine's side of 0: %s (%d in all)"
              % (", ".join("%s %d" % (n, s["aligned"]) for n, s in relu.items()),
                 sum(s["aligned"] for s in relu.values())), file=out)
        print("info (not gating): engine's ReLU outputs vs float64 torch, rel L2: %s"
              % ", ".join("%s %.2e" % (n, s["act_err"]) for n, s in relu.items()), file=out)
    else:
        print("info: %s dump without ReLU outputs: no ReLU alignment" % FORMAT_V1, file=out)
    print("info (not gating): float32 torch vs float64 torch max rel error: "
          "loss terms %.3e, gradients %.3e" % (info["f32_terms"], info["f32_grads"]), file=out)
    n_pass = sum(1 for r in rows if r[6])
    print("parity: %d passed, %d failed" % (n_pass, len(rows) - n_pass), file=out)


def run_parity(path, loss_rtol, grad_rtol, relu_rtol=1e-5, out=sys.stdout):
    """Loads and checks one dump; returns (the number of failed rows, rows, info).
    Raises BadDump."""
    dump = load_dump(path)
    print("dump: %s (device %s, batch %d, latent_dim %d, beta %g)"
          % (path, dump["device"], dump["batch_size"], dump["latent_dim"], dump["beta"]),
          file=out)
    rows, info = compare(dump, loss_rtol, grad_rtol, relu_rtol)
    print_table(rows, info, out)
    return sum(1 for r in rows if not r[6]), rows, info


# ------------------------------------------------------------------------------------------
# Self-test
# ------------------------------------------------------------------------------------------
class _TorchEngine:
    """A stand-in for a cuvae engine in the self-test: hooks that record each ReLU's output as
    the engine writes it (float32). flip = (layer, index): that unit's pre-activation y becomes
    -y, a constant shift that puts it on the other side of 0 with the gradient flowing as before
    (d/dy 1), i.e. the model that takes the other side there, made without ReluAlignment."""

    def __init__(self, flip=None):
        self.flip = flip
        self.acts = {}

    def attach(self, model):
        for name in RELU_LAYERS:
            model.get_submodule(name).register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, inputs, y):
            if self.flip is not None and self.flip[0] == name:
                shift = torch.zeros_like(y)
                shift[self.flip[1]] = -2.0 * float(y[self.flip[1]])
                y = y + shift
            self.acts[name] = torch.relu(y.detach()).to(torch.float32)
            return y
        return hook


def make_batch(batch, latent_dim, seed):
    """(model, x, eps): a fresh CuvaeVAE with nonzero biases, images in [0, 1], noise."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = CuvaeVAE(latent_dim)
    x = torch.rand(batch, 1, 28, 28, generator=gen)
    x[0].bernoulli_(0.3, generator=gen)  # exact 0/1 pixels too, as in binarised MNIST
    eps = torch.randn(batch, latent_dim, generator=gen)
    return model, x, eps


def write_torch_dump(path, model, x, eps, beta, flip=None, fmt=FORMAT):
    """Writes a dump whose ref.* come from torch itself in float64: from `model`, or with flip,
    from the model that puts that ReLU unit on the other side of 0 (see _TorchEngine). fmt
    FORMAT_V1 leaves out the ReLU outputs and the device."""
    engine = _TorchEngine(flip)
    terms, grads = torch_loss_and_grads(model, x, eps, beta, torch.float64, [engine])
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors["batch.x"] = x
    tensors["batch.eps"] = eps
    for t in LOSS_TERMS:
        tensors["ref." + t] = torch.tensor([terms[t]], dtype=torch.float64)
    for n, g in grads.items():
        tensors["ref.grad." + n] = g.to(torch.float32)
    meta = {"format": fmt, "latent_dim": str(model.latent_dim), "beta": repr(float(beta)),
            "batch_size": str(x.shape[0])}
    if fmt == FORMAT:
        for n, a in engine.acts.items():
            tensors["ref.act." + n] = a
        meta["device"] = "cpu"
    save_safetensors(path, tensors, meta)
    return tensors, meta


def make_dump(path, batch, latent_dim, beta, seed, fmt=FORMAT):
    """Writes a dump whose ref.* come from torch itself in float64 (so it must pass)."""
    model, x, eps = make_batch(batch, latent_dim, seed)
    return write_torch_dump(path, model, x, eps, beta, fmt=fmt)


def unit_near_zero(model, x, eps, beta, layer, side, rel):
    """A copy of model in which the unit of `layer` that matters most to the loss (the largest
    |d loss / d pre-activation| among those passed) sits at side x rel x the RMS of the layer's
    output (after its ReLU), moved there with its channel's (or feature's) bias. Returns
    (model, index, pre-activation there, RMS)."""
    m = copy.deepcopy(model).double()
    seen = {}

    def keep(module, inputs, y):
        y.retain_grad()
        seen["y"] = y
    handle = m.get_submodule(layer).register_forward_hook(keep)
    vae_loss(m, x.double(), eps.double(), beta)[0].backward()
    handle.remove()
    y = seen["y"]
    index = _unravel(int(y.grad.abs().argmax()), tuple(y.shape))  # 0 where the ReLU cuts
    rms = float(torch.relu(y.detach()).pow(2).mean().sqrt())
    out = copy.deepcopy(model)
    bias = out.get_submodule(layer).bias
    with torch.no_grad():
        # The convolution or product part of y does not depend on the bias: y - bias + new bias.
        part = float(y[index]) - float(bias[index[1]])
        bias[index[1]] = -part + side * rel * rms  # rounded to float32 here
    pre = part + float(bias[index[1]])
    return out, index, pre, rms


def _unravel(flat, shape):
    """The index of element `flat` of a contiguous tensor of `shape` (torch 1.13 has no
    unravel_index)."""
    index = []
    for n in reversed(shape):
        index.append(flat % n)
        flat //= n
    return tuple(reversed(index))


class _Checker:
    def __init__(self):
        self.failures = []

    def check(self, cond, what):
        print("  [%s] %s" % ("ok" if cond else "FAILED", what))
        if not cond:
            self.failures.append(what)

    def raises_value_error(self, fn, what):
        try:
            fn()
        except ValueError as e:
            self.check(True, "%s -> ValueError: %s" % (what, _one_line(e)))
            return
        except Exception as e:  # wrong exception type
            self.check(False, "%s raised %s instead of ValueError" % (what, type(e).__name__))
            return
        self.check(False, "%s was accepted" % what)

    def raises_bad_dump(self, path, what):
        try:
            load_dump(path)
        except BadDump as e:
            self.check(True, "%s -> bad dump: %s" % (what, _one_line(e)))
            return
        except Exception as e:
            self.check(False, "%s raised %s instead of BadDump" % (what, type(e).__name__))
            return
        self.check(False, "%s was accepted" % what)


def _bits_equal(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.bool:
        return bool(torch.equal(a, b))
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    it = ints[a.element_size()]
    return bool(torch.equal(a.contiguous().view(it), b.contiguous().view(it)))


def _self_test_model(c):
    print("model:")
    m = CuvaeVAE(2)
    shapes = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    c.check(shapes == cuvae_torch.expected_parameter_shapes(2),
            "state_dict names/shapes match the contract")
    c.check(sum(p.numel() for p in m.parameters()) == 134165, "134,165 parameters at D=2")
    m5 = CuvaeVAE(5)
    c.check([(k, tuple(v.shape)) for k, v in m5.state_dict().items()]
            == cuvae_torch.expected_parameter_shapes(5), "state_dict names/shapes at D=5")
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = m5.encode(x)
    logits = m5.decode(mu)
    c.check(tuple(mu.shape) == (3, 5) and tuple(logvar.shape) == (3, 5)
            and tuple(logits.shape) == (3, 1, 28, 28), "encode/decode shapes")

    # vae_loss against an independent spelling of the objective (float64).
    md = copy.deepcopy(m5).double()
    xd = x.double()
    eps = torch.randn(3, 5, dtype=torch.float64)
    beta = 0.7
    loss, recon, kl = vae_loss(md, xd, eps, beta)
    with torch.no_grad():
        mu, logvar = md.encode(xd)
        z = mu + torch.sqrt(torch.exp(logvar)) * eps
        p = torch.sigmoid(md.decode(z))
        r = -(xd * torch.log(p) + (1 - xd) * torch.log1p(-p)).sum(dim=(1, 2, 3))
        k = 0.5 * (torch.exp(logvar) + mu * mu - 1 - logvar).sum(1)
        exp_loss = float((r + beta * k).mean())
    c.check(abs(float(loss) - exp_loss) <= 1e-10 * abs(exp_loss)
            and abs(float(recon) - float(r.mean())) <= 1e-10 * abs(float(r.mean()))
            and abs(float(kl) - float(k.mean())) <= 1e-10 * max(abs(float(k.mean())), 1e-300),
            "vae_loss matches an independent formula (loss %.10g)" % float(loss))


def _self_test_safetensors(c, tmp):
    print("safetensors:")
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-45, -1.17e-38,
                            3.4028235e38, 1.0 / 3.0], dtype=torch.float32)
    bits = torch.randint(-2 ** 31, 2 ** 31 - 1, (257,), dtype=torch.int64,
                         generator=torch.Generator().manual_seed(7))
    nan_payloads = torch.tensor([0x7FC00001, 0x7F800123, -0x00400001], dtype=torch.int32)
    tensors = {
        "f32.special": special,
        "f32.randbits": bits.to(torch.int32).view(torch.float32).reshape(1, 257),
        "f32.nan_payloads": nan_payloads.view(torch.float32),
        "f32.empty": torch.zeros(0, 3, dtype=torch.float32),
        "f32.scalar": torch.tensor(2.5, dtype=torch.float32),
        "f64.rand": torch.randn(2, 3, 4, dtype=torch.float64),
        "f16": torch.randn(5).to(torch.float16),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "i64": torch.tensor([-2 ** 63, 2 ** 63 - 1, 0, -1], dtype=torch.int64),
        "i32": torch.tensor([-2 ** 31, 2 ** 31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-7, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.arange(256, dtype=torch.uint8).reshape(16, 16),
        "bool": torch.tensor([True, False, True]),
        "noncontig": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
    }
    meta = {"format": "test", "note": "unicode \u00e9\u4e2d"}
    path = os.path.join(tmp, "rt.safetensors")
    save_safetensors(path, tensors, meta)
    loaded, lmeta = load_safetensors(path)
    c.check(set(loaded) == set(tensors), "round trip keeps every name")
    c.check(all(_bits_equal(loaded[k], tensors[k].contiguous()) for k in tensors),
            "round trip is bit-exact for every dtype (incl. NaN payloads, -0, denormals)")
    c.check(lmeta == meta, "round trip keeps metadata")
    with open(path, "rb") as f:
        good = f.read()
    c.check(cuvae_torch.dumps_safetensors(loaded, lmeta) == good, "re-serialisation is identical")

    # Hand-built file, to check the reader against the format rather than against our writer.
    hand = (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"b":{"dtype":"U8","shape":[],"data_offsets":[8,9]},"__metadata__":{"k":"v"}}')
    raw = len(hand).to_bytes(8, "little") + hand + bytes.fromhex("0000803f000000c0") + b"\x05"
    t, m = cuvae_torch.loads_safetensors(raw)
    c.check(t["a"].tolist() == [1.0, -2.0] and t["b"].item() == 5 and tuple(t["b"].shape) == ()
            and m == {"k": "v"}, "hand-built little-endian file decodes correctly")

    def bad(header_bytes, data, n=None):
        n = len(header_bytes) if n is None else n
        return lambda: cuvae_torch.loads_safetensors(n.to_bytes(8, "little") + header_bytes
                                                     + data)

    def hdr(s):
        return s.encode("utf-8")

    tr_path = os.path.join(tmp, "truncated.safetensors")
    with open(tr_path, "wb") as f:
        f.write(good[:-5])
    c.raises_value_error(lambda: load_safetensors(tr_path), "truncated file")
    hl_path = os.path.join(tmp, "hlen.safetensors")
    with open(hl_path, "wb") as f:
        f.write((len(good) + 1).to_bytes(8, "little") + good[8:])
    c.raises_value_error(lambda: load_safetensors(hl_path), "header length beyond the file")
    c.raises_value_error(lambda: cuvae_torch.loads_safetensors(good[:20]),
                         "file cut inside the header")
    c.raises_value_error(lambda: cuvae_torch.loads_safetensors(b"\x01\x02"),
                         "file shorter than 8 bytes")
    c.raises_value_error(lambda: cuvae_torch.loads_safetensors((2 ** 64 - 1).to_bytes(8, "little")
                                                               + b"{}"), "header length 2^64-1")
    c.raises_value_error(bad(b"{not json", b""), "header that is not JSON")
    c.raises_value_error(bad(b"\xff\xfe{}", b""), "header that is not UTF-8")
    c.raises_value_error(bad(b"[1,2]", b""), "header that is a JSON array")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}'),
                             b"\0" * 4), "unknown dtype")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'),
                             b"\0" * 4), "data_offsets beyond the data area")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'),
                             b"\0" * 8), "data_offsets inconsistent with shape")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}'),
                             b"\0" * 4), "reversed data_offsets")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                 '"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'),
                             b"\0" * 4), "overlapping tensors")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'),
                             b"\0" * 8), "hole in the data area")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'),
                             b"\0" * 6), "trailing bytes after the last tensor")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}'),
                             b""), "negative dimension")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}'),
                             b"\0" * 4), "non-integer dimension")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[1]}}'), b"\0" * 4),
                         "missing data_offsets")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                 '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'),
                             b"\0" * 4), "duplicate tensor name")
    c.raises_value_error(bad(hdr('{"__metadata__":{"k":1}}'), b""), "non-string metadata value")
    c.raises_value_error(bad(hdr('{"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}'),
                             b"\x02"), "BOOL byte other than 0/1")


def _self_test_parity(c, tmp, loss_rtol, grad_rtol):
    configs = [(5, 2, 1.0, 11), (1, 1, 1.0, 12), (3, 17, 0.5, 13), (4, 2, 4.0, 14)]
    for k, (b, d, beta, seed) in enumerate(configs):
        print("parity, torch-made dump (batch %d, latent_dim %d, beta %g):" % (b, d, beta))
        path = os.path.join(tmp, "dump_%d.safetensors" % k)
        make_dump(path, b, d, beta, seed)
        buf = io.StringIO()
        n_fail, rows, _ = run_parity(path, loss_rtol, grad_rtol,
                                     out=sys.stdout if k == 0 else buf)
        if k:
            print(buf.getvalue().splitlines()[-1])
        c.check(n_fail == 0 and len(rows) == 3 + 6 + 18, "torch-made dump passes (%d rows)"
                % len(rows))

    print("parity, torch-made dump of the older format %s:" % FORMAT_V1)
    path = os.path.join(tmp, "dump_v1.safetensors")
    make_dump(path, 5, 2, 1.0, 11, fmt=FORMAT_V1)
    buf = io.StringIO()
    n_fail, rows, _ = run_parity(path, loss_rtol, grad_rtol, out=buf)
    print(buf.getvalue().splitlines()[-1])
    c.check(n_fail == 0 and len(rows) == 3 + 18 and "no ReLU alignment" in buf.getvalue(),
            "%s dump passes, without ReLU rows (%d rows)" % (FORMAT_V1, len(rows)))

    print("parity, perturbed dumps (must FAIL):")
    path = os.path.join(tmp, "dump_0.safetensors")
    tensors, meta = load_safetensors(path)
    victim = "ref.grad.decoder.deconv1.weight"
    pert = dict(tensors)
    pert[victim] = tensors[victim] * (1.0 + 1e-3)
    ppath = os.path.join(tmp, "perturbed_grad.safetensors")
    save_safetensors(ppath, pert, meta)
    n_fail, rows, _ = run_parity(ppath, loss_rtol, grad_rtol)
    failed = [r[0] for r in rows if not r[6]]
    c.check(failed == ["grad decoder.deconv1.weight"],
            "gradient perturbed by 1e-3 relative fails, and only it (failed: %s)" % failed)

    # The KL's tolerance (kl_tolerance) is relative to its terms: off by twice it fails.
    _, rows, _ = run_parity(path, loss_rtol, grad_rtol, out=io.StringIO())
    kl_tol = [r[5] for r in rows if r[0] == "kl"][0]
    c.check(loss_rtol <= kl_tol < 1e-3, "the KL's tolerance %.3g is at least --loss-rtol and "
            "below 1e-3" % kl_tol)
    pert = dict(tensors)
    pert["ref.kl"] = tensors["ref.kl"] * (1.0 + 2 * kl_tol)
    ppath = os.path.join(tmp, "perturbed_kl.safetensors")
    save_safetensors(ppath, pert, meta)
    n_fail, rows, _ = run_parity(ppath, loss_rtol, grad_rtol, out=io.StringIO())
    failed = [r[0] for r in rows if not r[6]]
    c.check(failed == ["kl"], "ref.kl perturbed by twice its tolerance (%.3g relative) fails "
            "(failed: %s)" % (2 * kl_tol, failed))

    pert = dict(tensors)
    g = tensors["ref.grad.encoder.mu.bias"].clone()
    g[0] = float("nan")
    pert["ref.grad.encoder.mu.bias"] = g
    ppath = os.path.join(tmp, "perturbed_nan.safetensors")
    save_safetensors(ppath, pert, meta)
    n_fail, rows, _ = run_parity(ppath, loss_rtol, grad_rtol, out=io.StringIO())
    failed = [r[0] for r in rows if not r[6]]
    c.check(failed == ["grad encoder.mu.bias"], "NaN gradient fails (failed: %s)" % failed)

    _self_test_relu(c, tmp, tensors, meta, loss_rtol, grad_rtol)

    # Zero-norm reference guard.
    err, _, _, guarded = rel_error(torch.full((3,), 1e-13), torch.zeros(3))
    c.check(guarded and err <= ZERO_NORM_ATOL, "zero reference: tiny tested norm accepted")
    err, _, _, guarded = rel_error(torch.full((3,), 1e-6), torch.zeros(3))
    c.check(guarded and not err <= ZERO_NORM_ATOL, "zero reference: non-zero tested norm rejected")

    print("parity, malformed dumps (must be rejected as bad dumps):")

    def variant(name, mutate, new_meta=None):
        t = dict(tensors)
        mutate(t)
        p = os.path.join(tmp, "bad_%s.safetensors" % name)
        save_safetensors(p, t, new_meta if new_meta is not None else meta)
        return p

    c.raises_bad_dump(variant("missing_param", lambda t: t.pop("encoder.fc.bias")),
                      "missing parameter")
    c.raises_bad_dump(variant("extra_param", lambda t: t.update(
        {"encoder.extra.weight": torch.zeros(2)})), "unexpected parameter")
    c.raises_bad_dump(variant("shape_param", lambda t: t.update(
        {"decoder.out.bias": torch.zeros(2)})), "misshaped parameter")
    c.raises_bad_dump(variant("f64_param", lambda t: t.update(
        {"decoder.out.bias": t["decoder.out.bias"].double()})), "F64 parameter")
    c.raises_bad_dump(variant("missing_grad", lambda t: t.pop("ref.grad.encoder.fc.bias")),
                      "missing gradient")
    c.raises_bad_dump(variant("f32_loss", lambda t: t.update(
        {"ref.loss": t["ref.loss"].float()})), "F32 ref.loss")
    c.raises_bad_dump(variant("eps_shape", lambda t: t.update(
        {"batch.eps": torch.zeros(5, 3)})), "batch.eps with the wrong latent dim")
    c.raises_bad_dump(variant("x_range", lambda t: t.update(
        {"batch.x": t["batch.x"] * 2})), "batch.x outside [0, 1]")
    c.raises_bad_dump(variant("bad_format", lambda t: None, dict(meta, format="cuvae-parity-9")),
                      "unsupported format")
    c.raises_bad_dump(variant("batch_meta", lambda t: None, dict(meta, batch_size="6")),
                      "batch_size metadata disagreeing with batch.x")
    c.raises_bad_dump(variant("no_beta", lambda t: None,
                              {k: v for k, v in meta.items() if k != "beta"}), "missing beta")
    c.raises_bad_dump(variant("no_device", lambda t: None,
                              {k: v for k, v in meta.items() if k != "device"}), "missing device")
    c.raises_bad_dump(variant("gpu_device", lambda t: None, dict(meta, device="gpu")),
                      "device 'gpu'")
    c.raises_bad_dump(variant("missing_act", lambda t: t.pop("ref.act.decoder.fc")),
                      "missing ReLU output")
    c.raises_bad_dump(variant("act_shape", lambda t: t.update(
        {"ref.act.encoder.conv2": t["ref.act.encoder.conv2"].reshape(5, 3136)})),
        "ReLU output of encoder.conv2 flattened to [5, 3136]")
    c.raises_bad_dump(variant("act_f64", lambda t: t.update(
        {"ref.act.encoder.fc": t["ref.act.encoder.fc"].double()})), "F64 ReLU output")
    c.raises_bad_dump(variant("act_negative", lambda t: t.update(
        {"ref.act.decoder.deconv2": t["ref.act.decoder.deconv2"] - 1e-3})),
        "negative ReLU output")
    c.raises_bad_dump(variant("v1_with_act", lambda t: None, dict(meta, format=FORMAT_V1)),
                      "%s dump holding ref.act.* tensors" % FORMAT_V1)
    trunc = os.path.join(tmp, "bad_truncated.safetensors")
    with open(path, "rb") as f:
        data = f.read()
    with open(trunc, "wb") as f:
        f.write(data[:len(data) // 2])
    c.raises_bad_dump(trunc, "truncated dump")
    c.raises_bad_dump(os.path.join(tmp, "does_not_exist.safetensors"), "missing file")


def _self_test_relu(c, tmp, tensors, meta, loss_rtol, grad_rtol):
    """ReLU alignment: a flip within rounding of 0 is aligned (and matters), one beyond fails."""
    relu_rtol = 1e-5
    model, x, eps = make_batch(3, 2, 21)
    for side, what in ((1, "engine cut a unit float64 passes"),
                       (-1, "engine passed a unit float64 cuts")):
        layer = "encoder.conv2"
        print("parity, ReLU unit within rounding of 0 (%s, %s):" % (layer, what))
        near, index, pre, rms = unit_near_zero(model, x, eps, 1.0, layer, side, relu_rtol / 4)
        c.check(0 < side * pre <= relu_rtol / 2 * rms,
                "%s%s set to %.3e (%.2f x the tolerance)"
                % (layer, list(index), pre, abs(pre) / (relu_rtol * rms)))
        path = os.path.join(tmp, "flip_%d.safetensors" % side)
        write_torch_dump(path, near, x, eps, 1.0, flip=(layer, index))
        n_fail, rows, info = run_parity(path, loss_rtol, grad_rtol, relu_rtol,
                                        out=sys.stdout if side > 0 else io.StringIO())
        aligned = {n: s["aligned"] for n, s in info["relu"].items()}
        c.check(n_fail == 0 and aligned[layer] == 1 and sum(aligned.values()) == 1,
                "passes with that one unit aligned (aligned: %s)" % aligned)
        # The same dump without its ReLU outputs: no alignment, and the flip shows.
        path_v1 = os.path.join(tmp, "flip_%d_v1.safetensors" % side)
        write_torch_dump(path_v1, near, x, eps, 1.0, flip=(layer, index), fmt=FORMAT_V1)
        n_fail, rows, _ = run_parity(path_v1, loss_rtol, grad_rtol, relu_rtol, out=io.StringIO())
        worst = max((r for r in rows if r[0].startswith("grad ")), key=lambda r: r[3])
        c.check(n_fail > 0, "unaligned, it fails %d gradient row(s) (worst %s, %.1e)"
                % (n_fail, worst[0], worst[3]))

    print("parity, ReLU outputs on the other side of 0 far from it (must FAIL):")
    for layer, pick, value, what in (
            ("encoder.conv2", lambda a: int(a.argmax()), 0.0, "largest unit cut"),
            ("decoder.deconv2", lambda a: int((a == 0).nonzero()[0]), 0.5, "cut unit passed"),
            ("encoder.fc", lambda a: int(a.argmax()), float("nan"), "NaN")):
        pert = dict(tensors)
        a = tensors["ref.act." + layer].clone()
        flat = pick(a.reshape(-1))
        a.reshape(-1)[flat] = value
        pert["ref.act." + layer] = a
        ppath = os.path.join(tmp, "far_flip.safetensors")
        save_safetensors(ppath, pert, meta)
        buf = io.StringIO()
        n_fail, rows, _ = run_parity(ppath, loss_rtol, grad_rtol, relu_rtol, out=buf)
        failed = [r[0] for r in rows if not r[6]]
        unit = "FAIL relu %s%s:" % (layer, list(_unravel(flat, tuple(a.shape))))
        listed = [ln for ln in buf.getvalue().splitlines() if ln.startswith(unit)]
        c.check(failed == ["relu " + layer] and len(listed) == 1,
                "%s in %s fails, the unit listed (failed: %s; %s)"
                % (what, layer, failed, listed[0] if listed else "not listed"))


def self_test(loss_rtol, grad_rtol):
    print("parity self-test (torch %s)" % torch.__version__)
    c = _Checker()
    with tempfile.TemporaryDirectory(prefix="cuvae_parity_selftest.") as tmp:
        _self_test_model(c)
        _self_test_safetensors(c, tmp)
        _self_test_parity(c, tmp, loss_rtol, grad_rtol)
    if c.failures:
        print("self-test: FAILED (%d): %s" % (len(c.failures), "; ".join(c.failures)))
        return EXIT_FAIL
    print("self-test: all checks passed")
    return EXIT_PASS


# ------------------------------------------------------------------------------------------
def _positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % s) from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError("must be a positive finite number: %r" % s)
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description="Check a cuvae CPU engine's loss and gradients "
                                 "against PyTorch (float64).")
    ap.add_argument("dump", nargs="?", help="dump written by `cuvae parity-dump`")
    ap.add_argument("--grad-rtol", type=_positive_float, default=1e-5,
                    help="max relative L2 error per parameter gradient (default 1e-5)")
    ap.add_argument("--loss-rtol", type=_positive_float, default=1e-6,
                    help="max relative error of loss, recon, kl (default 1e-6)")
    ap.add_argument("--relu-rtol", type=_positive_float, default=1e-5,
                    help="a ReLU unit on the other side of 0 than float64's is aligned within "
                    "this times the RMS of the layer's output, and fails beyond (default 1e-5)")
    ap.add_argument("--self-test", action="store_true",
                    help="test this checker without cuvae")
    args = ap.parse_args(argv)

    if args.self_test:
        if args.dump:
            ap.error("--self-test takes no dump")
        return self_test(args.loss_rtol, args.grad_rtol)
    if not args.dump:
        ap.error("a dump file (or --self-test) is required")
    try:
        n_fail, _, _ = run_parity(args.dump, args.loss_rtol, args.grad_rtol, args.relu_rtol)
    except BadDump as e:
        msg = _one_line(e)
        if not msg.startswith(args.dump):
            msg = "%s: %s" % (args.dump, msg)
        print("parity: bad dump %s" % msg, file=sys.stderr)
        return EXIT_BAD_DUMP
    return EXIT_FAIL if n_fail else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
