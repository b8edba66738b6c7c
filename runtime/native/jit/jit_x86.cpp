// Code generator for weight-specialised conv tiles (see jit_x86.h). Emits EVEX-encoded AVX-512
// instructions with one addressing form, [base + disp32] (base rdi, rsi, rdx or rcx: the four
// pointer arguments of the System V call), so every encoding below is one fixed pattern.
#include "jit/jit_x86.h"
#include <cstring>
#include <limits>
#include <map>
#include <set>

#if defined(__x86_64__) && defined(__linux__)
#include <sys/mman.h>
#define FD_JIT_X86 1
#endif

namespace fd {

#ifdef FD_JIT_X86
namespace {

// Registers: the clamp bounds live in zmm31 (lower) and zmm30 (upper) when the epilogue
// clamps, every input vector is loaded into the one register below them (register renaming
// keeps loads ahead of the FMAs that consume them), and all the others are accumulators: a
// tile of more output channels shares each input load among more FMAs, and the big layers
// stream their input window from L2 at every position. At 224 px, 90%, 16 images, one thread
// (AMD EPYC Zen4), alternating processes, against 24 channels a tile with six rotating input
// registers: ResNet-18 0.94x the time (its 7x7 stage 0.88x), ResNet-50 0.95x, DenseNet-121
// 0.94x; MobileNetV2's ReLU6 tail and the CIFAR-size models at 32 images within noise.
constexpr int kVectorRegs = 32;
constexpr int kLoReg = 31, kHiReg = 30;
// A conv gets code only when all three hold (measured at batch 32, one thread), the first two
// waived for a position-major input (see below):
// - its input loads feed >= kJitMinReuse FMAs on average (the CSR kernel: 1). ResNet-20x2's
//   layers share ~2.0-2.4 at 90% sparsity, 1.4-1.7 at 95% and 1.1-1.3 at 98%, where the convs
//   are bound by memory: with a bound of 1.25 the 98% model ran 2% slower, with 1.3 within 1%;
// - it has >= kJitMinTapsPerChannel taps per output channel: per position a tile also spends a
//   bias broadcast, a clamp and a store on each channel, where the CSR kernel shares its
//   per-tap work among 8 positions (MobileNetV1 at 95-98% ran 6-13% slower without this rule;
//   6 against 8, same process, AMD EPYC Zen4: ResNet-50 90% at 224 px, 16 images 0.97x the
//   time, MobileNetV1-CIFAR 90-98% and ResNet-20x2 95-98% at 32 images 0.96-0.99x);
// - its code fits kJitMaxCode, or kJitMaxRowCode when its output rows have at least
//   kJitRowPositions positions. Tiles run in runs of about kJitRunCode of code, each run at every
//   position of a row before the next (ConvStep::run_jit), so a run's code is fetched once per
//   row: ResNet-50 at 224 px, 90%, 16 images, one thread (AMD EPYC Zen4): 0.87-0.89x the time
//   with every qualifying conv on code (47 of 53 convs against 6 under 64 KB), ResNet-18 0.94x,
//   ResNet-20x2 on 8x8-32x32 planes 0.94-0.98x; MobileNetV1-CIFAR 95% (4x4 planes) 1.10x, hence
//   the row length. Before runs, a 270 KB layer ran at 43 GMAC/s against 60-67 for <= 77 KB
//   in a standalone harness (every tile at every position: the whole code once per position).
// Both rules compare with the CSR kernel on channel-major planes. On a position-major input
// (layout.Tensor.position_major) its chunk of 16 positions reads 16 x C input vectors, past
// L1, where a tile reads one position's C, so there every conv whose code fits gets code.
// Same process, one thread, AMD EPYC Zen4, rules waived / kept: ResNet-20x2 98% at 32 images
// 0.59x the time (position-major had made it 1.57x slower than channel-major), ResNet-18 98%
// at 224 px, 16 images 0.87x, ResNet-50 95% 0.88-0.92x (its 64 -> 256 1x1 convs have 3.2 taps
// a channel), MobileNetV1-CIFAR 95% 0.92x; 90% models, ResNet-50 98% and MobileNetV1 98%
// within 2%.
constexpr double kJitMinReuse = 1.3;
// Planar (one image, 16 stream positions a vector): the CSR kernel loads each weight once per
// chunk of up to 16 vectors, the tile once per vector, so a load has to feed more FMAs.
constexpr double kJitMinPlanarReuse = 2.0;
constexpr double kJitMinTapsPerChannel = 6.0;
constexpr size_t kJitMaxCode = 64 * 1024;
constexpr size_t kJitMaxRowCode = 4 << 20;
constexpr int64_t kJitRowPositions = 7;
constexpr size_t kJitRunCode = 32 * 1024;
// Interleaved convs whose output rows are at least kJitPrefetchRowBytes prefetch the output (and
// residual) vectors kJitPrefetchPositions positions ahead: such rows outgrow what the L2 keeps
// of a row wavefront, and each channel is its own stream (a 256-channel row is 256). ResNet-50
// 90% at 224 px, 16 images (56x56 planes: 917 KB rows), AMD EPYC Zen4: one thread 0.96-0.99x
// the time (4 alternating processes), two threads 0.97x, ResNet-18 0.97-0.99x; ResNet-20x2 on
// CIFAR planes (64 KB rows) ran ~2% slower with it, hence the row bound.
constexpr int64_t kJitPrefetchRowBytes = 128 * 1024;
constexpr int64_t kJitPrefetchPositions = 8;
// 1x1 convs on rows of >= kJitPrefetchInputPositions positions also prefetch each input vector
// kJitPrefetchPositions positions ahead, once per thread range (in its first tile that loads
// it): a 1x1 conv reads a fresh vector of every input channel at each position, one stream a
// channel, and long rows waste few prefetches past their end. ResNet-50 90% at 224 px, 16
// images, one thread (AMD EPYC Zen4): faster in 9 of 10 alternating pairs, 0.98x the time in
// the quieter five; ResNet-18, MobileNetV1-CIFAR and ResNet-20x2 unchanged. Prefetching every
// conv's input was 1.05-1.08x slower, and rows of 14 positions gained nothing.
constexpr int64_t kJitPrefetchInputPositions = 28;
// Interleaved convs the planner splits into input-channel blocks (for the CSR kernel) get a piece
// of code per block when a position reads more than kJitBlockWindowBytes of input: a tile of
// all blocks then streams its input from L2 at every position, while a block's pieces swept
// along the row read the columns it shares with the previous position from L1. Per conv, 16
// images, one thread, median of 8 alternating profiles (AMD EPYC Zen4), blocked / whole time:
// 3x3 convs 128 channels at 28x28 0.96, 256 at 14x14 0.94 (95%: 0.91), 512 at 7x7 0.89
// (0.92); 1x1 2048 -> 512 0.94; while 3x3 64 channels at 56x56 (37 KB a position) took 1.05
// and 1x1 convs of 512-1024 input channels 0.97-1.03 (docs/performance-log.md, 2026-12-07).
constexpr int64_t kJitBlockWindowBytes = 64 * 1024;
// Bytes of one interleaved position: a vector of 16 lanes.
constexpr int64_t kVectorBytes = 64;
static_assert(JitConv::kPartialFloats * 4 == JitConv::kTileChannels * kVectorBytes);

// System V argument registers: in, out, table, res, aux (mask or partial sums).
constexpr int kIn = 7, kOut = 6, kTable = 2, kRes = 1, kAux = 8;

class Emitter {
 public:
  // op zmm_reg, zmm_src, [base + disp] (src = 0 and unused for two-operand forms);
  // map 1 = 0F, 2 = 0F38; pp 0 = none, 1 = 66; bcast: the memory operand is one float
  // broadcast to all 16 lanes.
  // disp8: the displacement is disp8 * N with N the memory operand's size (EVEX compressed
  // displacement: 4 for a broadcast float, 64 for a vector), one byte instead of four.
  void vec_mem(int map, int pp, uint8_t opcode, int reg, int src, int base, int64_t disp,
               bool bcast, bool disp8 = false) {
    const int r = (reg >> 3) & 1, r2 = (reg >> 4) & 1, v2 = (src >> 4) & 1, b = (base >> 3) & 1;
    code_.push_back(0x62);
    code_.push_back(static_cast<uint8_t>(((r ^ 1) << 7) | (1 << 6) | ((b ^ 1) << 5) |
                                         ((r2 ^ 1) << 4) | map));
    code_.push_back(static_cast<uint8_t>((((~src) & 15) << 3) | (1 << 2) | pp));
    code_.push_back(static_cast<uint8_t>((2 << 5) | ((bcast ? 1 : 0) << 4) | ((v2 ^ 1) << 3)));
    code_.push_back(opcode);
    code_.push_back(static_cast<uint8_t>(((disp8 ? 1 : 2) << 6) | ((reg & 7) << 3) | (base & 7)));
    if (disp8) {
      code_.push_back(static_cast<uint8_t>(static_cast<int8_t>(disp)));
      return;
    }
    const int32_t d = static_cast<int32_t>(disp);
    for (int i = 0; i < 4; ++i) code_.push_back(static_cast<uint8_t>((d >> (8 * i)) & 0xFF));
  }
  void load(int reg, int base, int64_t disp) { vec_mem(1, 0, 0x10, reg, 0, base, disp, false); }
  void store(int reg, int base, int64_t disp) { vec_mem(1, 0, 0x11, reg, 0, base, disp, false); }
  void broadcast(int reg, int base, int64_t disp) {
    vec_mem(2, 1, 0x18, reg, 0, base, disp, false);
  }
  // acc += x * broadcast([base + disp8 * 4]).
  void fma_bcast(int acc, int x, int base, int disp8) {
    vec_mem(2, 1, 0xB8, acc, x, base, disp8, true, true);
  }
  // add base, imm32 (64-bit general register 0..7).
  void add_imm(int base, int32_t imm) {
    code_.push_back(0x48);
    code_.push_back(0x81);
    code_.push_back(static_cast<uint8_t>(0xC0 | (base & 7)));
    for (int i = 0; i < 4; ++i) code_.push_back(static_cast<uint8_t>((imm >> (8 * i)) & 0xFF));
  }
  void add(int reg, int base, int64_t disp) { vec_mem(1, 0, 0x58, reg, reg, base, disp, false); }
  // reg &= [base + disp] (vpandd: a planar store keeps only the lanes its mask word marks).
  void and_mem(int reg, int base, int64_t disp) {
    vec_mem(1, 1, 0xDB, reg, reg, base, disp, false);
  }
  // op zmm_reg, zmm_src, zmm_rm (register operands only).
  void vec_reg(int map, int pp, uint8_t opcode, int reg, int src, int rm) {
    code_.push_back(0x62);
    code_.push_back(static_cast<uint8_t>(((((reg >> 3) & 1) ^ 1) << 7) |
                                         ((((rm >> 4) & 1) ^ 1) << 6) |
                                         ((((rm >> 3) & 1) ^ 1) << 5) |
                                         ((((reg >> 4) & 1) ^ 1) << 4) | map));
    code_.push_back(static_cast<uint8_t>((((~src) & 15) << 3) | (1 << 2) | pp));
    code_.push_back(static_cast<uint8_t>((2 << 5) | ((((src >> 4) & 1) ^ 1) << 3)));
    code_.push_back(opcode);
    code_.push_back(static_cast<uint8_t>(0xC0 | ((reg & 7) << 3) | (rm & 7)));
  }
  // reg = max(src, reg) / min(src, reg): with the value as the second operand a NaN stays NaN
  // (x86 max/min return the second operand when either is NaN).
  void max_reg(int reg, int src) { vec_reg(1, 0, 0x5F, reg, src, reg); }
  void min_reg(int reg, int src) { vec_reg(1, 0, 0x5D, reg, src, reg); }
  void ret() { code_.push_back(0xC3); }
  // prefetchw (write) or prefetcht0 [base + disp32], base one of the registers 0..7.
  void prefetch(int base, int64_t disp, bool write) {
    code_.push_back(0x0F);
    code_.push_back(write ? 0x0D : 0x18);
    code_.push_back(static_cast<uint8_t>(0x80 | (1 << 3) | (base & 7)));
    const int32_t d = static_cast<int32_t>(disp);
    for (int i = 0; i < 4; ++i) code_.push_back(static_cast<uint8_t>((d >> (8 * i)) & 0xFF));
  }
  size_t size() const { return code_.size(); }
  const std::vector<uint8_t>& bytes() const { return code_; }

