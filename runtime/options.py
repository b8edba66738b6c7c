"""Every option of the engine, in one place: ``EngineOptions`` (what a user sets) and
``PlannerOptions`` (the planner's tunables, with the measurements behind their defaults in
docs/performance.md).

Environment variables only supply defaults, read once by :meth:`EngineOptions.from_env` when an
``Engine`` is made without explicit options:

    FEATHERDEPLOY_BACKEND       auto | native | onnxruntime
    FEATHERDEPLOY_BATCH_LAYOUT  auto | interleaved | planar | split
    FEATHERDEPLOY_JIT           1 | 0
    FEATHERDEPLOY_ISA           auto | generic | avx2 | avx512
    FEATHERDEPLOY_TUNING        lazy | load | off
    FEATHERDEPLOY_FALLBACK      1 | 0

The planner and the native plan receive these objects; nothing below them reads the environment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from featherdeploy.runtime.errors import EngineError

__all__ = ["BACKENDS", "BATCH_LAYOUTS", "ISAS", "TUNINGS", "MEMORY_POLICIES", "MAX_THREADS",
           "EngineOptions", "PlannerOptions", "OptionsError", "default_threads"]

BACKENDS = ("auto", "native", "onnxruntime")
BATCH_LAYOUTS = ("auto", "interleaved", "planar", "split")
ISAS = ("auto", "generic", "avx2", "avx512")
TUNINGS = ("lazy", "load", "off")
MEMORY_POLICIES = ("shared", "by_layout")  # PlannerOptions.memory (runtime/planner/memory.py)
WINOGRAD_TILES = (3, 5)  # PlannerOptions.winograd_interleaved_tile (kernels/winograd.h)
MAX_THREADS = 1024  # the native plan's limit (exec/plan.cpp kMaxThreads)


class OptionsError(EngineError):
    """An option of the wrong type or out of range."""


def default_threads() -> int:
    """All cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PlannerOptions:
    """Tunables of the planner. The defaults are measured (each field's comment, docs/runtime.md
    and docs/performance-log.md); tests and benchmarks set them to exercise or compare paths."""

    # Conv work units per thread (channel ranges or output bands).
    units_per_thread: int = 1
    # Input-channel blocks of the interleaved CSR kernel: about L1 each, and only while every
    # block keeps this many taps per output channel.
    ic_block_bytes: int = 48 * 1024
    min_block_taps: int = 10
    # Consecutive convs run as one row wavefront when a plan runs serially (0 or 1: never).
    wavefront_layers: int = 3
    # Threads split a conv's output rows instead of its channels from this output size, or from
    # the smaller one when the conv is part of a chain of such convs.
    row_split_min_bytes: int = 512 * 1024
    row_split_chain_bytes: int = 64 * 1024
    # ... but only when the rows cut into bands this even: the largest band's rows times the
    # bands over the rows. 7 rows in 2 bands (1.14) leave a thread idle a seventh of each conv;
    # splitting those convs by channels instead, two threads, AMD EPYC Zen4: ResNet-50 90% at
    # batch 1 1.07-1.14x faster, ResNet-18 1.03-1.12x; at 16 images 0.97-1.07x (noise)
    # (docs/performance-log.md, 2026-12-07 evening).
    row_split_max_imbalance: float = 1.05
    # In parallel plans a wavefront group runs in row bands, one per thread (native WaveBands),
    # when a member's output is at least this big: out of L2, where each core then reads the rows
    # it wrote moments before. Smaller groups run layer by layer: their tensors stay in cache
    # and the rows between bands (computed on one thread) cost more (docs/performance-log.md).
    wave_band_min_bytes: int = 8 << 20
    # In an interleaved plan only planes of at most this many pixels are interleaved. Every
    # plane of a 224-px network: ResNet-18 at 16 images, AMD EPYC Zen4, one thread, ran 143 ms
    # interleaved throughout, 165 with planes above 32x32 planar, 189 image by image
    # (docs/performance-log.md, 2026-12-06).
    interleave_max_pixels: int = 1 << 16
    # Interleaved tensors that only group-1 strided CSR convs write and read are stored
    # position-major (a position's channels adjacent; runtime/ops/conv.py). Measurements in
    # docs/performance-log.md (2026-12-07, evening).
    position_major: bool = True
    # A Gemm / MatMul whose constant weight has at most this fraction of nonzeros runs as a
    # sparse 1x1 conv (runtime/passes/sparse_gemm.py); denser ones on the dense GEMM.
    sparse_gemm_density: float = 0.35
    # A planar strided conv with at most this many taps per output channel skips the phase split
    # (a dense 3x3 depthwise conv has 9). MobileNetV2 at 224 px, one thread, AMD EPYC Zen4:
    # batch 1 0.85-0.87x the time of 2 (90% / 95%), batch 16 0.84x; ResNet-18/50 unchanged;
    # 25 made DenseNet-121 1.2x slower (docs/performance-log.md, 2026-12-06).
    direct_max_taps: float = 9.0
    # Batch-1 one-thread plans may store rows as column segments (aligned loads).
    segment_layout: bool = True
    # Dense 1x1 convs on planes up to this many pixels run as a GEMM over output channels.
    gemm_pixels: int = 64
    # Planes of at most this many pixels get no shared border (it would waste most lanes).
    small_plane: int = 16
    # Batch interleaving: at most this many images per group, and a group's largest activation
    # within this many bytes. Whether a group interleaves is timed against image by image
    # (EngineOptions.batch_layout "auto"), so the budget only bounds the memory a group may take.
    max_lanes: int = 16
    lanes_budget_bytes: int = 64 << 20
    # Without timing (EngineOptions.tuning "off") only groups within this budget interleave:
    # small planes, where interleaving measured faster on every model tried.
    untimed_lanes_budget_bytes: int = 4 << 20
    # A batch that does not interleave whole may run its first layers image by image and the
    # rest in groups (planner.batch.interleave_cut), timed like a group: from the earliest cut
    # after which every activation of a group fits this budget. 16 images, one thread, AMD
    # EPYC Zen4, against image by image: 8 MB cuts 0.80-0.91x on MobileNetV2 and V3-Large,
    # EfficientNet-B0, ShuffleNetV2; 16 MB cuts (28x28 and 56x56 stages) were up to 1.05x
    # slower on the models with squeeze-excitation.
    cut_lanes_budget_bytes: int = 8 << 20
    # A dense strided conv over phase planes runs as Winograd F(m x m, 4x4)
    # (runtime/planner/winograd.py) when its taps per output channel are at least this many
    # times the products per plane a Winograd output position costs ((m + 3)^2 / m^2).
    winograd_min_gain: float = 1.5
    # m on batch-interleaved planes (3 or 5; planar planes have 3): 64 products for 25 outputs
    # instead of 36 for 9. Transforms cost more per output (8-point rows), products 0.64x.
    winograd_interleaved_tile: int = 5
    # A max pool whose input only a batch-interleaved Winograd conv writes and only it reads
    # (the ResNet and DenseNet stems) runs inside that conv's step: each activated output joins
    # its pool windows' maxima as its tile is made, so the conv's output (51 MB for 16
    # 224-px images) is never stored and read back (runtime/ops/pool.py).
    pool_in_winograd: bool = True
    # ... and stores past the caches from this output size: far beyond L2 and the L3 share a
    # core has, the next step reads it back from memory anyway (ResNet stems at 16 images,
    # 51 MB: 26.7 -> 21.4 ms, AMD EPYC Zen4).
    stream_store_min_bytes: int = 16 << 20
    # Conv kernel cost model (relative time per stored weight; per output channel overhead).
    csr_cost_per_nnz: float = 1.0
    bsr_cost_per_weight: float = 0.55
    unit_overhead: float = 4.0
    # Arena placement (runtime/planner/memory.py): "shared" packs buffers of any layouts into
    # the same space (greedy by size, borders zeroed where needed); "by_layout" reuses a freed
    # buffer only for a tensor of the same layout (the previous policy, far larger arenas).
    memory: str = "shared"
    # "shared" packs only a workspace whose by_layout arena exceeds this: a smaller one fits L2
    # (1-2 MB) as it is, and packing would add border zero steps (MobileNetV1 at 32 px, batch
    # 1, two threads, AMD EPYC Zen4: 0.396 ms packed, 0.356 not).
    pack_arena_above_bytes: int = 2 << 20
    # Debug aid: workspaces start as NaN instead of zeros (the planner then zeroes every
    # border), so a read of memory no step wrote shows up in the outputs.
    poison_arena: bool = False

    def __post_init__(self) -> None:
        _check_fields(self, "PlannerOptions")
        if self.memory not in MEMORY_POLICIES:
            raise OptionsError(f"PlannerOptions.memory must be one of {MEMORY_POLICIES}, "
                               f"got {self.memory!r}")
        if self.winograd_interleaved_tile not in WINOGRAD_TILES:
            raise OptionsError(f"PlannerOptions.winograd_interleaved_tile must be one of "
                               f"{WINOGRAD_TILES}, got {self.winograd_interleaved_tile!r}")
        for name in ("units_per_thread", "max_lanes"):
            if getattr(self, name) < 1:
                raise OptionsError(f"PlannerOptions.{name} must be >= 1")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    value < 0 or not math.isfinite(value)):
                raise OptionsError(f"PlannerOptions.{f.name} must be finite and >= 0, "
                                   f"got {value!r}")


