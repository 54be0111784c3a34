"""NF4's two CPU loops in C, compiled on first use where a C compiler works, loaded with ctypes.

Why C: on CPU every PyTorch op with enough work is an OpenMP parallel region, and dequantizing
with tensor ops takes several (unpack, gather, scale); on a machine shared with other jobs each
region waits until all its threads are scheduled again, so their number, not the arithmetic,
decided the 4-bit layer's speed. ``torch.compile`` fuses them into one region but its generated
gather loop ran 5x slower than the eager ops here (measured, BENCHMARKS.md issue 20). One plain C
loop does the work at memory speed (8 ms for a 4096 x 4096 weight on one core) in at most one
region. Two functions:

* ``peftlab_nf4_dequantize`` — whole blocks to float32 or bfloat16: per block, its scale (decoded
  from the double-quantized code with two roundings: ``-ffp-contract=off`` forbids a fused
  multiply-add), one 8-byte value-pair lookup per byte, one multiply per value. Bit-identical to
  the eager kernel; `kernels` checks that on first use.
* ``peftlab_nf4_matvec`` — ``y = x @ dequant(W)^T`` for a few rows of x, reading 4 bits per weight.

The library is built once per machine and source into ``$PEFTLAB_CACHE`` (default
``~/.cache/peftlab``)``/kernels`` with ``$CC`` (default ``cc``): ``-O3 -march=native -fopenmp``,
falling back to fewer flags where the compiler refuses one. Without a working compiler the
caller uses the eager PyTorch kernels. OpenMP: the library must share PyTorch's runtime (same
``libgomp.so.1``); where a second runtime shows up in the process, it runs on one thread.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#include <stdint.h>
#include <string.h>

#define MAX_BLOCK 4096
#define MAX_ROWS 8

/* Scale of block b: the plain float32 absmax, or DYNAMIC[code] * nested[b / 256] + offset. */
static inline float block_scale(const uint8_t *codes, const float *plain, const float *nested,
                                float offset, const float *dynamic, int64_t b) {
    if (plain) return plain[b];
    float scaled = dynamic[codes[b]] * nested[b >> 8];
    return scaled + offset;
}

/* float32 -> bfloat16 bits, round to nearest even (PyTorch's cast). */
static inline uint16_t bfloat16_bits(float value) {
    uint32_t bits;
    if (value != value) return 0x7FC0;
    memcpy(&bits, &value, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* n_blocks whole blocks from packed (block_size / 2 bytes each) into out (float32 or bfloat16).
   pairs: 256 entries, the two float32 code values of each byte (high nibble first). */
void peftlab_nf4_dequantize(const uint8_t *packed, const uint8_t *codes, const float *plain,
                            const float *nested, float offset, const float *dynamic,
                            const uint64_t *pairs, int64_t n_blocks, int64_t block_size,
                            void *out, int bfloat16, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static) if(threads > 1)
    for (int64_t b = 0; b < n_blocks; b++) {
        float local[MAX_BLOCK];
        float *values = bfloat16 ? local : (float *)out + b * block_size;
        const uint8_t *p = packed + b * (block_size / 2);
        const float scale = block_scale(codes, plain, nested, offset, dynamic, b);
        for (int64_t j = 0; j < block_size / 2; j++) memcpy(values + 2 * j, pairs + p[j], 8);
        for (int64_t j = 0; j < block_size; j++) values[j] *= scale;
        if (bfloat16) {
            uint16_t *o = (uint16_t *)out + b * block_size;
            for (int64_t j = 0; j < block_size; j++) o[j] = bfloat16_bits(values[j]);
        }
    }
}

/* y (rows, out_features) = x (rows, in_features) @ dequant(W)^T, rows <= MAX_ROWS; W's rows hold
   whole blocks. Each block's dot products are summed, then scaled once. */
void peftlab_nf4_matvec(const float *x, int64_t rows, const uint8_t *packed, const uint8_t *codes,
                        const float *plain, const float *nested, float offset, const float *dynamic,
                        const uint64_t *pairs, int64_t out_features, int64_t in_features,
                        int64_t block_size, float *y, int threads) {
    const int64_t blocks_per_row = in_features / block_size;
    #pragma omp parallel for num_threads(threads) schedule(static) if(threads > 1)
    for (int64_t r = 0; r < out_features; r++) {
        float acc[MAX_ROWS] = {0};
        float w[MAX_BLOCK];
        for (int64_t k = 0; k < blocks_per_row; k++) {
            const int64_t b = r * blocks_per_row + k;
            const uint8_t *p = packed + b * (block_size / 2);
            for (int64_t j = 0; j < block_size / 2; j++) memcpy(w + 2 * j, pairs + p[j], 8);
            const float scale = block_scale(codes, plain, nested, offset, dynamic, b);
            for (int64_t m = 0; m < rows; m++) {
                const float *xb = x + m * in_features + k * block_size;
                float dot = 0.0f;
                #pragma omp simd reduction(+:dot)
                for (int64_t j = 0; j < block_size; j++) dot += w[j] * xb[j];
                acc[m] += dot * scale;
            }
        }
        for (int64_t m = 0; m < rows; m++) y[m * out_features + r] = acc[m];
    }
}
"""
MAX_ROWS = 8  # the C source's MAX_ROWS: the most rows of x the matvec takes
# Compiler flags, tried in order until one set builds (the first wins on gcc/clang with OpenMP).
FLAG_SETS = (("-O3", "-march=native", "-fopenmp"), ("-O3", "-fopenmp"), ("-O3",))
_COMMON_FLAGS = ("-shared", "-fPIC", "-std=gnu11", "-ffp-contract=off")

