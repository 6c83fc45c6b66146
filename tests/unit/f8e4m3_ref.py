#!/usr/bin/env python3
"""The reference of the fp8 E4M3 ("fn") conversions, from the ml_dtypes package
(float8_e4m3fn), for kernels/ops_common.c's skv_f8e4m3_to_f32 / skv_f32_to_f8e4m3.

    f8e4m3_ref.py --out FILE         writes the reference file
    f8e4m3_ref.py --check TEST_BIN   writes it to a temporary file and runs
                                     TEST_BIN --f8-ref FILE (test_kv_fp8), passing on its code

The file: uint32 n, float32 inputs[n], uint8 codes[n], float32 decodes[256], little-endian.
Inputs: every finite code's value and its negative, every midpoint between neighbouring values
(ties: round to nearest even) and the floats just either side of each, the subnormal range,
the boundaries (2^-10, 2^-9, 2^-6, 448, 464, 480, the f32 extremes, infinities, NaNs) and
random floats (log-uniform magnitudes and raw bit patterns), each with both signs.
Our conversion saturates beyond the finite range (CUDA's __NV_SATFINITE) where ml_dtypes
gives NaN, so the expected code of a non-NaN x is ml_dtypes' code of clip(x, -448, 448)
(rounding never leaves [-448, 448] for inputs inside it), and of a NaN the NaN code of its
sign. Exit 77 (ctest's skip) without ml_dtypes.
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import ml_dtypes
except ImportError:
    print("numpy / ml_dtypes missing: skipping")
    sys.exit(77)

F8 = ml_dtypes.float8_e4m3fn
F32 = np.float32


def decodes():
    """The 256 codes as float32, by ml_dtypes."""
    return np.arange(256, dtype=np.uint8).view(F8).astype(F32)


def inputs():
    """The float32 inputs described in the module docstring."""
    dec = decodes()
    finite = np.sort(np.unique(dec[np.isfinite(dec) & (dec >= 0)]))  # 0 .. 448
    mids = ((finite[1:].astype(np.float64) + finite[:-1]) / 2).astype(F32)  # exact in f32
    near = np.concatenate([np.nextafter(mids, F32(np.inf)), np.nextafter(mids, F32(0))])
    sub = (np.arange(0, 2 ** 12, dtype=np.float64) * 2.0 ** -21).astype(F32)  # 0 .. 2^-9 fine
    edges = np.array([2.0 ** -10, 2.0 ** -9, 1.5 * 2.0 ** -9, 2.0 ** -7, 2.0 ** -6, 448, 449, 456,
                      464, 472, 480, 500, 1e4, 65504, 3.0e38, np.finfo(F32).max,
                      np.finfo(F32).tiny, np.finfo(F32).smallest_subnormal, np.inf], dtype=F32)
    with np.errstate(over="ignore"):  # the largest float's next one up is infinity
        edges = np.concatenate([edges, np.nextafter(edges, F32(0)),
                                np.nextafter(edges, F32(np.inf))])
    rng = np.random.default_rng(20261123)
    logu = np.exp2(rng.uniform(-14, 10, 200000)).astype(F32)
    raw = rng.integers(0, 2 ** 32, 100000, dtype=np.uint64).astype(np.uint32).view(F32)
    nans = np.array([0x7fc00000, 0x7f800001, 0x7fffffff], dtype=np.uint32).view(F32)
    x = np.concatenate([finite, mids, near, sub, edges, logu, raw, nans])
    return np.concatenate([x, -x]).astype(F32)


def expected_codes(x):
    """ml_dtypes' round-to-nearest-even codes with saturation to +-448; NaN keeps its sign."""
    with np.errstate(invalid="ignore"):
        codes = np.clip(x, F32(-448), F32(448)).astype(F8).view(np.uint8).copy()
    nan = np.isnan(x)
    codes[nan] = np.where(np.signbit(x[nan]), 0xFF, 0x7F).astype(np.uint8)
    return codes


def write(path):
    x = inputs()
    codes = expected_codes(x)
    with open(path, "wb") as f:
        f.write(np.array([len(x)], dtype="<u4").tobytes())
        f.write(x.astype("<f4").tobytes())
        f.write(codes.tobytes())
        f.write(decodes().astype("<f4").tobytes())
    return len(x)


def main():
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--out")
    g.add_argument("--check")
    a = ap.parse_args()
    if a.out:
        print(f"{write(a.out)} encodings written to {a.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f8e4m3.ref")
        n = write(path)
        print(f"ml_dtypes {ml_dtypes.__version__}: {n} encodings + 256 decodes", flush=True)
        return subprocess.run([a.check, "--f8-ref", path], timeout=60).returncode


if __name__ == "__main__":
    sys.exit(main())
