"""Time one training step of the paper profile's network and report its model FLOP utilisation.

The network is the ``paper`` profile's DeepLab-v2 (ResNet-101, output stride 8, ASPP
6/12/18/24, frozen BN, 19 classes), trained as the kit trains it: SGD with the 10x head
LR, pixel-wise cross-entropy on logits upsampled to the label size, at 512x1024 with
batch 1, under bf16 autocast with channels_last inputs/weights and
``cudnn.benchmark`` on. Printed: milliseconds per step, images/s, peak GPU memory, the
forward MACs (:func:`kit.models.count_flops`: convolutions and linear layers only), the
training FLOPs per image taken as 3 x forward = 6 x MACs, and the model FLOP
utilisation MFU = achieved training FLOP/s / ``--peak-flops`` (default 989e12: H100 SXM
bf16 dense; an H200 has the same; A100 is 312e12).

Run on a GPU::

    python benchmarks/bench_gpu_step.py                      # 512x1024, batch 1
    python benchmarks/bench_gpu_step.py --batch 2 --peak-flops 312e12

On a machine without CUDA it runs the smoke-sized network at a small size (``--tiny``
forces that anywhere) and says so: those numbers are not a GPU measurement.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from kit import losses
from kit.config import resolve
from kit.methods.supervised import build_model, make_model_optimizer
from kit.models import count_flops, count_parameters


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="smoke-sized network and input (CPU-friendly)")
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:1 | cpu")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="input size (default 512 1024; 64 128 with --tiny)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 1; 2 with --tiny)")
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--amp", choices=("bf16", "off"), default="bf16")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10; 2 with --tiny)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 30; 5 with --tiny)")
    ap.add_argument("--peak-flops", type=float, default=989e12,
                    help="the device's peak FLOP/s for the MFU (default 989e12, H100 bf16 dense)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    tiny = args.tiny or device.type != "cuda"
    cfg = resolve("smoke" if tiny else "paper", "supervised", device=str(device))
    size = tuple(args.size or ((64, 128) if tiny else (512, 1024)))
    batch = args.batch or (2 if tiny else 1)
    warmup = args.warmup if args.warmup is not None else (2 if tiny else 10)
    steps = args.steps if args.steps is not None else (5 if tiny else 30)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(0)
    model = build_model(cfg, args.classes).to(device)
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=mf)
    opt = make_model_optimizer(cfg, model)
    macs = count_flops(model, (batch, 3) + size)
    x = torch.rand(batch, 3, *size, device=device).contiguous(memory_format=mf)
    y = torch.randint(0, args.classes, (batch,) + size, device=device)
    use_amp = args.amp == "bf16" and (device.type != "cuda" or torch.cuda.is_bf16_supported())

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(x)
            loss = losses.seg_loss(out["out"], y)
            if "aux" in out:
                loss = loss + 0.1 * losses.seg_loss(out["aux"], y)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train()
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t)
    if not torch.isfinite(loss):
        print(f"warning: the loss is {float(loss)}")

    sec = statistics.median(times)
    flops_step = 6.0 * macs  # training ~ 3 x forward, 1 MAC = 2 FLOPs
    achieved = flops_step / sec
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    net = f"DeepLab-v2 ResNet-{cfg['depth']} (width {cfg['width']}, OS {cfg['output_stride']})"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"network: {net}, {count_parameters(model) / 1e6:.1f} M parameters, {args.classes} classes")
    print(f"input: batch {batch} x {size[0]}x{size[1]}, amp {'bf16' if use_amp else 'off'}, "
          f"channels_last {args.channels_last}, {warmup} warm-up + {steps} timed steps")
    print(f"step: {1e3 * sec:.1f} ms median (min {1e3 * min(times):.1f}, max {1e3 * max(times):.1f})")
    print(f"throughput: {batch / sec:.2f} images/s")
    print(f"forward MACs: {macs / batch / 1e9:.4g} G per image; training FLOPs (6 x MACs): "
          f"{flops_step / batch / 1e12:.4g} TFLOP per image")
    print(f"achieved: {achieved / 1e12:.4g} TFLOP/s; MFU {100 * achieved / args.peak_flops:.3g}% "
          f"of {args.peak_flops / 1e12:.0f} TFLOP/s peak")
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if tiny or device.type != "cuda":
        print("NOTE: this is NOT a GPU measurement" + (" (no CUDA here)" if device.type != "cuda" else "")
              + ("; the tiny smoke-sized network was timed" if tiny else "")
              + " -- the MFU against a GPU peak is meaningless.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
