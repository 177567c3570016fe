"""Training and sampling speed of each family, against the machine's own limits.

    PYTHONPATH=src python benchmarks/bench_training.py --emoji DIR64 [--steps 15] [--repeats 3]

DIR64 is ``artforge data emoji --size 64 --out DIR64``. Everything runs on the CPU (or
``--device cuda``), one measurement at a time, each repeated and reported as the median, with
its rivals interleaved in the same loop so a noisy neighbour slows all of them alike.

1. DCGAN 64x64, batch 64, images/s of a training step several ways:
   - ``artforge``: the real Trainer on the emoji folder (decoded once into the uint8 cache);
   - ``compute-only``: the same model and step on a random batch already in memory, with the
     defaults (channels-last); ``compute-only-nchw`` the same in the default PyTorch layout;
     ``compute-only-compiled`` with torch.compile (only with ``--compile``);
   - ``pil-loop``: a plain PyTorch loop of the same architecture (default NCHW layout) that
     decodes and resizes each image with PIL every step through a DataLoader (2 workers), as
     pytorch/examples' dcgan does.
2. FLOPs of one training step (torch.utils.flop_counter) per image, and the utilisation of
   the machine's fp32 peak, measured in the same run: the larger of a 2048x2048 sgemm and
   DCGAN's widest transposed convolution (oneDNN's convs outrun sgemm on some CPUs).
3. The same for the default gan, the vae and diffusion at 32x32.
4. Seconds to sample 1,000 images per family (diffusion with 25 DDIM steps), channels-last
   and NCHW.
5. Peak memory: each family is measured in a fresh child process; its max RSS is reported.

On a GPU (``--device cuda``) each family is also measured at the batches of ``--batches``
(default 64,256), with more rivals and figures:
   - ``loop``: the Trainer's real loop body (``_train_step`` with the batch gathered from the
     device-resident uint8 cache, then the EMA update), besides the compute-only steps;
   - ``compute-only-bf16`` always (``--amp bf16``), and ``compute-only-graphs``
     (``--compile-mode reduce-overhead``) with ``--compile``, its compile seconds reported;
   - MFU against the card's bf16 and TF32 matmul peaks measured in the same run (8192^3
     products on random data), bf16 rivals against the bf16 peak, the others against TF32
     (the Trainer's default for fp32 on CUDA);
   - the share of wall time outside GPU kernels over 10 loop steps (torch.profiler: wall
     time minus the summed kernel time, over wall time): near 1 means the host is the limit;
   - peak GPU memory per (family, batch), and seconds to generate 10,000 images (1,000 for
     diffusion, 25 DDIM steps) with ``artforge.sample.generate``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from artforge.config import DataConfig, RunConfig, TrainConfig


def matmul_peak(device: str, n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n GEMM, median of ``repeats``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    rates = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def conv_peak(device: str, repeats: int = 5) -> float:
    """fp32 GFLOP/s of DCGAN's widest transposed conv at 64x64 (batch 64, 512 -> 256 channels,
    4x4 to 8x8), median of ``repeats``: oneDNN's convolutions can outrun sgemm on a CPU, and
    then sgemm is not the machine's peak for these models."""
    x = torch.randn(64, 512, 4, 4, device=device)
    w = torch.randn(512, 256, 4, 4, device=device)
    flops = 2 * 64 * 4 * 4 * 512 * 256 * 4 * 4  # every input pixel meets every kernel tap
    torch.nn.functional.conv_transpose2d(x, w, stride=2, padding=1)
    rates = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.conv_transpose2d(x, w, stride=2, padding=1)
        _sync(device)
        rates.append(10 * flops / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def cuda_matmul_peaks(device: str = "cuda", n: int = 8192, repeats: int = 10) -> dict[str, float]:
    """TFLOP/s of n^3 products on random data: bf16, TF32 and plain fp32 (each the median of
    ``repeats`` after warm-up). Any device, for the dry run of the GPU report on a CPU."""
    peaks = {}
    for name, dtype, tf32 in (
        ("bf16", torch.bfloat16, True),
        ("tf32", torch.float32, True),
        ("fp32", torch.float32, False),
    ):
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats if name != "fp32" else 3):
            _sync(device)
            t = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - t)
        peaks[name] = 2 * n**3 / statistics.median(times) / 1e12
        torch.backends.cuda.matmul.allow_tf32 = old
        del a, b
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return peaks


