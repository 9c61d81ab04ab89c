"""Hand-written CPU kernels, built on this machine at first use: `paged_decode` (attention
over the paged KV cache for rows of one query token: decode steps, drafts, and the
decoding rows beside a prompt chunk), `quant_matmul` (weight-only quantized matmuls) and,
on CPUs with AMX, `tile_matmul` (bfloat16 matmuls whose output rows do not depend on the
other rows: `layers/dense.py` says why) and `tile_attention` (a prompt chunk's attention
with AMX tiles, each query's bits its own: `tile_attention.cpp` says why and how).

Why hand-written: PyTorch ships no paged attention for the CPU.  Its own path
(`PagedAttention.attend`) gathers every sequence's keys and values into a new tensor,
casts them to float32 and calls SDPA: three passes over the context and a handful of
dispatches a layer.  Inductor can fuse the gather into the dot products, but compiling
that for every layer took 15 minutes on these two cores (stop 11's note).  The kernel in
`paged_decode.cpp` reads each key and value once, straight from its slot, for all the
query heads that use it, and keys that several sequences share once for all of them.

Attention alone, SmolLM2's heads (3 KV heads of 64, 9 query heads), bfloat16 cache in
16-slot blocks, µs a layer (kernel / PyTorch path, same process, warm caches):
1 x 66 keys 14 / 51, 1 x 1,500 133 / 306, 4 x 66 26 / 66, 16 x 66 91 / 163,
4 x 1,500 491 / 1,124.  Rows sharing 1,431 keys put their queries in the vector lanes
(`attend_lanes` in `attend.h`): 4 rows 402 instead of 676 µs with a dot product per key and
query, 16 rows 1,331 instead of 2,644.  A whole decode step of SmolLM2 int4, compiled, is
1.35-2.35x faster than with PyTorch's path (`layers/attention.py` has the figures).  On
CPUs with AMX, a bfloat16 cache's chunks go through tile products instead
(`attend_tiles.h`): a 4-row decode step with a shared 1,136-token prefix took 33 instead
of 46 ms on one thread.

PyTorch's weight-only kernels for the CPU (`_weight_int4pack_mm_for_cpu`,
`_weight_int8pack_mm`) widen every weight to float; `quant_matmul.cpp` quantizes the few
activation rows to int8 instead and multiplies in integers (AVX-512 VNNI), 2-4x faster at
every row count a decode step has (`layers/quantized.py` has the figures).  It is used only
where it was compiled with VNNI (`quant_matmul()` is None elsewhere): its portable loop is
there to keep the build whole, not to be fast.

Both are compiled with `torch.utils.cpp_extension` (ninja, the system's C++ compiler,
ATen's headers), for this CPU (`-march=native`), into one library in limelight's cache
directory under a name that changes with the sources, the flags, torch's version and the
CPU: ~20 s once, then a library load.  Where that fails (no compiler) the engine logs why
once and runs PyTorch's paths; `LIMELIGHT_CPU_KERNELS=0` chooses those too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from limelight.engine.paths import cache_dir

log = logging.getLogger(__name__)

DTYPES = frozenset({torch.float32, torch.bfloat16})  # of the tensors they take
_HERE = Path(__file__).parent
_SOURCES = [
    _HERE / name
    for name in ("paged_decode.cpp", "quant_matmul.cpp", "tile_matmul.cpp", "tile_attention.cpp")
]
_HEADERS = [
    _HERE / name
    for name in (
        "attend.h",
        "attend_tiles.h",
        "tile.h",
        "convert.h",
        "amx.h",
        "store.h",
        "transpose.h",
    )
]
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
QUANT_ROWS = 16  # output rows packed together by `quant_matmul`'s weight layout
QUANT_GROUP = 32  # inputs per scale and offset
TILE_DEPTH = 32  # inputs one AMX bfloat16 tile product adds up
MAX_TILE_HEAD = 256  # the largest head `tile_attention` takes
_lock = threading.Lock()
Op = Callable[..., torch.Tensor]
_library: list[dict[str, Op]] = []  # [the ops this machine offers], once the build was tried


def paged_decode() -> Op | None:
    """`limelight_kernels::paged_decode`, built and loaded on the first call; None where it
    cannot be (or `LIMELIGHT_CPU_KERNELS=0`).

    paged_decode(q [B, Hkv, G, D], k_cache, v_cache [slots, Hkv, D], own_slots [B, L],
    own_begin [B], own_end [B], shared_rows [R], shared_slots [S], scale, softcap, k_new=None,
    v_new=None, new_slots=None) → [B, Hkv, G, D] in q's dtype: first k_new and v_new [N,
    Hkv, D] (the cache's dtype) go to their slots `new_slots` [N]; then row b attends to the
    keys at own_slots[b, own_begin[b]:own_end[b]] and, if it is one of `shared_rows`, to
    those at `shared_slots`; softcap 0 for none.  float32 or bfloat16 queries and caches;
    slot and range tensors int64."""
    return _ops().get("paged_decode")


def quant_matmul() -> Op | None:
    """`limelight_kernels::quant_matmul` where it was built with AVX-512 VNNI, else None.

    quant_matmul(x [M, K], qweight [N / 16, K / 32, 64 * (1 + bits)], bits) → [M, N] in x's
    dtype (float32 or bfloat16), with qweight laid out by `layers.quantized.pack_levels`."""
    return _ops().get("quant_matmul")


def quant_matmul_uses_amx() -> bool:
    """Whether `quant_matmul` multiplies passes of 12 to 16 rows with AMX tiles (built for a
    CPU with AMX, on Linux, which lent the tiles to this process)."""
    return "quant_matmul_amx" in _ops()


def tile_matmul() -> Op | None:
    """`limelight_kernels::tile_matmul` where the CPU lends AMX tiles, else None.

    tile_matmul(x [M, K] bfloat16, weight [N / 16, K / 32, 16, 32], n) → [M, n] bfloat16,
    with the weight laid out by `layers.dense.pack_tiles`; each row's output bits do not
    depend on the other rows."""
    return _ops().get("tile_matmul")


def tile_quant_matmul() -> Op | None:
    """`limelight_kernels::tile_quant_matmul` where the CPU lends AMX tiles, else None.

    tile_quant_matmul(x [M, K] bfloat16, qweight [N / 16, K / 32, 64 * (1 + bits)], bits, n)
    → [M, n] bfloat16: x times `quant_matmul`'s weights, each turned into bfloat16 (w = d·q
    + m) and multiplied as `tile_matmul` multiplies: each row's bits do not depend on the
    other rows."""
    return _ops().get("tile_quant_matmul")


def tile_attention() -> Op | None:
    """`limelight_kernels::tile_attention` where the CPU lends AMX tiles, else None.

    tile_attention(q [L, H, D], k_cache, v_cache [slots, Hkv, D], slots [start + L], start,
    scale, softcap, window, k_new=None, v_new=None, new_slots=None) → [L, H * D], all
    bfloat16: first k_new and v_new [N, Hkv, D] go to their slots `new_slots` [N]; then
    the queries of one sequence's positions start .. start + L - 1 attend to its keys at
    `slots`, causally, softcap and window 0 for none.  Each query's bits do not depend on
    the other queries.  Heads of `tile_attention_fits` sizes only."""
    return _ops().get("tile_attention")


def tile_attention_fits(head_dim: int) -> bool:
    """Whether `tile_attention` takes heads of this size: whole tile depths, up to 256."""
    return head_dim % TILE_DEPTH == 0 and head_dim <= MAX_TILE_HEAD


def _ops() -> dict[str, Op]:
    """The ops, looked up once: a step asks for them in every layer."""
    if not _library:
        with _lock:
            if not _library:
                _library.append(_offered() if _build() else {})
    return _library[0]


def _offered() -> dict[str, Op]:
    """The loaded library's ops that this CPU and build can run."""
    ops = torch.ops.limelight_kernels
    offered: dict[str, Op] = {"paged_decode": ops.paged_decode}
    if ops.quant_matmul_vectorized():
        offered["quant_matmul"] = ops.quant_matmul
    if ops.quant_matmul_uses_amx():
        offered["quant_matmul_amx"] = ops.quant_matmul
    if ops.tile_matmul_usable():
        offered["tile_matmul"] = ops.tile_matmul
        offered["tile_quant_matmul"] = ops.tile_quant_matmul
    if ops.tile_attention_usable():
        offered["tile_attention"] = ops.tile_attention
    return offered


