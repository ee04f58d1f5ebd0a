#!/usr/bin/env python3
"""Tests of the benchmark driver's pure parts (benchlib.py) and of bench.py end to end with
stand-in programs for cuvae, the PyTorch benchmark and the GEMM probe (no GPU, no data).

  python3 tools/bench/test_bench.py          # the tests that need no PyTorch: exit 0 when all pass
  python3 tools/bench/test_bench.py --torch  # those that need it (on the CPU): exit 77, saying
                                             # why, when torch cannot be imported

The tests marked @needs_torch (the layer shapes against the PyTorch module, the bf16 autocast
loss and training step of torch_vae.py, the CPU runs of torch_vae.py and gemm_rate.py) run
under --torch only: two CTest tests, so that a machine without PyTorch shows one skipped test
instead of passing with six tests left out. A test skipped inside either run is a failure.
"""

import contextlib
import importlib
import io
import json
import math
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402
import bench  # noqa: E402
import torch_vae  # noqa: E402  (imports without PyTorch: only main() needs it)


def needs_torch(test):
    """Marks a test that needs PyTorch: it runs under --torch, and only there."""
    test.needs_torch = True
    return test


class FlopCount(unittest.TestCase):
    # Hand calculation, layer by layer, at latent dim 2 (multiply-adds per image):
    HAND_MACS = {
        "encoder.conv1": 14 * 14 * 32 * 9,             # 56,448: 1 input channel
        "encoder.conv2": 7 * 7 * 64 * 32 * 9,          # 903,168
        "encoder.fc": 3136 * 16,                       # 50,176
        "encoder.mu": 32,                              # 16 x 2
        "encoder.logvar": 32,
        "decoder.fc": 6272,                            # 2 x 3136
        "decoder.deconv1": 49 * 64 * 64 * 9,           # 1,806,336: 7x7 inputs scattered
        "decoder.deconv2": 196 * 64 * 32 * 9,          # 3,612,672: 14x14 inputs
        "decoder.out": 784 * 32 * 9,                   # 225,792: stride 1, 28x28
    }

    def test_per_layer(self):
        layers = bl.model_layers(2)
        self.assertEqual([l[0] for l in layers], list(self.HAND_MACS))
        for layer in layers:
            self.assertEqual(bl.layer_macs(layer), self.HAND_MACS[layer[0]], layer[0])

    def test_totals(self):
        fwd_macs = 6660928
        self.assertEqual(sum(self.HAND_MACS.values()), fwd_macs)
        self.assertEqual(bl.forward_flop_per_image(2), 2 * fwd_macs)
        self.assertEqual(bl.train_flop_per_image(2), 39965568)
        self.assertEqual(bl.train_flop_per_image(2, exact=True), 39965568 - 2 * 56448)
        # "about 40 MFLOP per image per step"
        self.assertAlmostEqual(bl.train_flop_per_image(2) / 40e6, 1.0, delta=0.01)

    def test_latent_dim(self):
        # only the three dense layers touching z depend on D: 16*D*2 + D*3136 MACs
        d3 = bl.forward_flop_per_image(3) - bl.forward_flop_per_image(2)
        self.assertEqual(d3, 2 * (16 * 2 + 3136))

    def test_schedule_times(self):
        epoch_ms, keras_s = bl.schedule_times(1e6)  # a million images per second
        self.assertAlmostEqual(epoch_ms, 60.0)
        self.assertAlmostEqual(keras_s, 2.1)

    def test_floor_fraction(self):
        frac = bl.floor_fraction(1e6, 100e12, 2)
        self.assertAlmostEqual(frac, 39965568 * 1e6 / 100e12)
        self.assertIsNone(bl.floor_fraction(1e6, None))

    @needs_torch
    def test_shapes_match_the_pytorch_module(self):
        import torch
        sys.path.insert(0, os.path.join(HERE, "..", "parity"))
        from cuvae_torch import CuvaeVAE
        model = CuvaeVAE(2)
        seen = {}

        def hook(name):
            def fn(_, inputs, output):
                seen[name] = (tuple(inputs[0].shape), tuple(output.shape))
            return fn
        for name, mod in model.named_modules():
            if name.count(".") == 1:
                mod.register_forward_hook(hook(name))
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28), torch.zeros(1, 2))
        for name, kind, cin, cout, hin, win, hout, wout, k in bl.model_layers(2):
            x_shape, y_shape = seen[name]
            mod = dict(model.named_modules())[name]
            if kind == "dense":
                self.assertEqual((x_shape[1], y_shape[1]), (cin, cout), name)
            else:
                self.assertEqual(x_shape[1:], (cin, hin, win), name)
                self.assertEqual(y_shape[1:], (cout, hout, wout), name)
                self.assertEqual(mod.kernel_size, (k, k), name)
                self.assertEqual(kind == "deconv",
                                 isinstance(mod, torch.nn.ConvTranspose2d), name)
            # the MAC count is also the weight size times the positions each weight sees
            positions = hout * wout if kind == "conv" else hin * win
            self.assertEqual(bl.layer_macs((name, kind, cin, cout, hin, win, hout, wout, k)),
                             mod.weight.numel() * positions, name)


class LossRule(unittest.TestCase):
    def test_rule(self):
        self.assertEqual(bl.loss_check(160.0, 162.9, 3)[0], "agree")      # 3 nats floor
        self.assertEqual(bl.loss_check(160.0, 163.2, 3)[0], "agree")      # 2% of 163.2 = 3.264
        self.assertEqual(bl.loss_check(160.0, 163.4, 3)[0], "DISAGREE")   # 3.4 > 3.268
        self.assertEqual(bl.loss_check(50.0, 52.9, 5)[0], "agree")        # absolute floor
        self.assertEqual(bl.loss_check(50.0, 53.1, 5)[0], "DISAGREE")
        self.assertEqual(bl.loss_check(400.0, 407.9, 3)[0], "agree")      # 2% of 407.9
        self.assertEqual(bl.loss_check(400.0, 410.0, 3)[0], "DISAGREE")

    def test_slope_term(self):
        # still falling 60 nats per epoch: half of that is noise
        self.assertEqual(bl.loss_check(242.3, 261.4, 3, drop=60.0)[0], "agree")
        self.assertEqual(bl.loss_check(242.3, 275.0, 3, drop=60.0)[0], "DISAGREE")
        self.assertEqual(bl.loss_check(160.0, 163.4, 3, drop=1.0)[0], "DISAGREE")
        self.assertAlmostEqual(bl.loss_check(160.0, 170.0, 3, drop=30.0)[2], 15.0)
        eps = [{"loss": 300.0}, {"loss": 250.0}, {"loss": 240.5}]
        self.assertAlmostEqual(bl.last_drop(eps), 9.5)
        self.assertIsNone(bl.last_drop(eps[:1]))
        self.assertIsNone(bl.last_drop([{"loss": 1.0}, {"loss": float("nan")}]))

    def test_symmetric(self):
        for a, b in ((160.0, 163.35), (10.0, 13.5), (300.0, 306.0)):
            self.assertEqual(bl.loss_check(a, b, 3), bl.loss_check(b, a, 3))

    def test_too_early_and_bad(self):
        self.assertTrue(bl.loss_check(160.0, 300.0, 2)[0].startswith("not judged"))
        self.assertEqual(bl.loss_check(float("nan"), 160.0, 3)[0], "non-finite")
        self.assertEqual(bl.loss_check(math.inf, 160.0, 3)[0], "non-finite")
        self.assertEqual(bl.loss_check(None, 160.0, 3)[0], "missing")

    def test_rule_text_states_the_numbers(self):
        text = bl.rule_text()
        self.assertIn("2%", text)
        self.assertIn("3 nats", text)
        self.assertIn("0.5 x the larger loss drop", text)
        self.assertIn("at least 3 epochs", text)