def outside_kernels_share(fn, device: str, steps: int = 10) -> float:  # type: ignore[no-untyped-def]
    """Share of the wall time of ``steps`` calls of ``fn`` not covered by GPU kernels (nan
    off CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    if not device.startswith("cuda"):
        return float("nan")
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    kernel_us = sum(
        e.device_time_total for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
    )
    return max(0.0, 1.0 - kernel_us / 1e6 / wall)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Stepper:
    """One family's training step exactly as the Trainer runs it (its ``_train_step``), here on
    a batch given in memory: the compute-only reference."""

    def __init__(
        self,
        family: str,
        size: int,
        batch: int,
        device: str,
        fields: dict[str, Any] | None = None,
        **train: Any,
    ):
        from artforge.training import Trainer

        cfg = RunConfig(
            family=family,
            model=dict(fields or {}),
            data=DataConfig(path="builtin", height=size, width=size, builtin_count=batch, cache="memory"),
            train=TrainConfig(
                steps=10**9, batch_size=batch, device=device, sample_every=0, ckpt_every=0, **train
            ),
        )
        self.trainer = Trainer(cfg, "/tmp/artforge-bench-unused", progress=False)  # writes nothing
        self.model = self.trainer.model
        self.step_no = 0
        self.batch = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(
            memory_format=self.trainer.memory_format
        )
        self.device = device

    def step(self, batch: torch.Tensor | None = None) -> None:
        self.trainer._train_step(self.step_no, self.batch if batch is None else batch)
        self.step_no += 1

    def flops_per_image(self) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return counter.get_total_flops() / self.batch.shape[0]


def time_steps(fn, steps: int, images_per_step: int, device: str) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return steps * images_per_step / (time.perf_counter() - t)


# -- the pytorch/examples-style loop: PIL decode + resize per image, every step ---------------


class PILFolder(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Decode, resize, centre-crop and normalise each image with PIL on every access."""

    def __init__(self, folder: str, size: int):
        self.files = sorted(str(p) for p in Path(folder).glob("*.png"))
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.open(self.files[i]).convert("RGB")
        w, h = img.size
        s = self.size / min(w, h)
        img = img.resize(
            (max(self.size, round(w * s)), max(self.size, round(h * s))), Image.Resampling.BILINEAR
        )
        left, top = (img.width - self.size) // 2, (img.height - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        return x.permute(2, 0, 1)


def pil_loop(folder: str, stepper: Stepper, batch: int) -> Any:
    loader = torch.utils.data.DataLoader(
        PILFolder(folder, stepper.batch.shape[-1]),
        batch_size=batch,
        shuffle=True,
        num_workers=2,
        drop_last=True,
    )
    it = iter(loader)

    def step() -> None:
        nonlocal it
        try:
            x = next(it)
        except StopIteration:
            it = iter(loader)
            x = next(it)
        stepper.step(x.to(stepper.device))

    return step


def trainer_loop(folder: str, family: str, size: int, batch: int, device: str) -> Any:
    from artforge.training import Trainer

    cfg = RunConfig(
        family=family,
        data=DataConfig(path=folder, height=size, width=size, cache="memory"),
        train=TrainConfig(steps=10**9, batch_size=batch, device=device, sample_every=0, ckpt_every=0),
    )
    trainer = Trainer(cfg, "/tmp/artforge-bench-unused", progress=False)
    state = {"step": 0}

    def step() -> None:
        trainer._train_step(state["step"])  # the loop body: batch from the cache, phases, EMA off
        state["step"] += 1

    return step


# -- per-family measurements in a child process ---------------------------------------------


def sample_seconds_per_1000(model: Any, family: str, device: str) -> float:
    n = 200 if family == "diffusion" else 1000
    with torch.no_grad():
        model.sample(8)  # warm-up
        _sync(device)
        t = time.perf_counter()
        for i in range(0, n, 100):
            model.sample(min(100, n - i))
        _sync(device)
    return (time.perf_counter() - t) * 1000 / n


