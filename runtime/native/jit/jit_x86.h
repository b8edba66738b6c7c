// Weight-specialised conv tiles: x86-64 AVX-512 machine code emitted at plan time for one conv
// on the batch-interleaved layout of 16 images (one vector per position), or on one planar image
// in the "fast" stream layout (one vector = 16 consecutive stream positions, kernels/conv_kernels.h;
// the store keeps the valid lanes of the stream's mask, so the zero border stays intact).
//
// For one output vector, a tile of up to kTileChannels output channels keeps one accumulator
// register per channel. Every input offset that any channel of the tile stores a tap at is
// loaded once and feeds all of those channels:
//   acc[k] = bias[k]
//   for each offset o in ascending order, x = load(in + o):
//     acc[k] = fma(x, broadcast(w[k, o]), acc[k])   for each channel k with a tap at o
//   (+ residual, clamp, store)
// Offsets are displacements and weights embedded-broadcast operands (vfmadd231ps with {1to16}),
// so there is no per-tap index arithmetic, and at 90% sparsity one 64-byte load feeds ~3 FMAs
// where the CSR kernel (conv_csr.cpp run_pair) spends one load per FMA. Each channel adds its
// taps in CSR order, so results equal the CSR kernel's bit for bit. ResNet-20x2 at batch 32
// runs 6-9% faster at 90% and 95% sparsity (benchmarks/jit_ab.py).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "activation.h"

namespace fd {

// The tile function: input origin of the position, output and residual origins of channel 0 at
// the position (residual may be null when the conv has none), the constant table, and `aux`: the
// lane mask of the position (planar), the position's partial sums (input-channel blocks: the
// tile's channels, one vector each, JitConv::kPartialFloats), or null.
using JitTileFn = void (*)(const float* in, float* out, const float* table, const float* res,
                           const void* aux);

struct JitTile {
  int64_t first = 0, count = 0;  // output channels [first, first + count)
  JitTileFn fn = nullptr;
  // The first tile of a run whose code together fits the instruction caches: the caller runs a
  // run's tiles at every position of a row before the next run (JitConv::build).
  bool run_start = true;
  // Input-channel block (JitConvSpec::blocks): a tile's blocks follow each other, each its own
  // run; the last one runs the epilogue.
  int64_t block = 0;
};

// What a conv needs for its tiles: CSR weights (per channel ascending offsets, in floats from
// the position's input origin), the thread ranges tiles must not straddle, and the epilogue.
struct JitConvSpec {
  const int32_t* ptr = nullptr;
  const int32_t* off = nullptr;
  const float* val = nullptr;
  const float* bias = nullptr;  // may be null
  int64_t channels = 0;
  std::vector<int64_t> bounds;
  bool skip_empty = false;      // channels without taps are not written (ConvKernelArgs)
  bool has_res = false;
  int64_t out_cs = 0, res_cs = 0;
  int64_t positions = 0;        // output vectors per call: how often a run's code is reused
  bool masked = false;          // planar: AND each stored vector with the position's mask
  int64_t in_pos_bytes = 0;     // interleaved: input bytes from one position to the next
  int64_t out_pos_bytes = 64, res_pos_bytes = 64;  // and output / residual bytes
  bool pointwise = false;       // every tap at the position's own input column and row (1x1)
  bool position_major_input = false;  // layout.Tensor.position_major: in_pos_bytes spans C vectors
  // A clamp is emitted into the tiles; other kinds run after each tile (ConvStep::run_jit).
  Activation act;
  // Interleaved only: > 1 input-channel blocks (ConvKernelArgs::blocks, block_ptr). Each tile
  // is then one piece of code per block, swept over the positions before the next block, so
  // the input a piece reads at neighbouring positions (a 3x3 conv's columns overlap) stays in
  // L1; the partial sums go through `aux` between blocks.
  int64_t blocks = 1;
  const int32_t* block_ptr = nullptr;
};

class JitConv {
 public:
  // Null when this build, CPU or conv does not qualify (not x86-64 Linux, too little input
  // reuse or too few taps per channel on a channel-major input, too much code, offsets beyond
  // 32 bits, or no executable memory). The plan decides whether to ask at all (EngineOptions.jit).
  static std::unique_ptr<JitConv> build(const JitConvSpec& spec);
  // Most output channels of a tile (one accumulator register each; fewer when the epilogue
  // clamps, jit_x86.cpp tile_channels), and the floats of one position's partial sums
  // between blocks (a 16-lane vector per channel of a tile).
  static constexpr int kTileChannels = 31;
  static constexpr int64_t kPartialFloats = kTileChannels * 16;
  ~JitConv();
  JitConv(const JitConv&) = delete;
  JitConv& operator=(const JitConv&) = delete;

  // True when no tile straddles channels [u0, u1), i.e. the range is whole tiles (thread
  // ranges always are; anything else runs the CSR kernel).
  bool covers(int64_t u0, int64_t u1) const;
  const std::vector<JitTile>& tiles() const { return tiles_; }
  // Calls run(b, e) for each run of tiles [b, e) (JitTile::run_start) among those of channels
  // [u0, u1), in order; the caller sweeps its positions once per run.
  template <typename F>
  void for_each_run(int64_t u0, int64_t u1, F&& run) const {
    size_t t0 = 0, t1 = tiles_.size();
    while (t0 < t1 && tiles_[t0].first < u0) ++t0;
    while (t1 > t0 && tiles_[t1 - 1].first >= u1) --t1;
    for (size_t b = t0; b < t1;) {
      size_t e = b + 1;
      while (e < t1 && !tiles_[e].run_start) ++e;
      run(b, e);
      b = e;
    }
  }
  const float* table() const { return table_.data(); }
  // Whether the tiles prefetch the output (and residual) / input vectors of positions ahead.
  bool prefetches_output() const { return prefetches_output_; }
  bool prefetches_input() const { return prefetches_input_; }
  int64_t blocks() const { return blocks_; }

 private:
  JitConv() = default;
  std::vector<JitTile> tiles_;
  std::vector<float> table_;
  void* code_ = nullptr;
  size_t code_bytes_ = 0;
  bool prefetches_output_ = false, prefetches_input_ = false;
  int64_t blocks_ = 1;
};

}  // namespace fd