_P, _I64, _F, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "peftlab_nf4_dequantize": [_P, _P, _P, _P, _F, _P, _P, _I64, _I64, _P, _INT, _INT],
    "peftlab_nf4_matvec": [_P, _I64, _P, _P, _P, _P, _F, _P, _P, _I64, _I64, _I64, _P, _INT],
}


class NativeKernels:
    """The loaded library; ``single_thread`` when a second OpenMP runtime would fight PyTorch's."""

    def __init__(self, library: ctypes.CDLL, single_thread: bool) -> None:
        for name, argtypes in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = argtypes, None
        self.dequantize = library.peftlab_nf4_dequantize
        self.matvec = library.peftlab_nf4_matvec
        self.single_thread = single_thread


def cache_dir() -> Path:
    root = os.environ.get("PEFTLAB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                           os.path.expanduser("~/.cache"), "peftlab")
    return Path(root) / "kernels"


def _machine() -> str:
    """What -march=native depends on: the architecture and, on Linux, the CPU's feature flags."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


@functools.lru_cache(maxsize=None)
def load() -> NativeKernels:
    """Build (once per machine and source) and load the library; raise with the reason if impossible."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise RuntimeError(f"no C compiler: {os.environ.get('CC', 'cc')!r} is not on PATH (set CC)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256("\n".join([SOURCE, compiler, version, *flags, *_COMMON_FLAGS, _machine()]).encode())
        target = cache_dir() / f"nf4-{key.hexdigest()[:16]}.so"
        if not target.exists():
            error = _build(compiler, flags, target)
            if error:
                errors.append(f"{' '.join(flags)}: {error}")
                continue
        library = ctypes.CDLL(str(target))
        return NativeKernels(library, single_thread="-fopenmp" not in flags or _second_openmp_runtime())
    raise RuntimeError("the C compiler failed: " + "; ".join(errors))


def _build(compiler: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Compile SOURCE to `target` (written under a temporary name, then renamed); the error or None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        source = Path(scratch) / "nf4.c"
        source.write_text(SOURCE)
        built = Path(scratch) / target.name
        result = subprocess.run([compiler, *flags, *_COMMON_FLAGS, str(source), "-o", str(built)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return (result.stderr.strip().splitlines() or ["exit status %d" % result.returncode])[0][:200]
        os.replace(built, target)
    return None


def _second_openmp_runtime() -> bool:
    """True if the process maps more than one OpenMP runtime (Linux; elsewhere assume one)."""
    try:
        with open("/proc/self/maps") as handle:
            paths = {line.split()[-1] for line in handle if any(
                name in line for name in ("libgomp", "libiomp", "libomp"))}
    except OSError:
        return False
    return len({os.path.basename(path) for path in paths}) > 1 or len(paths) > 1
