#!/usr/bin/env python3
"""Checks that a model saved by `cuvae train` is the same model in PyTorch.

Usage:
  check_model.py RUN_OR_MODEL BATCH [--loss-rtol 1e-6] [--image-rtol 1e-6]

RUN_OR_MODEL is a run folder (its model.safetensors) or a .safetensors model file. BATCH is
written by `cuvae eval RUN --dump-batch BATCH` (format "cuvae-eval-batch-1"): the first images
of a split, batch.x F32 [B,1,28,28], their evaluation noise batch.eps F32 [B,D], and what cuvae
computed on them: ref.loss / ref.recon / ref.kl F64 [1] (batch means; loss = recon + beta*kl
with the model's beta), ref.recon_per_image / ref.kl_per_image F64 [B], ref.mu / ref.logvar
F32 [B,D]; metadata latent_dim, beta, batch_size.

The check: CuvaeVAE(latent_dim) from cuvae_torch.py must accept the file's tensors with
load_state_dict(strict=True) (every name, shape and dtype, nothing extra); then the loaded
model, converted to float64, recomputes the batch with the same eps, and cuvae's float32
results must agree:
  loss, recon (batch means)         within --loss-rtol (1e-6) relative
  kl (batch mean)                   within --loss-rtol of the loss (the KL can be ~0)
  per-image negative ELBO           within --image-rtol (1e-6) relative
  mu, logvar                        within 1e-5 * (1 + |value|) (float32 encoder outputs;
                                    the CPU reference is seen at ~1e-7)
Exit status: 0 all agree, 1 a mismatch (or the model does not load strictly), 2 bad input or
usage, 77 PyTorch is not available.
"""

import argparse
import math
import os
import sys

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
import torch.nn.functional as F  # noqa: E402

from cuvae_torch import CuvaeVAE, load_safetensors  # noqa: E402

BATCH_FORMAT = "cuvae-eval-batch-1"
MODEL_FORMAT_PREFIX = "cuvae-model"
LATENT_ATOL_SCALE = 1e-5
EXIT_PASS, EXIT_FAIL, EXIT_BAD, EXIT_SKIP = 0, 1, 2, 77


class BadInput(Exception):
    """A file is missing, malformed or not what it should be."""


class Mismatch(Exception):
    """The model does not load strictly into CuvaeVAE."""


def one_line(msg):
    return " ".join(str(msg).split())


def meta_int(meta, key, source):
    try:
        v = int(meta[key])
    except (KeyError, ValueError):
        raise BadInput("%s: metadata %r missing or not an integer" % (source, key)) from None
    if v < 1:
        raise BadInput("%s: metadata %r=%d must be >= 1" % (source, key, v))
    return v


def meta_float(meta, key, source):
    try:
        v = float(meta[key])
    except (KeyError, ValueError):
        raise BadInput("%s: metadata %r missing or not a number" % (source, key)) from None
    if not math.isfinite(v) or v < 0:
        raise BadInput("%s: metadata %r=%r must be finite and >= 0" % (source, key, meta[key]))
    return v