class Sections(unittest.TestCase):
    DOC = textwrap.dedent("""\
        # Benchmarks

        Hand-written intro.

        <!-- bench:gpu:start -->
        old gpu table
        <!-- bench:gpu:end -->

        ## Optimisations

        | a | b |
        <!-- bench:cpu:start -->
        old cpu table
        <!-- bench:cpu:end -->
        trailing notes
        """)

    def test_replaces_only_its_section(self):
        out = bl.replace_section(self.DOC, "gpu", "new\ntable\n")
        self.assertIn("<!-- bench:gpu:start -->\nnew\ntable\n<!-- bench:gpu:end -->", out)
        self.assertNotIn("old gpu table", out)
        for kept in ("Hand-written intro.", "## Optimisations", "| a | b |", "old cpu table",
                     "trailing notes"):
            self.assertIn(kept, out)
        # the text around the section is byte-identical
        i = self.DOC.index("<!-- bench:gpu:start -->")
        j = self.DOC.index("<!-- bench:gpu:end -->") + len("<!-- bench:gpu:end -->")
        k = out.index("<!-- bench:gpu:end -->") + len("<!-- bench:gpu:end -->")
        self.assertEqual(out[:i], self.DOC[:i])
        self.assertEqual(out[k:], self.DOC[j:])

    def test_idempotent(self):
        once = bl.replace_section(self.DOC, "cpu", "x")
        self.assertEqual(bl.replace_section(once, "cpu", "x"), once)

    def test_absent_section_is_appended(self):
        out = bl.replace_section("# T\n\ntext\n", "gpu", "body")
        self.assertEqual(out, "# T\n\ntext\n\n<!-- bench:gpu:start -->\nbody\n"
                              "<!-- bench:gpu:end -->\n")
        self.assertEqual(bl.replace_section("", "cpu", "b"),
                         "<!-- bench:cpu:start -->\nb\n<!-- bench:cpu:end -->\n")

    def test_broken_markers_refused(self):
        s, e = bl.markers("gpu")
        for bad in (s + "\nx\n", "x\n" + e, e + "\n" + s, s + s + e, s + e + s + e):
            with self.assertRaises(bl.SectionError, msg=repr(bad)):
                bl.replace_section(bad, "gpu", "b")

    def test_write_atomic(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "B.md")
            bl.write_atomic(path, "hello\n")
            with open(path, encoding="utf-8") as f:
                self.assertEqual(f.read(), "hello\n")
            self.assertEqual(os.listdir(d), ["B.md"])


def sample_result(**over):
    obj = {
        "system": "cuvae", "version": "0.1.0", "device": "NVIDIA H200", "device_kind": "gpu",
        "batch_size": 128, "precision": "fp32", "algo": "deterministic", "layout": "nchw",
        "latent_dim": 2,
        "images": 60000, "seed": 0, "warmup_epochs": 1,
        "epochs": [
            {"epoch": 1, "warmup": True, "ms": 900.0, "loss": 200.0, "recon": 197.0, "kl": 3.0},
            {"epoch": 2, "warmup": False, "ms": 50.0, "loss": 170.0, "recon": 166.0, "kl": 4.0},
            {"epoch": 3, "warmup": False, "ms": 52, "loss": 165.0, "recon": 160.0, "kl": 5.0},
        ],
        "ms_per_epoch_median": 51.0, "images_per_s": 1176470.6,
        "peak_memory_bytes": 123456789, "peak_memory_what": "cudaMemGetInfo delta",
        "final_loss": 165.0, "final_recon": 160.0, "final_kl": 5.0,
    }
    obj.update(over)
    return obj


class Schema(unittest.TestCase):
    def test_valid(self):
        self.assertEqual(bl.validate_result(sample_result()), [])
        self.assertEqual(bl.validate_result(sample_result(images=60000.0)), [])
        for precision in ("fp32", "tf32", "bf16"):
            self.assertEqual(bl.validate_result(sample_result(precision=precision)), [],
                             precision)

    def test_problems(self):
        def problems(**over):
            return bl.validate_result(sample_result(**over))
        obj = sample_result()
        del obj["final_kl"]
        self.assertTrue(any("final_kl" in p for p in bl.validate_result(obj)))
        self.assertTrue(problems(batch_size="128"))
        self.assertTrue(problems(batch_size=True))
        self.assertTrue(problems(images=60000.5))
        self.assertTrue(problems(device_kind="tpu"))
        self.assertTrue(problems(precision="fp16"))
        self.assertTrue(problems(precision="BF16"))
        self.assertTrue(problems(precision=""))
        self.assertTrue(problems(ms_per_epoch_median=0))
        self.assertTrue(problems(warmup_epochs=2))
        self.assertTrue(problems(epochs=[{"epoch": 1, "warmup": True, "ms": 1.0, "loss": 1.0,
                                          "recon": 1.0, "kl": 0.0}], warmup_epochs=1))
        self.assertTrue(problems(epochs=[{"epoch": 1, "warmup": False, "ms": 1.0}]))
        self.assertTrue(bl.validate_result([1, 2]))

    def test_cpu_kinds_and_sgemm_rate(self):
        cpu = sample_result(device="cpu (oneDNN 2.6.3, 2 OpenMP threads)", device_kind="cpu",
                            sgemm_gflops=61.5, sgemm_what="oneDNN sgemm, 2048 x 2048 x 2048, "
                            "median of 5, on 2 OpenMP threads")
        self.assertEqual(bl.validate_result(cpu), [])
        self.assertEqual(bl.validate_result(dict(cpu, device_kind="cpu-ref")), [])
        self.assertEqual(bl.validate_result(dict(cpu, device_kind="cpu-fast")),
                         ["device_kind 'cpu-fast' is not one of 'gpu', 'cpu', 'cpu-ref'"])
        # cuvae on the CPU, either engine, must state the SGEMM rate it measured and how
        for kind in ("cpu", "cpu-ref"):
            for key in ("sgemm_gflops", "sgemm_what"):
                obj = dict(cpu, device_kind=kind)
                del obj[key]
                self.assertEqual(bl.validate_result(obj), [
                    "missing key %r (cuvae on the CPU reports the SGEMM rate it measured: the "
                    "FLOP-floor denominator)" % key], (kind, key))
        for bad in (0, -1.0, "61.5", True, None, float("nan"), math.inf):
            self.assertEqual(bl.validate_result(dict(cpu, sgemm_gflops=bad)),
                             ["sgemm_gflops must be a positive number, got %r" % (bad,)],
                             repr(bad))
        for bad in ("", "  ", None, 5):
            self.assertEqual(bl.validate_result(dict(cpu, sgemm_what=bad)),
                             ["sgemm_what must be a non-empty string, got %r" % (bad,)],
                             repr(bad))
        # PyTorch on the CPU and cuvae on the GPU measure none
        bare = dict(cpu)
        del bare["sgemm_gflops"], bare["sgemm_what"]
        self.assertEqual(bl.validate_result(dict(bare, system="pytorch-eager")), [])
        self.assertEqual(bl.validate_result(sample_result()), [])

    def test_median(self):
        self.assertEqual(bl.median([3, 1, 2]), 2)
        self.assertEqual(bl.median([4, 1, 2, 3]), 2.5)


