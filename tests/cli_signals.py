#!/usr/bin/env python3
"""SIGINT and SIGTERM in every phase of `cuvae train`, and during eval, encode and a picture.

Each case starts cuvae on a pseudo-terminal (so that the progress lines a user watches are
there), waits for the point that marks its phase -- a line on the terminal, or a file the
process holds open (/proc/PID/fd) -- sends the signal once and checks:
  * the process exits with 128 + the signal (130 for SIGINT, 143 for SIGTERM) within
    kExitLimit seconds of the signal;
  * its last words say what was stopped (per phase: before training, in an epoch after a step,
    after an epoch, the final pictures; for the other commands, "stopped before the end");
  * no temporary file (*.tmp.<pid>) is left anywhere it writes, and a result file
    (--json, --csv, the picture) is either absent or was never started;
  * a checkpoint left in the run folder loads and resumes to the end (`--resume` exits 0), and
    a run stopped before training leaves no checkpoint (a new run's folder is removed).
The synthetic IDX files come from a seed printed first (CUVAE_TEST_SEED replays it).

usage: cli_signals.py <cuvae-binary>
"""
import gzip
import os
import pty
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

kExitLimit = 2.0  # seconds from the signal to the exit
kPhaseLimit = 120.0  # seconds to wait for a phase's marker

TRAIN_IMAGES, TEST_IMAGES = 1024, 4000
# 16 steps an epoch, 3 epochs; the test loss and the final scatter encode 4,000 images.
TRAIN = ["--device", "cpu", "--batch-size", "64", "--epochs", "3"]


def idx_images(rng, count):
    return struct.pack(">IIII", 0x803, count, 28, 28) + rng.randbytes(count * 784)


def idx_labels(count):
    return struct.pack(">II", 0x801, count) + bytes(i % 10 for i in range(count))


def make_data(folder, rng, gz, test_images=TEST_IMAGES):
    """An MNIST-format folder; with `gz` the training images are gzip'ed (a longer load)."""
    os.makedirs(folder)
    count = 60000 if gz else TRAIN_IMAGES
    train = idx_images(rng, count)
    name = os.path.join(folder, "train-images-idx3-ubyte")
    if gz:
        with gzip.open(name + ".gz", "wb", compresslevel=1) as f:
            f.write(train)
    else:
        with open(name, "wb") as f:
            f.write(train)
    files = {
        "train-labels-idx1-ubyte": idx_labels(count),
        "t10k-images-idx3-ubyte": idx_images(rng, test_images),
        "t10k-labels-idx1-ubyte": idx_labels(test_images),
    }
    for n, data in files.items():
        with open(os.path.join(folder, n), "wb") as f:
            f.write(data)