def measure_cuda(
    family: str, size: int, batch: int, steps: int, repeats: int, compile_too: bool, device: str = "cuda"
) -> dict[str, Any]:
    """One family at one batch on CUDA: the rivals of the module docstring (``device`` cpu:
    the same code on the CPU, for the dry run)."""
    from artforge.sample import generate, latents_for_seed

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out: dict[str, Any] = {"family": family, "size": size, "batch": batch}
    stepper = Stepper(family, size, batch, device)
    out["gflop_per_image"] = stepper.flops_per_image() / 1e9
    tr = stepper.trainer
    loop_state = {"step": 0}

    def loop() -> None:  # the Trainer's loop body: cached batch on the device, phases, EMA
        tr._train_step(loop_state["step"])
        loop_state["step"] += 1
        if tr.ema is not None:
            tr.ema.update(tr.model, loop_state["step"] * batch, batch)

    rivals = {
        "loop": loop,
        "compute-only": stepper.step,
        "compute-only-nchw": Stepper(family, size, batch, device, channels_last=False).step,
        "compute-only-bf16": Stepper(family, size, batch, device, amp="bf16").step,
    }
    if compile_too:
        t = time.perf_counter()
        graphs = Stepper(family, size, batch, device, compile_mode="reduce-overhead")
        for _ in range(3):  # compilation and graph recording happen in the first steps
            graphs.step()
        _sync(device)
        out["compile_s"] = time.perf_counter() - t
        rivals["compute-only-graphs"] = graphs.step
    rates: dict[str, list[float]] = {k: [] for k in rivals}
    for _ in range(repeats):
        for name, fn in rivals.items():
            rates[name].append(time_steps(fn, steps, batch, device))
    out["img_per_s"] = {k: statistics.median(v) for k, v in rates.items()}
    try:  # a profiler problem must not cost the figures above (one GPU session)
        out["outside_kernels"] = outside_kernels_share(loop, device)
    except Exception as e:  # noqa: BLE001
        out["outside_kernels"], out["outside_kernels_error"] = float("nan"), f"{type(e).__name__}: {e}"
    out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    model = tr.sampling_model.eval()
    n = (1000 if family == "diffusion" else 10_000) if cuda else 16
    z = latents_for_seed(model, n, 0)
    generate(model, z[:8])  # warm-up
    _sync(device)
    t = time.perf_counter()
    generate(model, z)
    out[f"generate_{n}_s"] = time.perf_counter() - t
    return out


def measure_family(args: tuple[str, int, int, int, int, str, str | None, bool, bool]) -> dict[str, Any]:
    family, size, batch, steps, repeats, device, emoji, compile_too, bf16_too = args
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    if device.startswith("cuda") or os.environ.get("BENCH_GPU_REPORT"):
        return measure_cuda(family, size, batch, steps, repeats, compile_too, device)
    out: dict[str, Any] = {"family": family, "size": size, "batch": batch}
    stepper = Stepper(family, size, batch, device)  # the defaults: channels-last
    nchw = Stepper(family, size, batch, device, channels_last=False)
    out["gflop_per_image"] = stepper.flops_per_image() / 1e9
    rivals = {"compute-only": stepper.step, "compute-only-nchw": nchw.step}
    if compile_too:
        compiled = Stepper(family, size, batch, device, compile=True)
        for _ in range(3):  # compilation happens in the first steps, outside the timing
            compiled.step()
        rivals["compute-only-compiled"] = compiled.step
    if bf16_too:  # --amp bf16: oneDNN's bf16 kernels on CPUs that have them (avx512_bf16, AMX)
        rivals["compute-only-bf16"] = Stepper(family, size, batch, device, amp="bf16").step
    if family == "dcgan" and emoji:
        rivals["artforge"] = trainer_loop(emoji, family, size, batch, device)
        # pytorch/examples' loop: PIL per step, the default (NCHW) layout
        rivals["pil-loop"] = pil_loop(emoji, Stepper(family, size, batch, device, channels_last=False), batch)
    rates: dict[str, list[float]] = {k: [] for k in rivals}
    for _ in range(repeats):  # interleaved: a noisy neighbour slows every rival alike
        for name, fn in rivals.items():
            rates[name].append(time_steps(fn, steps, batch, device))
    out["img_per_s"] = {k: statistics.median(v) for k, v in rates.items()}
    out["sample_s_per_1000"] = sample_seconds_per_1000(stepper.model.eval(), family, device)
    out["sample_s_per_1000_nchw"] = sample_seconds_per_1000(nchw.model.eval(), family, device)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _child(job: tuple[str, int, int, int, int, str, str | None, bool, bool], queue: Any) -> None:
    """Not a Pool worker: those are daemonic, and the PIL loop's DataLoader needs children."""
    try:
        queue.put(measure_family(job))
    except Exception as e:  # noqa: BLE001 - report any failure to the parent
        queue.put(f"{type(e).__name__}: {e}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emoji", default=None, help="folder of 64x64 emoji PNGs (artforge data emoji --size 64)")
    p.add_argument("--steps", type=int, default=15, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--families", default="dcgan:64,gan:32,vae:32,diffusion:32")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd step")
    p.add_argument("--bf16", action="store_true", help="also time the step under --amp bf16")
    p.add_argument(
        "--gpu-report", action="store_true", help="the --device cuda report on any device (dry run)"
    )
    p.add_argument("--batches", default=None, help="batch sizes, e.g. 64,256 (default: 64; 64,256 on CUDA)")
    args = p.parse_args()
    if args.device.startswith("cuda") or args.gpu_report:
        if args.gpu_report:
            os.environ["BENCH_GPU_REPORT"] = "1"  # the children take the GPU report's path too
        return main_cuda(args)

    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, load {load:.2f}"
    )
    gemm, conv = matmul_peak(args.device), conv_peak(args.device)
    peak = max(gemm, conv)
    print(
        f"fp32 peak: 2048^2 sgemm {gemm:.1f} GFLOP/s, DCGAN transposed conv {conv:.1f} GFLOP/s; "
        f"utilisation below is against the larger, {peak:.1f}"
    )
    results = []
    ctx = mp.get_context("spawn")
    for spec in args.families.split(","):
        family, size = spec.split(":")
        job = (
            family,
            int(size),
            64,
            args.steps,
            args.repeats,
            args.device,
            args.emoji,
            args.compile,
            args.bf16,
        )
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(job, queue))  # its peak RSS is this family's alone
        child.start()
        r = queue.get()
        child.join()
        if isinstance(r, str):
            print(f"{family}: failed: {r}", file=sys.stderr)
            return 1
        r["mfu"] = {k: v * r["gflop_per_image"] / peak for k, v in r["img_per_s"].items()}
        results.append(r)
        speeds = ", ".join(
            f"{k} {v:.1f} img/s ({r['mfu'][k]:.0%} of peak)" for k, v in r["img_per_s"].items()
        )
        print(
            f"{family} {size}x{size} batch 64: {r['gflop_per_image']:.3f} GFLOP/img/step; {speeds}; "
            f"sampling {r['sample_s_per_1000']:.2f} s/1000 ({r['sample_s_per_1000_nchw']:.2f} NCHW); "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"matmul_gflops": gemm, "conv_gflops": conv, "load": load, "results": results}, indent=2
            )
        )
    return 0