class MixedPrecision(unittest.TestCase):
    """The bf16 precision: its floor, the accuracy-cost lines and torch_vae.py's flags."""

    def test_loss_change(self):
        diff, rel = bl.loss_change(153.9, 154.3)
        self.assertAlmostEqual(diff, 0.4)
        self.assertAlmostEqual(rel, 0.4 / 153.9)
        diff, rel = bl.loss_change(160.0, 158.0)  # bf16 may also end lower
        self.assertAlmostEqual(diff, -2.0)
        self.assertAlmostEqual(rel, -0.0125)
        self.assertIsNone(bl.loss_change(None, 160.0))
        self.assertIsNone(bl.loss_change(160.0, float("nan")))
        self.assertIsNone(bl.loss_change(math.inf, 160.0))
        self.assertEqual(bl.loss_change(0.0, 1.0), (1.0, None))
        self.assertEqual(bench.fmt_change((0.4, 0.4 / 153.9)), "+0.40 nats, +0.26%")
        self.assertEqual(bench.fmt_change((-2.0, -0.0125)), "-2.00 nats, -1.25%")
        self.assertEqual(bench.fmt_change((1.0, None)), "+1.00 nats")
        self.assertEqual(bench.fmt_change(None), "not comparable")

    @staticmethod
    def config(batch, precision, loss, ms, eager_loss=None, failed=False):
        cu = None if failed else sample_result(batch_size=batch, precision=precision,
                                              final_loss=loss, ms_per_epoch_median=ms)
        torch = {}
        if eager_loss is not None:
            torch["eager"] = (sample_result(system="pytorch-eager", final_loss=eager_loss,
                                            precision=precision), None, None)
        return dict(batch=batch, precision=precision, torch=torch,
                    cuvae=(cu, "exit 1" if failed else None, None))

    def test_accuracy_cost_lines(self):
        configs = [self.config(128, "fp32", 153.9, 10.0, eager_loss=155.0),
                   self.config(128, "tf32", 153.0, 9.0),
                   self.config(128, "bf16", 154.3, 8.0, eager_loss=156.1),
                   self.config(1024, "bf16", 150.0, 4.0),           # no fp32 row: no line
                   self.config(4096, "fp32", 170.0, 5.0),
                   self.config(4096, "bf16", 171.0, 2.0, failed=True)]
        lines = bench.mixed_precision_lines(configs)
        # 0.4 / 153.9 = 0.26%; 10 / 8 = 1.25x; PyTorch 1.1 / 155 = 0.71%; the sample result
        # holds 3 epochs (1 warm-up + 2 timed)
        self.assertEqual(lines, [
            "- accuracy cost of --bf16 at batch 128: final loss 154.30 vs fp32 153.90 "
            "(+0.40 nats, +0.26%), 3 epochs; speed: 8.00 ms/epoch vs fp32 10.0, 1.25x; "
            "PyTorch eager, bf16 autocast: 156.10 vs fp32 155.00 (+1.10 nats, +0.71%)",
            "- accuracy cost of --bf16 at batch 4096: not measured (the bf16 cuvae run did "
            "not finish)"])
        self.assertEqual(bench.mixed_precision_lines(configs[:2]), [])

    def test_gemm_rate_per_precision(self):
        gemm = {"n": 8192, "reps": 10, "fp32_tflops": 50.0, "tf32_tflops": 400.0,
                "bf16_tflops": 800.0}
        self.assertEqual(bench.gemm_rate_for(gemm, "fp32"), 50e12)
        self.assertEqual(bench.gemm_rate_for(gemm, "tf32"), 400e12)
        self.assertEqual(bench.gemm_rate_for(gemm, "bf16"), 800e12)
        # not measured: no floor, never the fp32 or TF32 one in its place
        self.assertIsNone(bench.gemm_rate_for(dict(gemm, bf16_tflops=None), "bf16"))
        old = dict(gemm)
        del old["bf16_tflops"]  # a gemm_rate.py from before bf16
        self.assertIsNone(bench.gemm_rate_for(old, "bf16"))
        self.assertEqual(bench.validate_gemm(gemm), [])
        self.assertEqual(bench.validate_gemm(old), [])
        self.assertEqual(bench.validate_gemm(dict(gemm, bf16_tflops=None)), [])
        for bad in (0, -1.0, "800", True):
            self.assertTrue(bench.validate_gemm(dict(gemm, bf16_tflops=bad)), repr(bad))
        self.assertIn("bf16 800 TFLOP/s", bench.gemm_note(gemm))
        self.assertNotIn("bf16", bench.gemm_note(old))

    def test_flags_per_precision(self):
        args = bench.parse_args(["--batches", "128"])
        self.assertEqual(args.precisions, ["fp32", "tf32", "bf16"])  # the GPU default
        self.assertEqual(bench.common_flags(args, 128, "bf16")[-1], "--bf16")
        self.assertEqual(bench.common_flags(args, 128, "tf32")[-1], "--tf32")
        flags = bench.common_flags(args, 128, "fp32")
        self.assertNotIn("--bf16", flags)
        self.assertNotIn("--tf32", flags)

    def test_torch_vae_flags(self):
        self.assertEqual(torch_vae.precision_of(torch_vae.parse_args([])), "fp32")
        self.assertEqual(torch_vae.precision_of(torch_vae.parse_args(["--tf32"])), "tf32")
        self.assertEqual(torch_vae.precision_of(torch_vae.parse_args(["--bf16"])), "bf16")
        for argv in (["--bf16", "--tf32"], ["--tf32", "--bf16"]):
            err = io.StringIO()
            with self.assertRaises(SystemExit) as cm, contextlib.redirect_stderr(err):
                torch_vae.parse_args(argv)
            self.assertEqual(cm.exception.code, 2)
            self.assertIn("not allowed with argument", err.getvalue())

    @needs_torch
    def test_mixed_loss_runs_the_layers_in_bf16(self):
        import torch
        from cuvae_torch import CuvaeVAE, vae_loss
        model = CuvaeVAE(2)
        torch_vae.glorot_init(model, 0)
        gen = torch.Generator().manual_seed(3)
        x = torch.rand(5, 1, 28, 28, generator=gen)
        eps = torch.randn(5, 2, generator=gen)
        seen = {}
        # CUDA autocast runs convolutions, transposed ones and dense layers in bf16; CPU
        # autocast (what runs here) keeps transposed convolutions in fp32 in some PyTorch
        # versions, so this checks a convolution and a dense layer
        for name in ("encoder.conv2", "encoder.fc"):
            dict(model.named_modules())[name].register_forward_hook(
                lambda mod, inp, out, name=name: seen.__setitem__(name, out.dtype))
        ref = vae_loss(model, x, eps)
        self.assertEqual(set(seen.values()), {torch.float32})
        mixed = torch_vae.mixed_vae_loss(model, x, eps)
        # autocast ran the layers in bf16 ...
        self.assertEqual(seen, {"encoder.conv2": torch.bfloat16,
                                "encoder.fc": torch.bfloat16})
        # ... the loss terms are fp32 and close to the fp32 loss (bf16 keeps ~3 digits)
        for a, b in zip(mixed, ref):
            self.assertEqual(a.dtype, torch.float32)
            self.assertLess(abs(a.item() - b.item()), 1e-2 * abs(b.item()) + 1e-2)
        self.assertAlmostEqual(mixed[0].item(), mixed[1].item() + mixed[2].item(), places=3)
        mixed[0].backward()  # fp32 parameters get fp32 gradients
        self.assertEqual(model.encoder.conv1.weight.grad.dtype, torch.float32)

    @needs_torch
    def test_training_step_uses_autocast_with_bf16(self):
        import numpy as np
        import torch
        images = np.random.RandomState(0).randint(0, 256, (8, 1, 28, 28)).astype(np.uint8)
        for argv, want in (([], torch.float32), (["--bf16"], torch.bfloat16)):
            args = torch_vae.parse_args(["--device", "cpu", "--batch-size", "4"] + argv)
            run = torch_vae.Run(args, images, torch.device("cpu"), "step")
            seen = set()
            run.model.encoder.conv2.register_forward_hook(
                lambda mod, inp, out: seen.add(out.dtype))
            ms, means = run.epoch()  # 2 steps of 4 images, the step bench.py times
            self.assertEqual(seen, {want}, argv)
            self.assertTrue(all(math.isfinite(v) for v in means), means)
            self.assertEqual(run.model.encoder.conv2.weight.dtype, torch.float32)

    @needs_torch
    def test_bf16_native_ignores_emulation(self):
        from unittest import mock
        cuda = torch_vae.torch.cuda

        def with_emulation(including_emulation=True):  # PyTorch >= 2.3 on a pre-Ampere GPU
            return including_emulation
        with mock.patch.object(cuda, "is_bf16_supported", with_emulation, create=True):
            self.assertFalse(torch_vae.bf16_native())
        with mock.patch.object(cuda, "is_bf16_supported", lambda: True, create=True):
            self.assertTrue(torch_vae.bf16_native())  # older PyTorch: no emulation argument
        with mock.patch.object(cuda, "is_bf16_supported", lambda: False, create=True):
            self.assertFalse(torch_vae.bf16_native())

    @needs_torch
    def test_torch_vae_cpu_skips_bf16(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.json")
            p = subprocess.run([sys.executable, os.path.join(HERE, "torch_vae.py"), "--device",
                                "cpu", "--bf16", "--json", path], capture_output=True,
                               text=True, timeout=300)
            self.assertEqual(p.returncode, 77, p.stderr)
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        self.assertEqual(obj["precision"], "bf16")
        self.assertIn("GPU-only", obj["skipped"])

    @needs_torch
    def test_gemm_rate_bf16(self):
        import torch
        import gemm_rate
        # the bf16 path of the measurement runs (tiny, on the CPU)
        self.assertGreater(gemm_rate.gemm_tflops(32, 2, torch.device("cpu"), False,
                                                 torch.bfloat16), 0)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "g.json")
            p = subprocess.run([sys.executable, os.path.join(HERE, "gemm_rate.py"), "--device",
                                "cpu", "--n", "64", "--reps", "2", "--json", path],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        self.assertIn("bf16_tflops", obj)
        self.assertIsNone(obj["bf16_tflops"])  # GPU only
        self.assertEqual(bench.validate_gemm(obj), [])


class Layout(unittest.TestCase):
    """The layout ablation: cuvae --layout nhwc (channels-last convolutions) against the row's
    own run in the default NCHW."""

    def test_parsing_and_defaults(self):
        self.assertEqual(bench.parse_args([]).ablations, ["graph", "fusion", "layout"])
        self.assertEqual(bench.parse_args(["--ablations", "layout"]).ablations, ["layout"])
        self.assertEqual(bench.parse_args(["--ablations", "graph,layout"]).ablations,
                         ["graph", "layout"])
        self.assertEqual(bench.parse_args(["--ablations", "none"]).ablations, [])
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(bench.parse_args(["--device", "cpu"]).ablations, [])
            self.assertEqual(bench.parse_args(["--device", "cpu", "--ablations", "layout"])
                             .ablations, [])
            for bad in ("nhwc", "layout=nhwc"):
                with self.assertRaises(SystemExit) as cm:
                    bench.parse_args(["--ablations", bad])
                self.assertEqual(cm.exception.code, 2, bad)
        self.assertIn("unknown ablation 'nhwc'", err.getvalue())
        # the layout runs every precision: it has no conflict
        self.assertNotIn("layout", bench.ABLATION_CONFLICTS)

    def test_flags_and_file_names(self):
        self.assertEqual(bench.ABLATIONS["layout"].flags, ("--layout", "nhwc"))
        self.assertEqual(bench.flag_text("layout"), "--layout nhwc")
        self.assertEqual(bench.run_name("layout"), "layout-nhwc")
        self.assertEqual(bench.flag_text("graph"), "--no-cuda-graph")
        self.assertEqual(bench.run_name("graph"), "no-graph")  # the names of before

    def test_line_states_which_layout_is_faster(self):
        def line(nhwc_ms, nchw_ms):
            return bench.alternative_line("gpu b4096 tf32", "layout", nhwc_ms, nchw_ms, "nchw")
        head = "- gpu b4096 tf32, channels-last activations and filters (--layout nhwc): "
        # 10 / 8 = 1.25: NHWC faster
        self.assertEqual(line(8.0, 10.0), head + "8.00 ms/epoch against 10.0 with NCHW: NHWC "
                         "is 1.25x faster")
        # 12.5 / 10 = 1.25: NHWC slower, stated as a ratio above 1, never 0.80x
        self.assertEqual(line(12.5, 10.0), head + "12.5 ms/epoch against 10.0 with NCHW: NHWC "
                         "is 1.25x slower")
        # 30 / 12 = 2.50
        self.assertEqual(line(30.0, 12.0), head + "30.0 ms/epoch against 12.0 with NCHW: NHWC "
                         "is 2.50x slower")
        self.assertEqual(line(4.0, 14.0), head + "4.00 ms/epoch against 14.0 with NCHW: NHWC "
                         "is 3.50x faster")
        # 10.02 / 10 = 1.002: neither is faster to the two decimals shown
        self.assertEqual(line(10.02, 10.0), head + "10.0 ms/epoch against 10.0 with NCHW: NHWC "
                         "and NCHW take the same time (1.00x)")

    def test_schema(self):
        self.assertEqual(bl.LAYOUTS, ("nchw", "nhwc"))
        self.assertEqual(bl.validate_result(sample_result(layout="nhwc")), [])
        for bad in ("NHWC", "nhcw", "", None, 1):
            self.assertEqual(bl.validate_result(sample_result(layout=bad)),
                             ["layout %r is not one of 'nchw', 'nhwc'" % (bad,)], repr(bad))
        # cuvae on the GPU must state its layout ...
        obj = sample_result()
        del obj["layout"]
        self.assertEqual(bl.validate_result(obj), [
            "missing key 'layout' (cuvae on the GPU states its convolution layout)"])
        # ... cuvae on the CPU (no --layout there) and PyTorch need not
        self.assertEqual(bl.validate_result(dict(obj, device_kind="cpu", sgemm_gflops=61.5,
                                                 sgemm_what="oneDNN sgemm")), [])
        self.assertEqual(bl.validate_result(dict(obj, system="pytorch-eager")), [])
        self.assertTrue(bl.validate_result(dict(obj, system="pytorch-eager", layout="NCHW")))

    def test_run_must_report_the_asked_layout(self):
        obj = sample_result()  # reports nchw
        self.assertEqual(bench.check_matches(obj, 128, "fp32", 60000, [("layout", "nhwc")]),
                         ["ran layout nchw, asked nhwc"])
        self.assertEqual(bench.check_matches(dict(obj, layout="nhwc"), 128, "fp32", 60000,
                                             [("layout", "nhwc")]), [])
        self.assertEqual(bench.check_matches(obj, 128, "fp32"), [])  # nothing asked


# ------------------------------------------------------------------------------------------
# bench.py end to end, with stand-ins
# ------------------------------------------------------------------------------------------
FAKE_RESULT = r'''
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["bench"]:
    args = args[1:]
    if "--help" in args:
        print("usage: cuvae bench ..."); sys.exit(0)
def flag(name, default=None):
    return args[args.index(name) + 1] if name in args else default
system = os.environ.get("FAKE_SYSTEM", "cuvae")
mode = flag("--mode")
if mode:
    system = "pytorch-eager" if mode == "eager" else "pytorch-compile-" + mode
if mode == "max-autotune" and os.environ.get("FAKE_SKIP_AUTOTUNE"):
    json.dump({"system": system, "skipped": "not here"}, open(flag("--json"), "w"))
    sys.exit(77)
if mode == "reduce-overhead" and os.environ.get("FAKE_FAIL_RO"):
    print("Traceback: something broke"); sys.exit(1)
precision = "bf16" if "--bf16" in args else "tf32" if "--tf32" in args else "fp32"
if precision == "bf16" and ("--tf32" in args or "--no-fusion" in args):
    print("error: --bf16 with --tf32 or --no-fusion"); sys.exit(2)  # as cuvae refuses them
key = "FAKE_LOSS_" + system.replace("-", "_")
loss = float(os.environ.get(key + "_" + precision, os.environ.get(key, "160.0")))
ms = {"cuvae": 10.0, "pytorch-eager": 80.0}.get(system, 20.0)
graph = system == "cuvae" and "--no-cuda-graph" not in args and not os.environ.get("FAKE_NO_GRAPH")
if system == "cuvae" and "--no-cuda-graph" in args:
    ms = 15.0
if system == "cuvae" and "--no-fusion" in args:
    ms = 10.5
if system == "cuvae" and "--layout" in args:
    if flag("--device") == "cpu":
        print("error: --layout is a GPU setting"); sys.exit(2)
    if flag("--layout") == "nhwc":
        ms = float(os.environ.get("FAKE_NHWC_MS", "8.0"))
        loss = float(os.environ.get("FAKE_NHWC_LOSS", loss))
if precision == "bf16":
    ms *= 0.8  # cuvae 8 ms, eager 64, compile 16
device = flag("--device")
if device == "cpu-ref" and os.environ.get("FAKE_IGNORE_REF"):
    device = "cpu"  # a cuvae that runs its fast engine whatever --device says
cpu = device in ("cpu", "cpu-ref")
if cpu:
    # on the CPU, over 2,048 images: fast engine 1,280 images/s, reference 200, eager 125,
    # each torch.compile mode 250
    ms = {"cpu": float(os.environ.get("FAKE_CPU_FAST_MS", "1600")), "cpu-ref": 10240.0}[device] \
        if system == "cuvae" else {"pytorch-eager": 16384.0}.get(system, 8192.0)
    if device == "cpu-ref":
        loss = float(os.environ.get("FAKE_REF_LOSS", loss))
        if os.environ.get("FAKE_FAIL_REF"):
            print("error: the reference broke"); sys.exit(1)
warm, timed = int(flag("--warmup-epochs")), int(flag("--epochs"))
limit = int(flag("--limit")) or 60000
epochs = [dict(epoch=i + 1, warmup=i < warm, ms=ms, loss=loss, recon=loss - 5, kl=5.0)
          for i in range(warm + timed)]
names = {"cpu": "cpu (oneDNN 9.9.9, 2 OpenMP threads)" if system == "cuvae"
         else "cpu (Fake CPU, 2 threads)",
         "cpu-ref": "cpu-ref (the reference model, 2 OpenMP threads)"}
obj = dict(system=system, version="0.1.0", device=names.get(device, "Fake GPU"),
           device_kind=device,
           batch_size=int(flag("--batch-size")),
           precision=os.environ.get("FAKE_PRECISION", precision), latent_dim=2, images=limit,
           seed=int(flag("--seed")), warmup_epochs=warm, epochs=epochs,
           ms_per_epoch_median=ms, images_per_s=limit / ms * 1e3,
           peak_memory_bytes=100 << 20, peak_memory_what=system + " memory",
           final_loss=loss, final_recon=loss - 5, final_kl=5.0)
if system != "cuvae":
    obj.update(torch_version="9.9", cuda_version="12.9", cudnn_version=91000)
else:
    obj.update(cuda_graph=graph)
    # cuvae on the CPU: the SGEMM rate it measured; FAKE_SGEMM_GFLOPS "": a cuvae without it
    sgemm = os.environ.get("FAKE_SGEMM_GFLOPS", "80.0" if device == "cpu" else "79.5")
    if cpu and sgemm:
        obj.update(sgemm_gflops=float(sgemm), sgemm_what="fake sgemm, 2048 x 2048 x 2048, "
                   "median of 5, on 2 OpenMP threads")
    # the layout it ran; FAKE_LAYOUT: a cuvae that runs (and reports) another one, "" none
    layout = os.environ.get("FAKE_LAYOUT", flag("--layout", "nchw"))
    if layout:
        obj.update(layout=layout)
json.dump(obj, open(flag("--json"), "w"))
'''

FAKE_GEMM = r'''
import json, os, sys
args = sys.argv[1:]
if os.environ.get("FAKE_GEMM_FAIL"):
    print("no torch here"); sys.exit(1)
bf16 = os.environ.get("FAKE_BF16_TFLOPS", "800")
obj = {"device": "Fake GPU", "n": 8192, "reps": 10, "fp32_tflops": 50.0, "tf32_tflops": 400.0,
       "bf16_tflops": float(bf16) if bf16 != "null" else None, "torch_version": "9.9"}
if args[args.index("--device") + 1] == "cpu":
    # a generic BLAS: 36 GFLOP/s, below the fast engine's 51 GFLOP/s of model work
    obj.update(device="cpu (Fake CPU, 2 threads)", n=2048, fp32_tflops=0.036, tf32_tflops=None,
               bf16_tflops=None, blas="generic")
json.dump(obj, open(args[args.index("--json") + 1], "w"))
'''


class EndToEnd(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        self.cuvae = os.path.join(d, "cuvae")
        with open(self.cuvae, "w") as f:
            f.write("#!%s\n%s" % (sys.executable, FAKE_RESULT))
        os.chmod(self.cuvae, os.stat(self.cuvae).st_mode | stat.S_IXUSR)
        self.torch_script = os.path.join(d, "fake_torch.py")
        with open(self.torch_script, "w") as f:
            f.write(FAKE_RESULT)
        self.gemm_script = os.path.join(d, "fake_gemm.py")
        with open(self.gemm_script, "w") as f:
            f.write(FAKE_GEMM)
        self.out = os.path.join(d, "BENCHMARKS.md")
        with open(self.out, "w") as f:
            f.write("# Benchmarks\n\nintro stays\n\n<!-- bench:gpu:start -->\nnot yet run\n"
                    "<!-- bench:gpu:end -->\n\n## Optimisations\n\nkept too\n")

    def tearDown(self):
        self.tmp.cleanup()

    def bench(self, *extra, env=None):
        cmd = [sys.executable, os.path.join(HERE, "bench.py"), "--cuvae", self.cuvae,
               "--pytorch-script", self.torch_script, "--gemm-script", self.gemm_script,
               "--out", self.out, "--work-dir", os.path.join(self.tmp.name, "work"),
               "--epochs", "2", "--warmup", "1"] + list(extra)
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)
        with open(self.out, encoding="utf-8") as f:
            return p, f.read()

    def test_gpu_table(self):
        p, text = self.bench("--batches", "128,4096", env={"FAKE_SKIP_AUTOTUNE": "1"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("intro stays", text)
        self.assertIn("## Optimisations\n\nkept too", text)
        self.assertNotIn("not yet run", text)
        self.assertIn("### GPU:", text)
        row = [l for l in text.splitlines() if l.startswith("| gpu b4096 tf32 |")][0]
        cells = [c.strip() for c in row.strip("|").split("|")]
        # cuvae 10 ms, eager 80 ms, best compile 20 ms (default: first of the equal ones)
        self.assertEqual(cells[1:7], ["10.0", "80.0", "20.0 (default)", "8.00x", "2.00x",
                                      "6.00M"])
        # 39,965,568 FLOP x 6e6 images/s / 400e12 = 59.9%
        self.assertEqual(cells[7], "59.9%")
        self.assertEqual(cells[10], "agree")
        self.assertIn("skipped: not here", text)
        self.assertIn("target 5x: met", text)
        self.assertIn("of the TF32 floor (target 30%: met)", text)
        # 60,000 images in 10 ms: 6e6 images/s; the Keras schedule 2.1e6 images in 0.35 s
        self.assertIn("a 60,000-image epoch 10.0 ms at this rate (target 60 ms: met); the Keras "
                      "schedule, 30 epochs x 70,000 images, 0.35 s (target 2 s: met)", text)
        # the ablations: cuvae --no-cuda-graph at 15 ms, --no-fusion at 10.5, against 10
        self.assertIn("- gpu b128 fp32, CUDA graph replay of the step: 15.0 ms/epoch without "
                      "it (--no-cuda-graph), 10.0 with it: 1.50x", text)
        self.assertIn("- gpu b4096 tf32, fused kernels (output bias + loss; latent heads + "
                      "reparameterization): 10.5 ms/epoch without it (--no-fusion), 10.0 with "
                      "it: 1.05x", text)
        self.assertIn("| gpu b128 fp32 | cuvae --no-cuda-graph | 15.0 |", text)
        self.assertNotIn("not replayed from a CUDA graph", text)
        # the CPU reference runs on the CPU only; the GPU floor is still torch.mm's
        self.assertFalse(any("reference" in n for n in os.listdir(
            os.path.join(self.tmp.name, "work"))))
        self.assertNotIn("cpu-ref", text)
        self.assertNotIn("SGEMM", text)
        self.assertNotIn(self.tmp.name, text)  # no machine paths in the written file
        self.assertNotIn("--work-dir", text)
        self.assertIn("- Command: `tools/bench/bench.py --cuvae '<cuvae>'", text)
        # a second run replaces the section instead of adding one
        p, text2 = self.bench("--batches", "128", "--precisions", "fp32", "--modes", "eager")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(text2.count("<!-- bench:gpu:start -->"), 1)
        self.assertNotIn("gpu b4096", text2)
        self.assertIn("intro stays", text2)

    def test_graph_capture_failure_and_no_ablation(self):
        p, text = self.bench("--batches", "128", "--precisions", "fp32", "--modes", "eager",
                             "--ablations", "none", env={"FAKE_NO_GRAPH": "1"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("gpu b128 fp32 cuvae: the step was not replayed from a CUDA graph", text)
        self.assertNotIn("cuvae --no-cuda-graph", text)
        self.assertNotIn("without it", text)

    def test_one_ablation(self):
        p, text = self.bench("--batches", "128", "--precisions", "fp32", "--modes", "eager",
                             "--ablations", "fusion")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("cuvae --no-fusion", text)
        self.assertNotIn("cuvae --no-cuda-graph", text)
        p, _ = self.bench("--ablations", "fast-math")
        self.assertEqual(p.returncode, 2)

    def test_layout_ablation(self):
        # every GPU precision gets a --layout nhwc run by default; the stand-in cuvae takes
        # 8 ms with --layout nhwc against 10 in NCHW (x0.8 in bf16: 6.4 against 8)
        p, text = self.bench("--batches", "128", "--modes", "eager")
        self.assertEqual(p.returncode, 0, p.stderr)
        work = os.path.join(self.tmp.name, "work")
        for precision in ("fp32", "tf32", "bf16"):
            tag = "gpu-b128-%s" % precision
            with open(os.path.join(work, "cuvae-layout-nhwc-%s.log" % tag),
                      encoding="utf-8") as f:
                self.assertIn(" --layout nhwc ", f.readline(), precision)
            with open(os.path.join(work, "cuvae-layout-nhwc-%s.json" % tag),
                      encoding="utf-8") as f:
                self.assertEqual(json.load(f)["layout"], "nhwc")
            with open(os.path.join(work, "cuvae-%s.log" % tag), encoding="utf-8") as f:
                self.assertNotIn("--layout", f.readline())  # the row's run: the default
            self.assertIn("| gpu b128 %s | cuvae --layout nhwc |" % precision, text)
        self.assertIn("- Alternative settings, each in a cuvae run of its own", text)
        # 10 / 8 = 8 / 6.4 = 1.25
        for cfg, nhwc, nchw in (("fp32", "8.00", "10.0"), ("tf32", "8.00", "10.0"),
                                ("bf16", "6.40", "8.00")):
            self.assertIn("\n  - gpu b128 %s, channels-last activations and filters (--layout "
                          "nhwc): %s ms/epoch against %s with NCHW: NHWC is 1.25x faster\n"
                          % (cfg, nhwc, nchw), text)
        # not an optimisation switched off: never worded as one
        self.assertNotIn("without it (--layout nhwc)", text)
        # its loss checked against the row's run (the same seed)
        self.assertIn("| gpu b128 fp32 | cuvae --layout nhwc | 8.00 | 7.50M | 300 | 599.5% | "
                      "100 MiB | 160.00 | agree (0.00, tol 3.20) |", text)
        # NHWC slower: 12.5 against 10 (fp32), 10 against 8 (bf16): 1.25x slower
        p, text = self.bench("--batches", "128", "--precisions", "fp32,bf16", "--modes",
                             "eager", "--ablations", "layout", env={"FAKE_NHWC_MS": "12.5"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("(--layout nhwc): 12.5 ms/epoch against 10.0 with NCHW: NHWC is 1.25x "
                      "slower", text)
        self.assertIn("(--layout nhwc): 10.0 ms/epoch against 8.00 with NCHW: NHWC is 1.25x "
                      "slower", text)
        self.assertNotIn("cuvae --no-cuda-graph", text)
        self.assertNotIn("Optimisations, each switched off", text)

    def test_layout_reported_must_match(self):
        # a cuvae that ignores --layout nhwc (reports nchw) is caught, and no ratio is given
        p, text = self.bench("--batches", "128", "--precisions", "fp32", "--modes", "eager",
                             "--ablations", "layout", env={"FAKE_LAYOUT": "nchw"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("- Problem: gpu b128 fp32 cuvae --layout nhwc: ran layout nchw, asked "
                      "nhwc", text)
        self.assertNotIn("NHWC is", text)
        # a cuvae whose default is already NHWC: nothing to compare, said so
        p, text = self.bench("--batches", "128", "--precisions", "fp32", "--modes", "eager",
                             "--ablations", "layout", env={"FAKE_LAYOUT": "nhwc"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("gpu b128 fp32 cuvae --layout nhwc: the row's own run already used "
                      "layout nhwc: nothing to compare", text)
        self.assertNotIn("NHWC is", text)
        # an NHWC run that trains something else (its loss 40 nats off the NCHW run's, same
        # seed) gives no ratio: its time would say nothing about the layout
        p, text = self.bench("--batches", "128", "--precisions", "fp32", "--modes", "eager",
                             "--ablations", "layout", env={"FAKE_NHWC_LOSS": "200.0"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(self.row(text, "gpu b128 fp32")[10], "agree")  # PyTorch's column
        self.assertIn("- Problem: gpu b128 fp32 cuvae --layout nhwc final loss 200.000 vs "
                      "cuvae 160.000: DISAGREE (|diff| 40.000, tolerance 4.000)", text)
        self.assertIn("| gpu b128 fp32 | cuvae --layout nhwc | 8.00 | 7.50M | 300 | 599.5% | "
                      "100 MiB | 200.00 | DISAGREE (40.00, tol 4.00) |", text)
        self.assertNotIn("NHWC is", text)
        # a GPU cuvae result without "layout" breaks the schema
        p, text = self.bench("--batches", "128", "--precisions", "fp32", "--modes", "eager",
                             "--ablations", "none", env={"FAKE_LAYOUT": ""})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("missing key 'layout'", text)

    def test_cpu_has_no_layout_run(self):
        p, text = self.bench("--device", "cpu", "--ablations", "layout")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("are GPU settings: none on the CPU", p.stderr)
        work = os.path.join(self.tmp.name, "work")
        self.assertFalse(any("layout" in n for n in os.listdir(work)), os.listdir(work))
        with open(os.path.join(work, "cuvae-cpu-b128-fp32.log"), encoding="utf-8") as f:
            self.assertNotIn("--layout", f.read())
        self.assertNotIn("NHWC", text)

    FAST, REF = "cuvae --device cpu (fast engine)", "cuvae --device cpu-ref (reference)"

    @staticmethod
    def cpu_rows(text, cfg="cpu b128 fp32"):
        """{system: the cells after it} of a CPU configuration's rows, in the table's order."""
        rows = {}
        for line in text.splitlines():
            if line.startswith("| %s |" % cfg):
                cells = [c.strip() for c in line.strip("|").split("|")]
                rows[cells[1]] = cells[2:]
        return rows

    def test_cpu_rows_and_sgemm_floor(self):
        p, text = self.bench("--device", "cpu")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("| configuration | system | images/s | ms/epoch | vs PyTorch eager | "
                      "model GFLOP/s | % of FLOP floor | peak memory | final loss | loss vs "
                      "fast engine (\\|diff\\|, tol) |", text)
        rows = self.cpu_rows(text)
        self.assertEqual(list(rows), [self.FAST, self.REF, "PyTorch eager"])
        # 2,048 images: the fast engine in 1.6 s = 1,280 images/s, 39,965,568 FLOP x 1,280 =
        # 51.2 GFLOP/s, over the 80 GFLOP/s SGEMM its run measured = 63.9% (over torch.mm's
        # 36 GFLOP/s it would read 142.1%); PyTorch eager 16.384 s: 10.24x
        self.assertEqual(rows[self.FAST], ["1280", "1600.0", "10.24x", "51.2", "63.9%",
                                           "100 MiB", "160.00", "-"])
        # the reference, 10.24 s: 200 images/s, 8.0 GFLOP/s = 10.0% of the same 80 GFLOP/s
        self.assertEqual(rows[self.REF], ["200", "10240.0", "1.60x", "8.0", "10.0%",
                                          "100 MiB", "160.00", "agree (0.00, tol 3.20)"])
        self.assertEqual(rows["PyTorch eager"], ["125", "16384.0", "1.00x", "5.0", "6.2%",
                                                 "100 MiB", "160.00",
                                                 "agree (0.00, tol 3.20)"])
        self.assertNotIn("142", text)
        # the notes name the denominator and its value, and give torch.mm's apart
        self.assertIn("over the processor's single-precision GEMM rate as cuvae measured it "
                      "with the library its fast engine links", text)
        self.assertIn("\n  - cpu b128 fp32: 80.0 GFLOP/s (fake sgemm, 2048 x 2048 x 2048, "
                      "median of 5, on 2 OpenMP threads); the reference run's own "
                      "measurement: 79.5 GFLOP/s\n", text)
        self.assertIn("\n- PyTorch's own BLAS, for comparison (not the FLOP floor): torch.mm "
                      "fp32 2048^3, median of 10, BLAS generic: 36.0 GFLOP/s "
                      "(tools/bench/gemm_rate.py in this run).\n", text)
        self.assertIn("the reference's and PyTorch's final losses are judged against the fast "
                      "engine's", text)
        # the targets, measured
        self.assertIn("\n  - cpu b128 fp32: the fast engine trains at 1,280 images/s (target "
                      "1,000: met; goal 1,500: missed); 10.24x PyTorch eager's 125 images/s in "
                      "this run (target 8x: met); 6.40x the reference\n", text)
        self.assertIn("- cpu b128 fp32: the fast engine trains at", p.stdout)  # printed too
        self.assertIn("cuvae reports 'cpu (oneDNN 9.9.9, 2 OpenMP threads)' (fast engine) and "
                      "'cpu-ref (the reference model, 2 OpenMP threads)' (reference), PyTorch "
                      "'cpu (Fake CPU, 2 threads)'", text)
        # one table on the CPU, none of the GPU's notes
        for gpu_only in ("Every run:", "cuDNN algorithms", "best torch.compile", "TF32"):
            self.assertNotIn(gpu_only, text)
        # each row its own process, with its own --device
        work = os.path.join(self.tmp.name, "work")
        for log, device in (("cuvae-cpu-b128-fp32.log", "cpu"),
                            ("cuvae-reference-cpu-b128-fp32.log", "cpu-ref"),
                            ("pytorch-eager-cpu-b128-fp32.log", "cpu")):
            with open(os.path.join(work, log), encoding="utf-8") as f:
                self.assertIn(" --device %s " % device, f.readline(), log)

    def test_cpu_targets(self):
        # 2,048 images in 4.096 s: 500 images/s, 4x PyTorch eager: both missed
        p, text = self.bench("--device", "cpu", "--batches", "128,1024",
                             env={"FAKE_CPU_FAST_MS": "4096"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("\n  - cpu b128 fp32: the fast engine trains at 500 images/s (target "
                      "1,000: missed; goal 1,500: missed); 4.00x PyTorch eager's 125 images/s "
                      "in this run (target 8x: missed); 2.50x the reference\n", text)
        # stated at batch 128: another batch size is measured, not judged
        self.assertIn("\n  - cpu b1024 fp32: the fast engine trains at 500 images/s; 4.00x "
                      "PyTorch eager's 125 images/s in this run; 2.50x the reference (not "
                      "judged: the targets are stated at batch 128)\n", text)
        self.assertEqual(list(self.cpu_rows(text, "cpu b1024 fp32")),
                         [self.FAST, self.REF, "PyTorch eager"])
        # 1 s: 2,048 images/s, 16.38x: all met
        p, text = self.bench("--device", "cpu", env={"FAKE_CPU_FAST_MS": "1000"})
        self.assertIn("2,048 images/s (target 1,000: met; goal 1,500: met); 16.38x PyTorch "
                      "eager's 125 images/s in this run (target 8x: met)", text)
        # no PyTorch eager run: no speed-up, and the 8x target is not judged
        p, text = self.bench("--device", "cpu", "--modes", "")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(list(self.cpu_rows(text)), [self.FAST, self.REF])
        self.assertEqual(self.cpu_rows(text)[self.FAST][2], "-")
        self.assertIn("(target 1,000: met; goal 1,500: missed); PyTorch eager not measured: "
                      "the 8x target not judged; 6.40x the reference\n", text)

    def test_cpu_without_sgemm_rate(self):
        # a cuvae whose CPU runs do not report the SGEMM rate: both runs are refused, with the
        # reason, and no row gets a floor (never torch.mm's in its place)
        p, text = self.bench("--device", "cpu", env={"FAKE_SGEMM_GFLOPS": ""})
        self.assertEqual(p.returncode, 1, p.stderr)
        rows = self.cpu_rows(text)
        self.assertEqual(rows[self.FAST], ["failed"] + ["-"] * 7)
        self.assertEqual(rows[self.REF], ["failed"] + ["-"] * 7)
        self.assertEqual(rows["PyTorch eager"][4], "-")
        for name in (self.FAST, self.REF):
            self.assertRegex(text, "- Problem: cpu b128 fp32 %s: bad result JSON [^\n]*: "
                             "missing key 'sgemm_gflops' \\(cuvae on the CPU reports the SGEMM "
                             "rate it measured: the FLOP-floor denominator\\); missing key "
                             "'sgemm_what'" % name.replace("(", "\\(").replace(")", "\\)"))
        self.assertIn("\n  - cpu b128 fp32: not measured (no result from the fast engine's "
                      "run): no floor\n", text)
        self.assertIn("\n  - cpu b128 fp32: not measured (no result from the fast engine's "
                      "run)\n", text)
        # torch.mm's rate is still reported, as PyTorch's own BLAS
        self.assertIn("BLAS generic: 36.0 GFLOP/s", text)

    def test_cpu_reference_checked(self):
        # its loss is judged against the fast engine's
        p, text = self.bench("--device", "cpu", env={"FAKE_REF_LOSS": "175.0"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(self.cpu_rows(text)[self.REF][7], "DISAGREE (15.00, tol 3.50)")
        self.assertIn("- Problem: cpu b128 fp32 cuvae --device cpu-ref (reference) final loss "
                      "175.000 vs the fast engine 160.000: DISAGREE (|diff| 15.000, tolerance "
                      "3.500)", text)
        # a failed reference fails the bench; the other rows are still there
        p, text = self.bench("--device", "cpu", env={"FAKE_FAIL_REF": "1"})
        self.assertEqual(p.returncode, 1, p.stderr)
        rows = self.cpu_rows(text)
        self.assertEqual(rows[self.REF], ["failed"] + ["-"] * 7)
        self.assertEqual(rows[self.FAST][:5], ["1280", "1600.0", "10.24x", "51.2", "63.9%"])
        self.assertIn("- Problem: cpu b128 fp32 cuvae --device cpu-ref (reference): exit 1: "
                      "error: the reference broke", text)
        self.assertIn("(target 8x: met)\n", text)  # no reference ratio
        self.assertNotIn("measurement: 79.5", text)
        # a cuvae that runs its fast engine when asked for the reference is caught
        p, text = self.bench("--device", "cpu", env={"FAKE_IGNORE_REF": "1"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("- Problem: cpu b128 fp32 cuvae --device cpu-ref (reference): ran "
                      "device_kind cpu, asked cpu-ref", text)

    def test_cpu_without_torch_mm_rate(self):
        # gemm_rate.py is only PyTorch's BLAS on the CPU: the floor does not need it
        p, text = self.bench("--device", "cpu", env={"FAKE_GEMM_FAIL": "1"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.cpu_rows(text)[self.FAST][4], "63.9%")
        self.assertIn("- PyTorch's own BLAS, for comparison (not the FLOP floor): not measured "
                      "(tools/bench/gemm_rate.py did not finish: see its log).", text)

    def test_disagreement_and_failure(self):
        p, text = self.bench("--batches", "128", "--precisions", "fp32",
                             env={"FAKE_LOSS_pytorch_eager": "170.0", "FAKE_FAIL_RO": "1"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("DISAGREE", text)
        self.assertIn("PyTorch reduce-overhead: exit 1", text)

    def test_cpu_section_and_no_write(self):
        p, text = self.bench("--device", "cpu")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("<!-- bench:cpu:start -->", text)
        self.assertIn("### CPU (no GPU)", text)
        self.assertIn("not yet run", text)  # the GPU section is untouched
        before = text
        p, text = self.bench("--device", "cpu", "--no-write")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(text, before)
        self.assertIn("| cpu b128 fp32 |", p.stdout)

    @staticmethod
    def row(text, cfg):
        line = [l for l in text.splitlines() if l.startswith("| %s |" % cfg)][0]
        return [c.strip() for c in line.strip("|").split("|")]

    def test_bf16_rows_targets_and_accuracy_cost(self):
        # the GPU default precisions include bf16; the stand-ins take 0.8 x the time in bf16
        p, text = self.bench("--batches", "128,4096", "--modes", "eager,default",
                             env={"FAKE_LOSS_cuvae_bf16": "160.4",
                                  "FAKE_LOSS_pytorch_eager_bf16": "161.0",
                                  "FAKE_LOSS_pytorch_compile_default_bf16": "161.5"})
        self.assertEqual(p.returncode, 0, p.stderr)
        cells = self.row(text, "gpu b128 bf16")
        # cuvae 8 ms, eager 64, compile 16; 60,000 images / 8 ms = 7.5M images/s;
        # 39,965,568 FLOP x 7.5e6 / 800e12 (the bf16 GEMM rate) = 37.5%
        self.assertEqual(cells[1:8], ["8.00", "64.0", "16.0 (default)", "8.00x", "2.00x",
                                      "7.50M", "37.5%"])
        self.assertEqual(cells[9], "160.40 / 161.00 / 161.50")
        self.assertEqual(cells[10], "agree")
        self.assertEqual(self.row(text, "gpu b4096 tf32")[7], "59.9%")  # still the TF32 rate
        # each system ran with --bf16 (cuvae bench and torch_vae.py take the same flag)
        work = os.path.join(self.tmp.name, "work")
        for log in ("cuvae-gpu-b128-bf16.log", "pytorch-eager-gpu-b128-bf16.log"):
            with open(os.path.join(work, log), encoding="utf-8") as f:
                self.assertIn(" --bf16 ", f.readline(), log)
        # the accuracy cost, from the runs' own final losses: 160.4 vs 160 = +0.25%;
        # 1 warm-up + 2 timed epochs; speed 10 / 8 ms = 1.25x; PyTorch 161 vs 160 = +0.62%
        for batch in (128, 4096):
            self.assertIn("  - accuracy cost of --bf16 at batch %d: final loss 160.40 vs fp32 "
                          "160.00 (+0.40 nats, +0.25%%), 3 epochs; speed: 8.00 ms/epoch vs "
                          "fp32 10.0, 1.25x; PyTorch eager, bf16 autocast: 161.00 vs fp32 "
                          "160.00 (+1.00 nats, +0.62%%)\n" % batch, text)
        self.assertIn("bf16 against bf16, as fp32 against fp32", text)
        # targets: bf16 rows are reported beside them, never met or missed
        targets = {l.split(":")[0].split("(")[0].strip("- ").strip(): l
                   for l in text.splitlines() if l.startswith("  - gpu b")}
        bf16 = targets["gpu b128 bf16"]
        self.assertIn("not counted towards the targets", bf16)
        self.assertIn("vs eager 8.00x; vs best compile 2.00x; 37.5% of the bf16 floor", bf16)
        for word in ("target", "met", "missed", "60,000-image epoch"):
            self.assertNotIn(word, bf16.split("):", 1)[1])
        self.assertNotIn("TF32 floor", targets["gpu b4096 bf16"])
        self.assertIn("target 60 ms: met", targets["gpu b128 fp32"])
        self.assertIn("of the TF32 floor (target 30%: met)", targets["gpu b4096 tf32"])
        # --bf16 needs the fused kernels: no --no-fusion run for bf16 (the stand-in would
        # refuse it, exit 2, and the bench would fail); --no-cuda-graph still runs
        self.assertIn("| gpu b128 bf16 | cuvae --no-cuda-graph | 12.0 |", text)
        self.assertNotIn("| gpu b128 bf16 | cuvae --no-fusion", text)
        self.assertIn("not run: --no-fusion with --bf16 (--bf16 needs the fused kernels)", text)
        self.assertIn("cuvae --no-fusion not run: --bf16 needs the fused kernels", p.stderr)
        self.assertIn("accuracy cost of --bf16 at batch 128", p.stdout)  # printed too

    def test_bf16_losses_judged_against_bf16(self):
        # cuvae --bf16 ends 15 nats above fp32; PyTorch's bf16 run ends where fp32 does: the
        # bf16 row disagrees (|175 - 160| > 3.5), judged against cuvae's bf16 loss
        p, text = self.bench("--batches", "128", "--modes", "eager", "--ablations", "none",
                             env={"FAKE_LOSS_cuvae_bf16": "175.0"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(self.row(text, "gpu b128 fp32")[10], "agree")
        self.assertEqual(self.row(text, "gpu b128 bf16")[10], "DISAGREE")
        self.assertIn("gpu b128 bf16 PyTorch eager final loss 160.000 vs cuvae 175.000: "
                      "DISAGREE", text)
        self.assertIn("final loss 175.00 vs fp32 160.00 (+15.00 nats, +9.38%)", text)
        # both bf16 runs 15 nats up: they agree with each other, whatever fp32 says
        p, text = self.bench("--batches", "128", "--modes", "eager", "--ablations", "none",
                             env={"FAKE_LOSS_cuvae_bf16": "175.0",
                                  "FAKE_LOSS_pytorch_eager_bf16": "175.0"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.row(text, "gpu b128 bf16")[10], "agree")
        self.assertNotIn("DISAGREE", text)

    def test_bf16_without_its_gemm_rate_or_fp32_row(self):
        p, text = self.bench("--batches", "128", "--precisions", "bf16", "--modes", "eager",
                             env={"FAKE_BF16_TFLOPS": "null"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.row(text, "gpu b128 bf16")[7], "-")  # no bf16 rate, no floor
        self.assertNotIn("of the bf16 floor", text)
        self.assertNotIn("accuracy cost", text)  # no fp32 row to compare with
        self.assertNotIn("gpu b128 fp32", text)

    def test_precision_reported_must_match(self):
        # a cuvae that ignores --bf16 and trains in fp32 is caught
        p, text = self.bench("--batches", "128", "--precisions", "bf16", "--modes", "eager",
                             "--ablations", "none", env={"FAKE_PRECISION": "fp32"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("gpu b128 bf16 cuvae: ran fp32, asked bf16", text)

    def test_cpu_drops_gpu_precisions(self):
        p, text = self.bench("--device", "cpu", "--precisions", "fp32,bf16")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("bf16 mixed precision (cuvae --bf16) is GPU-only: dropping bf16 on the "
                      "CPU", p.stderr)
        self.assertIn("| cpu b128 fp32 |", text)
        self.assertNotIn("cpu b128 bf16", text)
        with open(os.path.join(self.tmp.name, "work", "cuvae-cpu-b128-fp32.log"),
                  encoding="utf-8") as f:
            self.assertNotIn("--bf16", f.read())
        p, text = self.bench("--device", "cpu", "--precisions", "bf16,tf32", "--no-write")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("dropping tf32 on the CPU", p.stderr)
        self.assertIn("dropping bf16 on the CPU", p.stderr)
        self.assertIn("| cpu b128 fp32 |", p.stdout)  # nothing left: fp32, as for tf32
        self.assertNotIn("cpu b128 bf16", p.stdout)
        for bad in ("fp16", "BF16"):
            p, _ = self.bench("--precisions", "fp32,%s" % bad)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("unknown precision %r" % bad, p.stderr)

    def test_errors(self):
        p, _ = self.bench("--cuvae", os.path.join(self.tmp.name, "missing"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("no cuvae binary", p.stderr)
        with open(self.out, "a") as f:
            f.write("<!-- bench:gpu:start -->\n")
        p, _ = self.bench()
        self.assertEqual(p.returncode, 2)
        self.assertIn("more than once", p.stderr)


def select(suite, torch_tests):
    """The tests of suite, flattened, that need PyTorch (torch_tests True) or do not."""
    out = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            out.addTests(select(test, torch_tests))
        else:
            method = getattr(test, test.id().rsplit(".", 1)[-1])
            if getattr(method, "needs_torch", False) == torch_tests:
                out.addTest(test)
    return out


def main(argv):
    if argv not in ([], ["--torch"]):
        print("usage: test_bench.py [--torch]", file=sys.stderr)
        return 2
    torch_tests = argv == ["--torch"]
    if torch_tests:
        try:
            importlib.import_module("torch")
        except ImportError as e:
            print("skipped: PyTorch cannot be imported (%s: %s)" % (type(e).__name__, e))
            return 77
    tests = select(unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__]),
                   torch_tests)
    result = unittest.TextTestRunner(verbosity=2).run(tests)
    if result.skipped:
        print("FAIL: %d test(s) skipped: a skip here would pass for nothing" % len(result.skipped))
        return 1
    if result.testsRun == 0:
        print("FAIL: no test ran")
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