def _build() -> bool:
    if os.environ.get("LIMELIGHT_CPU_KERNELS", "1") == "0":
        return False
    from torch.utils import cpp_extension

    sources = [path.read_bytes() for path in (*_SOURCES, *_HEADERS)]
    facts = [" ".join(_FLAGS).encode(), torch.__version__.encode(), _cpu().encode()]
    key = hashlib.sha256(b"\0".join(sources + facts)).hexdigest()[:16]
    name = f"limelight_kernels_{key}"
    directory = cache_dir() / "kernels" / name
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _with_ninja_on_path()
        cpp_extension.load(
            name=name,
            sources=[str(path) for path in _SOURCES],
            extra_cflags=_FLAGS,
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
    except Exception as error:  # no compiler, no ninja, a toolchain that rejects the flags
        log.warning("CPU kernels not built (%s); the engine runs PyTorch's paths", error)
        return False
    _register_shapes()
    return True


def _register_shapes() -> None:
    """The output shapes torch.compile traces with (the kernels run on real tensors only)."""

    @torch.library.register_fake("limelight_kernels::quant_matmul")
    def _(x: torch.Tensor, qweight: torch.Tensor, bits: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], qweight.shape[0] * QUANT_ROWS))

    @torch.library.register_fake("limelight_kernels::tile_matmul")
    def _(x: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], n))

    @torch.library.register_fake("limelight_kernels::tile_quant_matmul")
    def _(x: torch.Tensor, qweight: torch.Tensor, bits: int, n: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], n))


def _cpu() -> str:
    """What `-march=native` compiles for: the CPU's model name and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _with_ninja_on_path() -> None:
    """cpp_extension runs `ninja` from PATH; the `ninja` package's binary is there only
    when its environment is activated."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path]) if path else ninja.BIN_DIR