def main_cuda(args: argparse.Namespace) -> int:
    """--device cuda: every family at every batch, each in a fresh process; one table."""
    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if cuda else "no GPU (dry run)"
    print(f"torch {torch.__version__}, {name}, CUDA {torch.version.cuda}")
    peaks = cuda_matmul_peaks(args.device, 8192 if cuda else 256)
    print(
        "matmul peaks (8192^3, random data): " + ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in peaks.items())
    )
    batches = [int(b) for b in (args.batches or "64,256").split(",")]
    results = []
    ctx = mp.get_context("spawn")
    for spec in args.families.split(","):
        family, size = spec.split(":")
        for batch in batches:
            job = (family, int(size), batch, args.steps, args.repeats, args.device, None, args.compile, True)
            queue = ctx.Queue()
            child = ctx.Process(target=_child, args=(job, queue))
            child.start()
            r = queue.get()
            child.join()
            if isinstance(r, str):
                print(f"{family} batch {batch}: failed: {r}", file=sys.stderr)
                continue
            flops = r["gflop_per_image"] * 1e9
            r["mfu"] = {
                k: v * flops / (peaks["bf16" if "bf16" in k else "tf32"] * 1e12)
                for k, v in r["img_per_s"].items()
            }
            results.append(r)
            speeds = ", ".join(
                f"{k} {v:,.0f} img/s (MFU {r['mfu'][k]:.1%})" for k, v in r["img_per_s"].items()
            )
            extra = f"; compile {r['compile_s']:.0f} s" if "compile_s" in r else ""
            gen = next(f"{k[9:-2]} images in {v:.2f} s" for k, v in r.items() if k.startswith("generate_"))
            print(
                f"{family} {size}x{size} batch {batch}: {r['gflop_per_image']:.3f} GFLOP/img/step; {speeds}; "
                f"outside kernels {r['outside_kernels']:.0%}; peak {r['cuda_peak_mib']:,.0f} MiB; "
                f"generate {gen}{extra}"
            )
            if args.json:  # after each result: a run stopped by its time limit keeps what it has
                Path(args.json).write_text(json.dumps({"peaks_tflops": peaks, "results": results}, indent=2))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
