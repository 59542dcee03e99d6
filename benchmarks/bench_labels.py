"""Time reading and mapping label files at the real datasets' resolutions.

Writes synthetic labels to a temporary folder (nothing is downloaded) and prints the
median time in ms over ``--reps`` repetitions of:

* Cityscapes/GTA5 labelIds PNG, 2048x1024 uint8: decode (Pillow) and id -> train id
  mapping (LUT gather with the unknown-id check, as the readers do it), next to a
  naive per-class loop for comparison;
* SYNTHIA GT/LABELS PNG, 1280x760 16-bit RGBA, three files (None/Sub/Up row filters,
  Paeth rows, and OpenCV's own choice of filters): the class channel decoded by the
  kit (``read_synthia_label``, OpenCV) next to the numpy + zlib decoder the kit used
  before (``png_numpy_reference.py``), with a bit-exact check of both decoders against
  the array that was written (all four channels, and the class channel alone); then
  the LUT mapping.

Run: ``python benchmarks/bench_labels.py [--reps 20]``.
"""
from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from kit.data.labels import CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_IDS, SYNTHIA_IDS, SYNTHIA_16
from kit.data.real import decode_png, read_label_ids, read_synthia_label
from png_numpy_reference import decode_png as decode_png_numpy  # beside this script


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def paired_ms(fn_a, fn_b, reps: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall ms, CPU ms of this thread) of ``fn_a`` and of ``fn_b``, timed
    alternately so that a load from other processes falls on both alike."""
    fn_a(), fn_b()  # warm-up
    res = {0: ([], []), 1: ([], [])}
    for _ in range(reps):
        for k, fn in enumerate((fn_a, fn_b)):
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            res[k][0].append(time.perf_counter() - w0)
            res[k][1].append(time.thread_time() - c0)
    return tuple((1000 * statistics.median(w), 1000 * statistics.median(c)) for w, c in res.values())


def blocky_ids(h: int, w: int, ids, seed: int = 0) -> np.ndarray:
    """Street-like label map: large regions of random ids (nearest-upsampled noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(np.asarray(ids), size=(h // 32, w // 32))
    out = np.repeat(np.repeat(coarse, 32, 0), 32, 1)
    for r in range(h):  # jagged region borders, as in real annotations
        out[r] = np.roll(out[r], int(rng.integers(-4, 5)))
    return out


def write_png16(arr: np.ndarray, path: Path, filt: int | None) -> None:
    """16-bit PNG writer (Pillow cannot write 16-bit RGBA). ``filt``: one filter type
    for all rows (0 None, 1 Sub, 2 Up, 4 Paeth) or None for rows cycling 0, 1, 2."""
    h, w, c = arr.shape
    data = arr.astype(">u2").view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp, prev, rows = 2 * c, np.zeros(data.shape[1], np.int32), []
    for r in range(h):
        x = data[r]
        f = r % 3 if filt is None else filt
        a = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        p = a + prev - ul
        pa, pb, pc = abs(p - a), abs(p - prev), abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prev, ul))
        pred = [np.zeros_like(x), a, prev, (a + prev) // 2, paeth][f]
        rows.append(bytes([f]) + ((x - pred) & 255).astype(np.uint8).tobytes())
        prev = x

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ctype = {3: 2, 4: 6}[c]
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    reps = args.reps

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # --- Cityscapes / GTA5: 2048x1024 uint8 label ids
        cs = tmp / "frankfurt_000000_000294_gtFine_labelIds.png"
        Image.fromarray(blocky_ids(1024, 2048, list(range(34))).astype(np.uint8)).save(cs)
        raw = read_label_ids(cs)
        lut = CITYSCAPES_IDS.lut

        def naive():
            out = np.full(raw.shape, 255, np.int64)
            for k, v in CITYSCAPES_ID_TO_TRAIN_ID.items():
                out[raw == k] = v
            return out

        assert np.array_equal(naive(), CITYSCAPES_IDS(raw))
        print(f"Cityscapes labelIds 2048x1024 uint8 ({cs.stat().st_size / 1024:.0f} KiB PNG), "
              f"median of {reps}:")
        print(f"  decode (Pillow -> numpy)              {median_ms(lambda: read_label_ids(cs), reps):8.2f} ms")
        print(f"  map: LUT + unknown-id check -> int64  {median_ms(lambda: CITYSCAPES_IDS(raw), reps):8.2f} ms")
        print(f"  map: bare LUT gather (lut[raw])       {median_ms(lambda: lut[raw], reps):8.2f} ms")
        print(f"  map: naive loop over 19 classes       {median_ms(naive, max(3, reps // 4)):8.2f} ms")

        # --- SYNTHIA: 1280x760 16-bit RGBA, class id in channel 0
        ids = blocky_ids(768, 1280, list(range(23)), seed=1)[:760].astype(np.uint16)
        inst = np.zeros_like(ids)
        lab = np.stack([ids, inst, inst, np.full_like(ids, 65535)], -1)
        mapping = SYNTHIA_IDS.then(SYNTHIA_16)
        syn_reps = max(3, reps // 2)
        print(f"SYNTHIA GT/LABELS 1280x760 16-bit RGBA, class channel, median of {syn_reps} "
              f"(OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads):")
        print("  wall (CPU) ms; the two decoders alternate, so both see the same load")
        print("  file filters         kit (OpenCV)         numpy+zlib (before)  bit-exact")
        for filt, name in ((None, "None/Sub/Up rows"), (4, "Paeth rows"), ("cv2", "OpenCV's choice")):
            p = tmp / f"synthia_{filt}.png"
            if filt == "cv2":
                cv2.imwrite(str(p), lab[:, :, [2, 1, 0, 3]])  # OpenCV writes BGRA order
            else:
                write_png16(lab, p, filt)
            exact = (np.array_equal(decode_png(p), lab) and np.array_equal(decode_png_numpy(p), lab)
                     and np.array_equal(read_synthia_label(p), ids)
                     and np.array_equal(decode_png_numpy(p, channels=[0])[:, :, 0], ids))
            assert exact, f"{name}: a decoder differs from the written array"
            t_new, t_old = paired_ms(lambda: read_synthia_label(p),
                                     lambda: decode_png_numpy(p, channels=[0])[:, :, 0], syn_reps)
            print(f"  {name:18s} {t_new[0]:8.2f} ({t_new[1]:6.2f}) ms {t_old[0]:8.2f} ({t_old[1]:6.2f}) ms"
                  f"   {'yes' if exact else 'NO'}")
        syn = read_synthia_label(p)
        print(f"  map: LUT + unknown-id check -> int64  {median_ms(lambda: mapping(syn), reps):8.2f} ms")


if __name__ == "__main__":
    main()