 private:
  std::vector<uint8_t> code_;
};

bool fits_disp32(int64_t bytes) {
  return bytes >= std::numeric_limits<int32_t>::min() &&
         bytes <= std::numeric_limits<int32_t>::max();
}

// The table: [lo, hi, bias of every channel, then each tile's weights in emission order].
constexpr int64_t kLoIndex = 0, kHiIndex = 1, kBiasIndex = 2;

// Taps of channels [first, first + count) grouped by input offset (ascending): (channel in the
// tile, CSR index) pairs. Empty when some channel's offsets are not strictly ascending.
// With input-channel blocks, only the taps of block `block`.
std::map<int32_t, std::vector<std::pair<int, int32_t>>> tile_taps(const JitConvSpec& s,
                                                                  int64_t first, int64_t count,
                                                                  int64_t block,
                                                                  bool* ascending) {
  std::map<int32_t, std::vector<std::pair<int, int32_t>>> taps;
  *ascending = true;
  for (int64_t k = 0; k < count; ++k) {
    int32_t j0 = s.ptr[first + k], j1 = s.ptr[first + k + 1];
    if (s.blocks > 1) {
      const int32_t* bp = s.block_ptr + (first + k) * (s.blocks + 1) + block;
      j0 = bp[0];
      j1 = bp[1];
    }
    for (int32_t j = j0; j < j1; ++j) {
      if (j > j0 && s.off[j] <= s.off[j - 1]) *ascending = false;
      taps[s.off[j]].push_back({static_cast<int>(k), j});
    }
  }
  return taps;
}

bool clamps(const JitConvSpec& s) { return s.act.kind == kActClip; }
bool clamps_above(const JitConvSpec& s) {
  return clamps(s) && s.act.hi != std::numeric_limits<float>::infinity();
}

// Output channels of a tile: every register but the input's and the clamp bounds'.
int tile_channels(const JitConvSpec& s) {
  return kVectorRegs - 1 - (clamps(s) ? 1 : 0) - (clamps_above(s) ? 1 : 0);
}

// True when the tiles prefetch their output and residual vectors (kJitPrefetchRowBytes).
bool wants_output_prefetch(const JitConvSpec& s) {
  return !s.masked && s.channels * s.positions * kVectorBytes >= kJitPrefetchRowBytes;
}

// True when the tiles prefetch their input vectors (kJitPrefetchInputPositions).
bool wants_input_prefetch(const JitConvSpec& s) {
  return !s.masked && s.pointwise && s.positions >= kJitPrefetchInputPositions;
}

// Bytes of input one position reads: a vector per distinct tap offset.
int64_t input_window_bytes(const JitConvSpec& s) {
  std::set<int32_t> offsets;
  for (int32_t j = 0; j < s.ptr[s.channels]; ++j) offsets.insert(s.off[j]);
  return static_cast<int64_t>(offsets.size()) * kVectorBytes;
}

// Emits one tile (of input-channel block `block`); false when a displacement does not fit 32
// bits. Counts loads and FMAs. The first block starts at the bias, later ones at the partial
// sums in aux; all but the last store their sums back there instead of the epilogue.
bool emit_tile(const JitConvSpec& s, int64_t first, int64_t count, int64_t block, Emitter& e,
               std::vector<float>& table, int64_t* loads, int64_t* fmas,
               std::set<int32_t>* prefetched) {
  bool ascending = true;
  const auto taps = tile_taps(s, first, count, block, &ascending);
  if (!ascending) return false;
  const auto skipped = [&](int64_t k) {
    return s.skip_empty && s.ptr[first + k] == s.ptr[first + k + 1];
  };
  const auto partial = [](int64_t k) { return k * kVectorBytes; };
  for (int64_t k = 0; k < count; ++k) {
    if (skipped(k)) continue;
    if (block == 0) e.broadcast(static_cast<int>(k), kTable, (kBiasIndex + first + k) * 4);
    else e.load(static_cast<int>(k), kAux, partial(k));
  }
  const bool clamp = clamps(s), upper = clamps_above(s);
  if (clamp) e.broadcast(kLoReg, kTable, kLoIndex * 4);
  if (upper) e.broadcast(kHiReg, kTable, kHiIndex * 4);
  // The weights follow each other in the table: the table register moves ahead in steps of
  // up to 255 weights so every FMA addresses its weight with a one-byte displacement (7 bytes
  // an FMA instead of 10: large layers' code, which the plan holds, is 30% smaller).
  int64_t moved = 0;  // floats the table register has moved
  const int input = tile_channels(s);
  const bool prefetch_in = wants_input_prefetch(s);
  for (const auto& [offset, users] : taps) {
    const int64_t ahead = int64_t{offset} * 4 + kJitPrefetchPositions * s.in_pos_bytes;
    if (prefetch_in && fits_disp32(ahead) && prefetched->insert(offset).second)
      e.prefetch(kIn, ahead, false);
    e.load(input, kIn, int64_t{offset} * 4);
    ++*loads;
    for (const auto& [k, j] : users) {
      const int64_t index = static_cast<int64_t>(table.size());
      if (!fits_disp32(index * 4)) return false;
      table.push_back(s.val[j]);
      if (index - moved > 127) {
        e.add_imm(kTable, static_cast<int32_t>((index + 128 - moved) * 4));
        moved = index + 128;
      }
      e.fma_bcast(k, input, kTable, static_cast<int>(index - moved));
      ++*fmas;
    }
  }
  if (block + 1 < s.blocks) {
    for (int64_t k = 0; k < count; ++k)
      if (!skipped(k)) e.store(static_cast<int>(k), kAux, partial(k));
    e.ret();
    return true;
  }
  const bool prefetch = wants_output_prefetch(s);
  const int64_t ahead = kJitPrefetchPositions * s.out_pos_bytes;
  const int64_t res_ahead = kJitPrefetchPositions * s.res_pos_bytes;
  for (int64_t k = 0; k < count; ++k) {
    if (skipped(k)) continue;
    const int reg = static_cast<int>(k);
    const int64_t out = (first + k) * s.out_cs * 4, res = (first + k) * s.res_cs * 4;
    if (!fits_disp32(out) || (s.has_res && !fits_disp32(res))) return false;
    // A prefetch whose displacement would not fit is left out (it only hides latency).
    if (prefetch && fits_disp32(out + ahead)) e.prefetch(kOut, out + ahead, true);
    if (prefetch && s.has_res && fits_disp32(res + res_ahead))
      e.prefetch(kRes, res + res_ahead, false);
    if (s.has_res) e.add(reg, kRes, res);  // residual first: the output may overwrite it
    if (clamp) e.max_reg(reg, kLoReg);
    if (upper) e.min_reg(reg, kHiReg);
    if (s.masked) e.and_mem(reg, kAux, 0);
    e.store(reg, kOut, out);
  }
  e.ret();
  return true;
}

}  // namespace
#endif  // FD_JIT_X86

std::unique_ptr<JitConv> JitConv::build(const JitConvSpec& spec) {
#ifndef FD_JIT_X86
  (void)spec;
  return nullptr;
#else
  if (spec.bounds.size() < 2 || spec.channels <= 0) return nullptr;
  if (spec.blocks < 1 || (spec.blocks > 1 && (spec.masked || !spec.block_ptr))) return nullptr;
  JitConvSpec s = spec;
  if (s.blocks > 1 && input_window_bytes(s) <= kJitBlockWindowBytes) s.blocks = 1;
  for (int32_t j = 0; j < s.ptr[s.channels]; ++j)
    if (!fits_disp32(int64_t{s.off[j]} * 4)) return nullptr;
  std::unique_ptr<JitConv> jit(new JitConv());
  jit->table_ = {s.act.lo, s.act.hi};
  for (int64_t c = 0; c < s.channels; ++c) jit->table_.push_back(s.bias ? s.bias[c] : 0.0f);
  // Tiles of balanced size inside each thread range, so a range is always whole tiles.
  Emitter e;
  const size_t max_code = s.positions >= kJitRowPositions ? kJitMaxRowCode : kJitMaxCode;
  std::vector<size_t> starts;
  size_t run_begin = 0;
  std::set<int32_t> prefetched;  // input offsets prefetched in this thread range
  int64_t loads = 0, fmas = 0;
  const int width = tile_channels(s);
  for (size_t t = 0; t + 1 < s.bounds.size(); ++t) {
    const int64_t c0 = s.bounds[t], n = s.bounds[t + 1] - c0;
    const int64_t count = (n + width - 1) / width;
    prefetched.clear();
    for (int64_t i = 0; i < count; ++i) {
      const int64_t first = c0 + n * i / count, last = c0 + n * (i + 1) / count;
      for (int64_t b = 0; b < s.blocks; ++b) {
        const size_t start = e.size();
        starts.push_back(start);
        if (!emit_tile(s, first, last - first, b, e, jit->table_, &loads, &fmas, &prefetched))
          return nullptr;
        // A run never straddles thread ranges, so any range of whole tiles starts a run; each
        // block of a blocked conv is a run of its own.
        const bool run_start = i == 0 || s.blocks > 1 || e.size() - run_begin > kJitRunCode;
        if (run_start) run_begin = start;
        jit->tiles_.push_back({first, last - first, nullptr, run_start, b});
        if (e.size() > max_code) return nullptr;
      }
    }
  }
  const double min_reuse = s.masked ? kJitMinPlanarReuse : kJitMinReuse;
  const bool few_fmas =
      static_cast<double>(fmas) < min_reuse * static_cast<double>(loads) ||
      static_cast<double>(fmas) < kJitMinTapsPerChannel * static_cast<double>(s.channels);
  if (fmas == 0 || (few_fmas && !s.position_major_input)) return nullptr;
  const size_t bytes = e.size();
  void* code = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (code == MAP_FAILED) return nullptr;
  std::memcpy(code, e.bytes().data(), bytes);
  if (mprotect(code, bytes, PROT_READ | PROT_EXEC) != 0) {
    munmap(code, bytes);
    return nullptr;
  }
  jit->code_ = code;
  jit->code_bytes_ = bytes;
  jit->prefetches_output_ = wants_output_prefetch(s);
  jit->prefetches_input_ = wants_input_prefetch(s);
  jit->blocks_ = s.blocks;
  for (size_t i = 0; i < jit->tiles_.size(); ++i)
    jit->tiles_[i].fn = reinterpret_cast<JitTileFn>(static_cast<uint8_t*>(code) + starts[i]);
  return jit;
#endif
}

JitConv::~JitConv() {
#ifdef FD_JIT_X86
  if (code_) munmap(code_, code_bytes_);
#endif
}

bool JitConv::covers(int64_t u0, int64_t u1) const {
  for (const JitTile& t : tiles_) {
    const bool inside = t.first >= u0 && t.first + t.count <= u1;
    const bool outside = t.first + t.count <= u0 || t.first >= u1;
    if (!inside && !outside) return false;
  }
  return true;
}

}  // namespace fd
