#!/usr/bin/env python3
"""Tests of the benchmark driver's pure parts (benchlib.py) and of bench.py end to end with
stand-in programs for cuvae, the PyTorch benchmark and the GEMM probe (no GPU, no data).

  python3 tools/bench/test_bench.py     # exit status 0 when every test passes

The layer-shape test also runs the real PyTorch module when torch is importable.
"""

import importlib.util
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

HAVE_TORCH = importlib.util.find_spec("torch") is not None


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

    @unittest.skipUnless(HAVE_TORCH, "PyTorch not importable")
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
        "batch_size": 128, "precision": "fp32", "algo": "deterministic", "latent_dim": 2,
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
        self.assertTrue(problems(precision="bf16"))
        self.assertTrue(problems(ms_per_epoch_median=0))
        self.assertTrue(problems(warmup_epochs=2))
        self.assertTrue(problems(epochs=[{"epoch": 1, "warmup": True, "ms": 1.0, "loss": 1.0,
                                          "recon": 1.0, "kl": 0.0}], warmup_epochs=1))
        self.assertTrue(problems(epochs=[{"epoch": 1, "warmup": False, "ms": 1.0}]))
        self.assertTrue(bl.validate_result([1, 2]))

    def test_median(self):
        self.assertEqual(bl.median([3, 1, 2]), 2)
        self.assertEqual(bl.median([4, 1, 2, 3]), 2.5)


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
loss = float(os.environ.get("FAKE_LOSS_" + system.replace("-", "_"), "160.0"))
ms = {"cuvae": 10.0, "pytorch-eager": 80.0}.get(system, 20.0)
graph = system == "cuvae" and "--no-cuda-graph" not in args and not os.environ.get("FAKE_NO_GRAPH")
if system == "cuvae" and "--no-cuda-graph" in args:
    ms = 15.0
if system == "cuvae" and "--no-fusion" in args:
    ms = 10.5
warm, timed = int(flag("--warmup-epochs")), int(flag("--epochs"))
limit = int(flag("--limit")) or 60000
epochs = [dict(epoch=i + 1, warmup=i < warm, ms=ms, loss=loss, recon=loss - 5, kl=5.0)
          for i in range(warm + timed)]
obj = dict(system=system, version="0.1.0", device="Fake GPU", device_kind=flag("--device"),
           batch_size=int(flag("--batch-size")),
           precision="tf32" if "--tf32" in args else "fp32", latent_dim=2, images=limit,
           seed=int(flag("--seed")), warmup_epochs=warm, epochs=epochs,
           ms_per_epoch_median=ms, images_per_s=limit / ms * 1e3,
           peak_memory_bytes=100 << 20, peak_memory_what=system + " memory",
           final_loss=loss, final_recon=loss - 5, final_kl=5.0)
if system != "cuvae":
    obj.update(torch_version="9.9", cuda_version="12.9", cudnn_version=91000)
else:
    obj.update(cuda_graph=graph)
json.dump(obj, open(flag("--json"), "w"))
'''

FAKE_GEMM = r'''
import json, sys
args = sys.argv[1:]
json.dump({"device": "Fake GPU", "n": 8192, "reps": 10, "fp32_tflops": 50.0,
           "tf32_tflops": 400.0, "torch_version": "9.9"},
          open(args[args.index("--json") + 1], "w"))
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

    def test_errors(self):
        p, _ = self.bench("--cuvae", os.path.join(self.tmp.name, "missing"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("no cuvae binary", p.stderr)
        with open(self.out, "a") as f:
            f.write("<!-- bench:gpu:start -->\n")
        p, _ = self.bench()
        self.assertEqual(p.returncode, 2)
        self.assertIn("more than once", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