@dataclass(frozen=True)
class EngineOptions:
    """What a user can choose; see the module docstring for the environment defaults.

    - ``threads``: worker threads (None: every core this process may use).
    - ``backend``: ``native`` (our kernels, with ONNX Runtime for what they lack when
      ``fallback``), ``onnxruntime`` (the whole model on ORT), ``auto`` (ORT for near-dense
      models, whose Conv/Gemm weights are more than ``dense_delegate_density`` nonzero, else
      native).
    - ``fallback``: operators the engine lacks run on ONNX Runtime, in-process; False is strict
      mode (loading fails with every unsupported operator and node listed).
    - ``batch_layout``: how batches run: ``interleaved`` (groups of up to 16 images stored
      position-major), ``planar`` (image by image), ``split`` (image by image up to a cut, then
      interleaved groups; planar where the model has no cut) or ``auto`` (timed, see
      ``tuning``).
    - ``jit``: machine code generated per conv where it pays (x86-64 Linux, AVX-512).
    - ``isa``: kernel variant (``auto`` = the widest this CPU runs).
    - ``tuning``: when choices that are timed get timed (batch-1 threads, batch layout,
      serial row wavefronts or member by member; runtime/tuning.py):
      ``lazy`` at the first run of each new shape, ``load`` when the engine is made (for the
      declared shape and ``tune_batches``), ``off`` never (fixed rules, no timing: results are
      the same in every process).
    - ``plan_cache_size``: plans kept per engine (least recently used evicted).
    - ``compare_ort_above_ms``: with ``backend="auto"`` and tuning on, a shape whose native run
      takes longer than this is also timed on ONNX Runtime (dense), once, and runs on whichever
      was faster (``inf``: never compared). Smaller runs are not worth the probe.
    """

    threads: int | None = None
    backend: str = "auto"
    fallback: bool = True
    batch_layout: str = "auto"
    jit: bool = True
    isa: str = "auto"
    tuning: str = "lazy"
    tune_batches: tuple[int, ...] = ()
    plan_cache_size: int = 8
    dense_delegate_density: float = 0.6
    compare_ort_above_ms: float = 1.0
    planner: PlannerOptions = field(default_factory=PlannerOptions)

    def __post_init__(self) -> None:
        _check_fields(self, "EngineOptions")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise OptionsError(f"threads must be in [1, {MAX_THREADS}] or None, "
                               f"got {self.threads!r}")
        for name, allowed in (("backend", BACKENDS), ("batch_layout", BATCH_LAYOUTS),
                              ("isa", ISAS), ("tuning", TUNINGS)):
            if getattr(self, name) not in allowed:
                raise OptionsError(f"{name} must be one of {allowed}, "
                                   f"got {getattr(self, name)!r}")
        if self.plan_cache_size < 1:
            raise OptionsError(f"plan_cache_size must be >= 1, got {self.plan_cache_size}")
        if any(not isinstance(b, int) or isinstance(b, bool) or b < 1
               for b in self.tune_batches):
            raise OptionsError(f"tune_batches must be positive integers, got {self.tune_batches}")
        if not 0.0 <= self.dense_delegate_density <= 1.0:
            raise OptionsError("dense_delegate_density must be in [0, 1]")
        if not self.compare_ort_above_ms >= 0.0:  # (NaN fails too)
            raise OptionsError(f"compare_ort_above_ms must be >= 0, got "
                               f"{self.compare_ort_above_ms!r}")

    @property
    def resolved_threads(self) -> int:
        return self.threads or default_threads()

    def with_overrides(self, **overrides: Any) -> EngineOptions:
        """A copy with the given (non-None) fields replaced."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise OptionsError(f"unknown engine options {sorted(unknown)}")
        return replace(self, **given)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> EngineOptions:
        """Defaults from the FEATHERDEPLOY_* variables (read now, once), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, key in (("backend", "FEATHERDEPLOY_BACKEND"),
                          ("batch_layout", "FEATHERDEPLOY_BATCH_LAYOUT"),
                          ("isa", "FEATHERDEPLOY_ISA"), ("tuning", "FEATHERDEPLOY_TUNING")):
            if env.get(key):
                values[name] = env[key]
        for name, key in (("jit", "FEATHERDEPLOY_JIT"), ("fallback", "FEATHERDEPLOY_FALLBACK")):
            if env.get(key):
                values[name] = _env_flag(key, env[key])
        return cls(**values).with_overrides(**overrides)


def _env_flag(key: str, value: str) -> bool:
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise OptionsError(f"{key} must be 1 or 0, got {value!r}")


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
          "int | None": (int, type(None)), "tuple[int, ...]": (tuple,),
          "PlannerOptions": (PlannerOptions,)}


def _check_fields(obj: Any, owner: str) -> None:
    """Every field has its declared type (bools are not ints; ints are accepted as floats)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        allowed = _TYPES[str(f.type)]
        if isinstance(value, bool) and bool not in allowed:
            ok = False
        else:
            ok = isinstance(value, allowed)
        if not ok:
            raise OptionsError(f"{owner}.{f.name} must be {f.type}, got {value!r}")