def load_model(path):
    """CuvaeVAE loaded with strict=True from cuvae's model file -> (model, beta, metadata)."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    try:
        tensors, meta = load_safetensors(path)
    except (OSError, ValueError) as e:
        raise BadInput(e) from None
    fmt = meta.get("format", "")
    if not fmt.startswith(MODEL_FORMAT_PREFIX):
        raise BadInput("%s: metadata format=%r is not a cuvae model" % (path, fmt))
    d = meta_int(meta, "latent_dim", path)
    beta = meta_float(meta, "beta", path)
    for name, t in tensors.items():
        if t.dtype != torch.float32:
            raise Mismatch("%s: tensor %r is %s, the model's parameters are float32"
                           % (path, name, t.dtype))
    model = CuvaeVAE(d)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise Mismatch("%s does not load into CuvaeVAE(latent_dim=%d) with strict=True: %s"
                       % (path, d, one_line(e))) from None
    return model, beta, path, meta


def expect(tensors, name, dtype, shape, source):
    if name not in tensors:
        raise BadInput("%s: tensor %r is missing" % (source, name))
    t = tensors[name]
    if t.dtype != dtype or tuple(t.shape) != tuple(shape):
        raise BadInput("%s: tensor %r is %s %s, expected %s %s"
                       % (source, name, t.dtype, list(t.shape), dtype, list(shape)))
    return t


def load_batch(path):
    try:
        tensors, meta = load_safetensors(path)
    except (OSError, ValueError) as e:
        raise BadInput(e) from None
    if meta.get("format") != BATCH_FORMAT:
        raise BadInput("%s: metadata format=%r, expected %r (written by cuvae eval --dump-batch)"
                       % (path, meta.get("format"), BATCH_FORMAT))
    d = meta_int(meta, "latent_dim", path)
    b = meta_int(meta, "batch_size", path)
    f32, f64 = torch.float32, torch.float64
    batch = {
        "latent_dim": d,
        "beta": meta_float(meta, "beta", path),
        "x": expect(tensors, "batch.x", f32, (b, 1, 28, 28), path),
        "eps": expect(tensors, "batch.eps", f32, (b, d), path),
        "mu": expect(tensors, "ref.mu", f32, (b, d), path),
        "logvar": expect(tensors, "ref.logvar", f32, (b, d), path),
        "recon_per_image": expect(tensors, "ref.recon_per_image", f64, (b,), path),
        "kl_per_image": expect(tensors, "ref.kl_per_image", f64, (b,), path),
        "device": meta.get("device", "?"),
    }
    for term in ("loss", "recon", "kl"):
        batch[term] = float(expect(tensors, "ref." + term, f64, (1,), path)[0])
    x = batch["x"]
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise BadInput("%s: batch.x must hold finite values in [0, 1]" % path)
    if not bool(torch.isfinite(batch["eps"]).all()):
        raise BadInput("%s: batch.eps holds non-finite values" % path)
    return batch


def torch_results(model, x, eps, beta, dtype):
    """Per-image recon, kl, mu, logvar and the batch means, computed by PyTorch in dtype."""
    m = CuvaeVAE(model.latent_dim)
    m.load_state_dict(model.state_dict(), strict=True)
    m = m.to(dtype)
    with torch.no_grad():
        logits, mu, logvar = m(x.to(dtype), eps.to(dtype))
        recon = F.binary_cross_entropy_with_logits(logits, x.to(dtype),
                                                   reduction="none").flatten(1).sum(1)
        kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return {"recon_per_image": recon, "kl_per_image": kl, "mu": mu, "logvar": logvar,
            "loss": float((recon + beta * kl).mean()), "recon": float(recon.mean()),
            "kl": float(kl.mean())}


def compare(batch, t64, loss_rtol, image_rtol):
    """Rows (label, cuvae, torch, error, tolerance, ok); NaN never passes."""
    rows = []

    def row(label, got, want, err, tol):
        rows.append((label, got, want, err, tol, bool(err <= tol)))  # NaN -> False

    for term in ("loss", "recon"):
        got, want = batch[term], t64[term]
        row(term + " (batch mean, rel)", got, want, abs(got - want) / max(abs(want), 1e-300),
            loss_rtol)
    row("kl (batch mean, rel to loss)", batch["kl"], t64["kl"],
        abs(batch["kl"] - t64["kl"]) / max(abs(t64["loss"]), 1e-300), loss_rtol)

    got = batch["recon_per_image"] + batch["kl_per_image"]
    want = t64["recon_per_image"] + t64["kl_per_image"]
    rel = ((got - want).abs() / want.abs().clamp_min(1e-300))
    worst = int(rel.argmax()) if rel.numel() else 0
    row("negative ELBO, image %d (max rel)" % worst, float(got[worst]), float(want[worst]),
        float(rel.max()), image_rtol)
    for name in ("mu", "logvar"):
        g = batch[name].to(torch.float64)
        w = t64[name]
        err = ((g - w).abs() / (1.0 + w.abs())).max()
        row(name + " (max abs / (1+|v|))", float(g.abs().max()), float(w.abs().max()),
            float(err), LATENT_ATOL_SCALE)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Load cuvae's model.safetensors into the PyTorch module with strict=True "
                    "and check it reproduces cuvae's loss on a batch from `cuvae eval "
                    "--dump-batch`.")
    p.add_argument("model", help="run folder or model .safetensors file")
    p.add_argument("batch", help="file written by cuvae eval --dump-batch")
    p.add_argument("--loss-rtol", type=float, default=1e-6)
    p.add_argument("--image-rtol", type=float, default=1e-6)
    a = p.parse_args(argv)
    try:
        model, beta, model_path, meta = load_model(a.model)
        batch = load_batch(a.batch)
        if batch["latent_dim"] != model.latent_dim:
            raise Mismatch("%s has latent_dim %d but the batch was made with latent_dim %d"
                           % (model_path, model.latent_dim, batch["latent_dim"]))
    except BadInput as e:
        print("check_model: error: %s" % one_line(e), file=sys.stderr)
        return EXIT_BAD
    except Mismatch as e:
        print("check_model: FAIL: %s" % one_line(e))
        return EXIT_FAIL
    n_params = sum(t.numel() for t in model.state_dict().values())
    print("model: %s (%s, latent_dim %d, beta %g): load_state_dict(strict=True) OK, "
          "%d tensors, %d parameters" % (model_path, meta.get("format"), model.latent_dim, beta,
                                         len(model.state_dict()), n_params))
    print("batch: %s (%d images, computed by cuvae on %s)"
          % (a.batch, batch["x"].shape[0], batch["device"]))
    rows = []
    if abs(batch["beta"] - beta) > 1e-12 * max(1.0, beta):
        rows.append(("beta (model vs batch)", batch["beta"], beta, abs(batch["beta"] - beta),
                     0.0, False))
    t64 = torch_results(model, batch["x"], batch["eps"], beta, torch.float64)
    rows += compare(batch, t64, a.loss_rtol, a.image_rtol)
    t32 = torch_results(model, batch["x"], batch["eps"], beta, torch.float32)

    hdr = "%-36s %16s %16s %11s %9s  %s" % ("quantity", "cuvae", "torch float64", "error",
                                             "tol", "result")
    print(hdr)
    print("-" * len(hdr))
    for label, got, want, err, tol, ok in rows:
        print("%-36s %16.9g %16.9g %11.3e %9.1e  %s"
              % (label, got, want, err, tol, "PASS" if ok else "FAIL"))
    print("info (not gating): torch float32 vs float64 loss rel error %.3e"
          % (abs(t32["loss"] - t64["loss"]) / max(abs(t64["loss"]), 1e-300)))
    failed = sum(1 for r in rows if not r[5])
    print("check_model: %d passed, %d failed" % (len(rows) - failed, failed))
    return EXIT_FAIL if failed else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