class Run:
    """cuvae on a pseudo-terminal: its output as the terminal shows it, its exit."""

    def __init__(self, args, cwd):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                     start_new_session=True)
        os.close(slave)
        self.master = master
        self.text = ""

    def pump(self, timeout):
        """Reads what the terminal got within `timeout` seconds; False at the end of output."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the process and its terminal are gone
            return False
        if not chunk:
            return False
        self.text += chunk.decode("utf-8", "replace")
        return True

    def open_files(self):
        """The paths the process holds open, as /proc shows them."""
        fd_dir = "/proc/%d/fd" % self.proc.pid
        paths = []
        try:
            for fd in os.listdir(fd_dir):
                try:
                    paths.append(os.readlink(os.path.join(fd_dir, fd)))
                except OSError:
                    pass
        except OSError:
            pass
        return paths

    def wait_for(self, marker):
        """Waits until marker(self) is true; False if the process ended first."""
        deadline = time.monotonic() + kPhaseLimit
        while time.monotonic() < deadline:
            if marker(self):
                return True
            if self.proc.poll() is not None:
                return False
            self.pump(0.0002)
        return False

    def signal_and_wait(self, sig):
        """Sends `sig`; returns (exit code, seconds to the exit) -- None when over the limit."""
        t0 = time.monotonic()
        if self.proc.poll() is None:  # else it has ended (and been reaped) already
            os.kill(self.proc.pid, sig)
        rc = None
        while time.monotonic() - t0 < kExitLimit + 8:
            self.pump(0.01)
            rc = self.proc.poll()
            if rc is not None:
                break
        seconds = time.monotonic() - t0
        if rc is None:
            self.proc.kill()
            self.proc.wait()
        while self.pump(0.05):  # the rest of the output
            pass
        os.close(self.master)
        return rc, seconds


def text_marker(pattern):
    regex = re.compile(pattern, re.M)
    return lambda run: regex.search(run.text) is not None


def file_marker(pattern):
    """The process holds a file whose path matches `pattern` open."""
    regex = re.compile(pattern)
    return lambda run: any(regex.search(p) for p in run.open_files())


def read_marker(nbytes):
    """The process has read at least `nbytes` bytes (/proc/PID/io: rchar only grows, so no
    moment is missed however late this process gets the CPU)."""

    def marker(run):
        try:
            with open("/proc/%d/io" % run.proc.pid) as f:
                for line in f:
                    if line.startswith("rchar:"):
                        return int(line.split()[1]) >= nbytes
        except OSError:
            pass
        return False

    return marker


def temporaries(*folders):
    found = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            found += [os.path.join(root, f) for f in files if re.search(r"\.tmp\.\d+$", f)]
    return found


# Train phases: (name, data folder key, marker, what the last words must say).
STOPPED_BEFORE = r"stopped before training started; no checkpoint written"
TRAIN_PHASES = [
    ("data loading", "gz", file_marker(r"train-images-idx3-ubyte\.gz$"), STOPPED_BEFORE),
    ("first steps", "raw", text_marker(r"epoch 1/3  step 1/"),
     r"stopped in epoch 1 after its step \d+"),
    ("mid-epoch", "raw", text_marker(r"epoch 2/3  step \d+/"),
     r"stopped in epoch 2 after its step \d+"),
    ("checkpoint write", "raw", file_marker(r"(train_state|model)\.safetensors\.tmp\.\d+$"),
     r"stopped (after epoch [12] |in epoch [23] after its step)|training had finished"),
    ("test loss", "raw", text_marker(r"epoch 2/3  test loss on"), r"stopped after epoch 2 "),
    ("final pictures", "raw", text_marker(r"(^|\r)pictures \.\.\."),
     r"training had finished .* stopped drawing the final pictures"),
]


def check(cond, what, failures):
    if cond:
        print("ok: " + what)
    else:
        print("FAIL: " + what)
        failures.append(what)


def signal_at(run, marker, sig, label, failures):
    """Sends `sig` once `marker` shows and checks the exit; False if the marker never came."""
    if not run.wait_for(marker):
        run.signal_and_wait(signal.SIGKILL)
        check(False, "%s: the phase's marker never came (the process ended first?):\n%s"
              % (label, run.text[-2000:]), failures)
        return False
    rc, seconds = run.signal_and_wait(sig)
    want = 128 + sig
    check(rc == want and seconds <= kExitLimit,
          "%s: exit %s %.2f s after %s (want %d within %.0f s)"
          % (label, rc, seconds, signal.Signals(sig).name, want, kExitLimit), failures)
    return True


def train_case(cuvae, tmp, data, phase, sig, failures):
    name, data_key, marker, said = phase
    label = "train, %s, %s" % (name, signal.Signals(sig).name)
    out = os.path.join(tmp, "run_%s_%d" % (name.replace(" ", "_"), sig))
    run = Run([cuvae, "train", "--data", data[data_key], "--out", out] + TRAIN, tmp)
    if not signal_at(run, marker, sig, label, failures):
        return
    last = run.text.strip().splitlines()[-3:] if run.text.strip() else []
    check(re.search(said, run.text) is not None,
          "%s: says /%s/ (last lines: %s)" % (label, said, " | ".join(l.strip() for l in last)),
          failures)
    check(not temporaries(tmp), "%s: no temporary file left" % label, failures)
    state = os.path.join(out, "train_state.safetensors")
    if said == STOPPED_BEFORE:
        check(not os.path.exists(out), "%s: no run folder left behind" % label, failures)
        return
    check(os.path.exists(state), "%s: a checkpoint is there" % label, failures)
    epochs = "4" if "training had finished" in run.text else "3"  # a finished run: one more
    resumed = subprocess.run([cuvae, "train", "--resume", out, "--device", "cpu", "--epochs",
                              epochs], cwd=tmp, capture_output=True, text=True)
    check(resumed.returncode == 0,
          "%s: the checkpoint loads and resumes to epoch %s (exit %d%s)"
          % (label, epochs, resumed.returncode, "" if resumed.returncode == 0
             else ": " + resumed.stderr.strip()[-500:]), failures)
    if name == "test loss":
        with open(os.path.join(out, "metrics.csv")) as f:
            rows = [r.split(",") for r in f.read().splitlines()[1:]]
        check(len(rows) >= 2 and rows[1][4] == "" and all(r[4] for r in rows if r is not rows[1]),
              "%s: epoch 2's test_loss is empty, the others measured" % label, failures)


def command_case(cuvae, tmp, run_dir, data, cmd, sig, failures):
    name, args, result, make_marker = cmd
    marker = make_marker()
    label = "%s, %s" % (name, signal.Signals(sig).name)
    outdir = os.path.join(tmp, "out_%s_%d" % (name, sig))
    os.makedirs(outdir)
    run = Run([cuvae] + [a.format(run=run_dir, data=data, out=outdir) for a in args], tmp)
    if not signal_at(run, marker, sig, label, failures):
        return
    check("stopped before the end" in run.text, "%s: says it stopped before the end" % label,
          failures)
    check(not os.path.exists(os.path.join(outdir, result)), "%s: no %s written" % (label, result),
          failures)
    check(not temporaries(outdir, run_dir), "%s: no temporary file left" % label, failures)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 1
    cuvae = os.path.abspath(sys.argv[1])
    seed = int(os.environ.get("CUVAE_TEST_SEED", random.randrange(1 << 31)))
    print("seed %d (CUVAE_TEST_SEED=%d replays this run)" % (seed, seed))
    rng = random.Random(seed)
    failures = []
    tmp = tempfile.mkdtemp(prefix="cuvae_signals.")
    try:
        data = {"raw": os.path.join(tmp, "data"), "gz": os.path.join(tmp, "data_gz")}
        make_data(data["raw"], rng, False)
        make_data(data["gz"], rng, True)
        for phase in TRAIN_PHASES:
            for sig in (signal.SIGINT, signal.SIGTERM):
                train_case(cuvae, tmp, data, phase, sig, failures)

        # A finished run for the other commands.
        run_dir = os.path.join(tmp, "model")
        subprocess.run([cuvae, "train", "--data", data["raw"], "--out", run_dir, "--device",
                        "cpu", "--epochs", "1", "--test-limit", "100"], cwd=tmp, check=True,
                       capture_output=True)
        # The other commands work on 20,000 test images: seconds of work on the fast engine,
        # however loaded the machine, so that their phase cannot be over before the signal.
        d = os.path.join(tmp, "data_big")
        make_data(d, rng, False, 20000)
        images_bytes = os.path.getsize(os.path.join(d, "t10k-images-idx3-ubyte"))
        # Each case gets a fresh marker.
        commands = [
            ("eval", ["eval", "{run}", "--data", d, "--device", "cpu", "--iw-samples", "50",
                      "--json", "{out}/eval.json"], "eval.json",
             lambda: text_marker(r"images/s")),
            ("encode", ["encode", "{run}", "--data", d, "--device", "cpu", "--csv",
                        "{out}/z.csv"], "z.csv", lambda: text_marker(r"images/s")),
            ("scatter", ["scatter", "{run}", "--data", d, "--device", "cpu", "--out",
                         "{out}/scatter.png"], "scatter.png",
             lambda: read_marker(images_bytes)),
        ]
        for cmd in commands:
            for sig in (signal.SIGINT, signal.SIGTERM):
                command_case(cuvae, tmp, run_dir, d, cmd, sig, failures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("cli_signals: %d failed (seed %d)" % (len(failures), seed))
        return 1
    print("cli_signals: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
