// Conv plan steps: schedule the direct-convolution kernels over images and threads.
//
// Stage 0 (only for stride > 1 with a phase split): split each padded input plane into its
//   stride phases, phase(a, b)[i][j] = x_padded[i*sh + a][j*sw + b], so every tap becomes a
//   stride-1 shift. Threads split the (image, channel) planes.
// Stage 1: the kernel; one work unit = one output-channel range (balanced by nonzero count in the
//   planner) over all images of the plan, or one band of output rows (row_units); the kernel
//   shares each weight load between images of tiny planes. (Batches of independent images are
//   usually split by image at the plan level, see Plan::run_images.)
// Every spec is validated once, here, when the step is built.
#include "steps/conv_step.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "jit/jit_x86.h"
#include "kernels/conv_kernels.h"
#include "kernels/winograd.h"
#include "steps/bind.h"
#include "tunables.h"

namespace fd {

namespace {

// Positions a blocked JIT tile (jit/jit_x86.h JitConvSpec::blocks) sweeps before the tile's next
// block: their partial sums (1.5 KB each) stay in L1 beside the block's input.
constexpr int64_t kJitChunkPositions = 8;

bool nondecreasing(const std::vector<int64_t>& v) { return std::is_sorted(v.begin(), v.end()); }

// A 1-D view over floats [first, first + extent) of `space` (the reach of a kernel's reads).
View span_view(int space, int slot, int64_t first, int64_t extent) {
  View v;
  v.space = space;
  v.slot = slot;
  v.origin = first;
  v.dim[3] = extent > 0 ? extent : 1;
  v.stride[3] = 1;
  return v;
}

class ConvStep final : public Step {
 public:
  ConvStep(ConvSpec spec, const PlanContext& ctx) : s_(std::move(spec)), k_(ctx.kernels) {
    for (int64_t* ws : {&s_.in_ws, &s_.out_ws, &s_.res_ws})
      if (*ws == 0) *ws = s_.lanes;
    validate();
    act_ = s_.act.view();
    s_.wave.rows = s_.output.dim[2];
    s_.wave.stride_h = s_.stride_h;
    s_.wave.pad_top = s_.pad_top;
    row_taps_ = s_.bsr && taps_in_rows_of_3() ? 3 : 1;
    // Interleaved convs of 16 images on AVX-512 (one vector per position), and stride-1 convs
    // of one planar image in the fast layout, may run on tiles of machine code made for their
    // weights (jit/jit_x86.h); JitConv::build says whether they pay.
    if (ctx.jit && k_.vector_floats == 16 && s_.val_origin < 0 &&
        (jit_interleaved() || jit_planar())) {
      JitConvSpec j;
      j.ptr = s_.ptr.data();
      j.off = s_.off.data();
      j.val = s_.val.data();
      j.bias = s_.bias.empty() ? nullptr : s_.bias.data();
      j.channels = s_.output.dim[1];
      j.bounds = s_.bounds;
      j.skip_empty = s_.skip_empty;
      j.has_res = s_.has_residual;
      j.out_cs = s_.output.stride[1];
      j.res_cs = s_.has_residual ? s_.residual.stride[1] : 0;
      j.positions = s_.strided ? s_.output.dim[3] / s_.lanes : jit_planar_vectors();
      j.masked = !s_.strided;
      j.in_pos_bytes = s_.stride_w * s_.in_ws * 4;
      j.out_pos_bytes = s_.out_ws * 4;
      j.res_pos_bytes = s_.res_ws * 4;
      j.pointwise = std::all_of(s_.off.begin(), s_.off.end(), [&](int32_t o) {
        return position_major_input() ? o < s_.in_ws : o % s_.input.stride[1] == 0;
      });
      j.position_major_input = s_.strided && position_major_input();
      j.act = act_;
      if (s_.strided && s_.blocks > 1) {
        j.blocks = s_.blocks;
        j.block_ptr = s_.block_ptr.data();
      }
      jit_ = JitConv::build(j);
    }
  }

  int stages() const override { return s_.split_here ? 2 : 1; }
  // Compute stage: (image, channel range) pairs; the ranges are balanced by nonzeros.
  int64_t units(int stage, int64_t hint) const override {
    if (s_.split_here && stage == 0) return hint;
    if (s_.row_units > 0) return s_.row_units;
    return static_cast<int64_t>(s_.bounds.size()) - 1;
  }
  const char* name() const override {
    if (winograd()) return "conv_winograd";
    if (s_.direct) return "conv_csr_direct";
    if (jit_) return "conv_jit";
    return s_.bsr ? "conv_bsr" : (s_.strided ? "conv_csr_strided" : "conv_csr");
  }
  std::string detail() const override {
    std::string d = s_.halo ? "segments" : (s_.lanes > 1 ? "interleaved" : "planar");
    if (s_.lanes > 1) d += " lanes=" + std::to_string(s_.lanes);
    if (position_major()) {  // which of input, output, residual
      d += " position-major=";
      d += s_.in_ws != s_.lanes ? "i" : "-";
      d += s_.out_ws != s_.lanes ? "o" : "-";
      d += s_.res_ws != s_.lanes ? "r" : "-";
    }
    if (s_.phase_split) d += " phase-split";
    if (s_.gather) d += " gather";
    if (s_.blocks > 1) d += " ic-blocks=" + std::to_string(s_.blocks);
    if (pooled()) {
      const auto& q = s_.winograd_pool;
      d += " max-pool=" + std::to_string(q[0]) + "x" + std::to_string(q[1]) + "/" +
           std::to_string(q[2]) + " split=channel-blocks:" + std::to_string(s_.bounds.size() - 1);
    } else if (winograd()) {
      d += " split=tile-rows:" + std::to_string(s_.bounds.size() - 1);
    }
    else if (s_.row_units > 0) d += " split=rows:" + std::to_string(s_.row_units);
    else d += " split=channels:" + std::to_string(s_.bounds.size() - 1);
    if (s_.wave.group >= 0) d += " wavefront=" + std::to_string(s_.wave.group);
    if (jit_) d += " jit-tiles=" + std::to_string(jit_->tiles().size());
    if (jit_ && jit_->blocks() > 1) d += " jit-blocked";
    if (jit_ && jit_->prefetches_input()) d += " prefetch-input";
    if (jit_ && jit_->prefetches_output()) d += " prefetch-output";
    if (s_.act.kind != kActNone) d += std::string(" act=") + kActivationNames[s_.act.kind];
    return d;
  }
  bool light() const override { return false; }
  std::vector<View> views() const override {
    std::vector<View> v = {positions_box(s_.output, s_.out_ws), read_view_};
    if (winograd())
      v[1] = span_view(kArena, 0, s_.scratch_origin, s_.output.dim[0] * winograd_image_floats());
    if (!s_.phase_split || s_.split_here) v.push_back(positions_box(s_.input, s_.in_ws));
    if (s_.has_residual) v.push_back(positions_box(s_.residual, s_.res_ws));
    if (s_.val_origin >= 0) v.push_back(span_view(kArena, 0, s_.val_origin, s_.val.size()));
    return v;
  }

  void run(int stage, const Buffers& buf, int tid, int nth) const override {
    if (s_.split_here && stage == 0) {
      split_phases(buf, tid, nth);
      return;
    }
    (void)nth;
    if (pooled()) {  // threads split channel blocks: no two write one pool row
      int64_t b0, b1;
      split_range(winograd_blocks(), tid, static_cast<int>(units(1, 0)), &b0, &b1);
      if (b0 < b1) compute_winograd(buf, 0, winograd_tile_rows(), b0, b1);
      return;
    }
    if (winograd()) {
      int64_t t0, t1;
      split_range(winograd_tile_rows(), tid, static_cast<int>(units(1, 0)), &t0, &t1);
      if (t0 < t1) compute_winograd(buf, t0, t1);
      return;
    }
    if (s_.row_units > 0) {
      if (by_vectors()) {
        int64_t v0, v1;
        const int64_t V = k_.vector_floats;
        split_range((s_.stream_len + V - 1) / V, tid, static_cast<int>(s_.row_units), &v0, &v1);
        if (v0 < v1) compute(buf, s_.bounds.front(), s_.bounds.back(), 0, -1, v0 * V, v1 * V);
        return;
      }
      int64_t r0, r1;
      split_range(s_.output.dim[2], tid, static_cast<int>(s_.row_units), &r0, &r1);
      if (r0 < r1) compute(buf, s_.bounds.front(), s_.bounds.back(), r0, r1);
      return;
    }
    compute(buf, s_.bounds[tid], s_.bounds[tid + 1]);
  }
  void run_serial(int stage, const Buffers& buf) const override {
    if (s_.split_here && stage == 0) {
      split_phases(buf, 0, 1);
      return;
    }
    if (winograd()) {
      compute_winograd(buf, 0, winograd_tile_rows());
      return;
    }
    compute(buf, s_.bounds.front(), s_.bounds.back());
  }
  const WaveInfo* wave() const override { return s_.wave.group >= 0 ? &s_.wave : nullptr; }
  void run_rows(const Buffers& buf, int64_t r0, int64_t r1) const override {
    compute_rows(buf, s_.bounds.front(), s_.bounds.back(), r0, r1);
  }
  // Parts are the plan's thread ranges of output channels (generated tiles lie inside them).
  void run_rows_part(const Buffers& buf, int64_t r0, int64_t r1, int part,
                     int parts) const override {
    if (static_cast<int>(s_.bounds.size()) - 1 == parts) {
      compute_rows(buf, s_.bounds[part], s_.bounds[part + 1], r0, r1);
    } else if (part == 0) {
      run_rows(buf, r0, r1);
    }
  }

 private:
  // Strided and direct convs compute exactly rows [r0, r1); planar ones the whole vectors from
  // the one holding row r0's first position to the one holding row r1's (WaveInfo::overhang).
  void compute_rows(const Buffers& buf, int64_t c0, int64_t c1, int64_t r0, int64_t r1) const {
    if (s_.strided || s_.direct) {
      compute(buf, c0, c1, r0, r1);
      return;
    }
    const int64_t V = k_.vector_floats;
    const auto cut = [&](int64_t r) {
      const int64_t p = r == s_.output.dim[2] ? s_.stream_len : r * s_.stream_rs;
      return (p + V - 1) / V * V;
    };
    const int64_t p0 = cut(r0), p1 = cut(r1);
    if (p0 < p1) compute(buf, c0, c1, 0, -1, p0, p1);
  }

  void validate() {
    const std::string me = "conv";
    const int64_t channels = s_.output.dim[1];
    const int64_t V = k_.vector_floats;
    require(s_.bounds.size() >= 2 && nondecreasing(s_.bounds) && s_.bounds.front() == 0 &&
                s_.bounds.back() == s_.units,
            me + ": bounds must rise from 0 to units");
    require(s_.units == (s_.bsr ? (channels + kBsrBlock - 1) / kBsrBlock : channels),
            me + ": units must be the output channels (CSR) or their blocks (BSR)");
    require(static_cast<int64_t>(s_.ptr.size()) == s_.units + 1 && s_.ptr.front() == 0 &&
                std::is_sorted(s_.ptr.begin(), s_.ptr.end()) &&
                static_cast<size_t>(s_.ptr.back()) == s_.off.size(),
            me + ": ptr must rise from 0 to the number of taps, one entry per unit");
    require(s_.val.size() == s_.off.size() * static_cast<size_t>(s_.bsr ? kBsrBlock : 1),
            me + ": one weight per tap (CSR) or per tap and block row (BSR)");
    require(s_.bias.empty() || static_cast<int64_t>(s_.bias.size()) >= channels,
            me + ": one bias per output channel");
    require(s_.lanes >= 1 && s_.stride_h >= 1 && s_.stride_w >= 1, me + ": bad lanes or stride");
    require(s_.stream_len >= 1 && s_.stream_rs >= 1 && s_.width >= 1, me + ": bad stream");
    // Strided convs store valid positions only and read no mask.
    require(s_.strided || static_cast<int64_t>(s_.mask.size()) >= (s_.stream_len + V - 1) / V * V,
            me + ": the mask must cover the stream");
    require(!s_.direct || (!s_.bsr && s_.lanes == 1 && !s_.phase_split),
            me + ": a direct conv needs planar CSR weights and no phase split");
    require(!s_.strided || (!s_.bsr && s_.lanes % V == 0),
            me + ": a strided conv needs CSR weights and lanes % vector floats == 0");
    require(!s_.halo || s_.strided, me + ": halo needs a strided CSR conv");
    require(!position_major() || (s_.strided && !s_.halo && s_.blocks == 1),
            me + ": position-major tensors need a strided CSR conv without halo or blocks");
    for (int64_t ws : {s_.in_ws, s_.out_ws, s_.res_ws})
      require(ws >= s_.lanes && ws % s_.lanes == 0,
              me + ": a position stride must be a multiple of lanes");
    require(s_.blocks >= 1, me + ": blocks must be >= 1");
    require(s_.blocks == 1 || (s_.strided && static_cast<int64_t>(s_.block_ptr.size()) ==
                                                 s_.units * (s_.blocks + 1)),
            me + ": channel blocks need a strided CSR conv and units * (blocks + 1) pointers");
    require(s_.row_units == 0 || (s_.row_units > 0 && by_rows()),
            me + ": row_units need a conv that computes output-row ranges");
    require(s_.wave.group < 0 || s_.strided || by_vectors() ||
                (s_.direct && s_.output.dim[0] == 1),
            me + ": a wavefront member must be a strided conv, a stride-1 planar conv of one "
                 "image in the fast layout or a direct conv of one image");
    require(s_.wave.group < 0 || (s_.wave.step >= 1 && s_.wave.overhang >= 0 &&
                                  s_.wave.overhang <= 1),
            me + ": wavefront step must be >= 1 and overhang 0 or 1");
    require(!s_.split_here || s_.phase_split, me + ": split_here needs a phase split");
    require(s_.has_residual || s_.residual.dim[0] == 1, me + ": residual view without residual");
    s_.act.validate(channels, me);
    for (int32_t o : s_.off) require(o >= 0, me + ": negative tap offset");
    if (winograd()) validate_winograd();
    read_view_ = reach();
  }

  bool winograd() const { return !s_.winograd_u.empty(); }
  bool pooled() const { return !s_.winograd_pool.empty(); }
  // The conv's own output rows and positions (a fused pool's output is smaller).
  int64_t conv_rows() const { return pooled() ? s_.winograd_pool[6] : s_.output.dim[2]; }
  int64_t conv_cols() const {
    return pooled() ? s_.winograd_pool[7] : s_.output.dim[3] / s_.lanes;
  }
  int64_t winograd_tile_rows() const {
    return (conv_rows() + s_.winograd_tile - 1) / s_.winograd_tile;
  }
  int64_t winograd_blocks() const {
    return (s_.output.dim[1] + winograd::kBlock - 1) / winograd::kBlock;
  }
  // Input tile side and points of the conv's Winograd form.
  int64_t winograd_window() const { return s_.winograd_tile + winograd::kKernel - 1; }
  int64_t winograd_points() const { return winograd_window() * winograd_window(); }

  void validate_winograd() const {
    const std::string me = "conv (winograd)";
    const bool planar = s_.lanes == 1;
    require(s_.winograd_tile == winograd::F3::kOut ||
                (s_.winograd_tile == winograd::F5::kOut && !planar),
            me + ": output tiles of 3 (any layout) or 5 (batch-interleaved)");
    const int64_t T = winograd_window();
    const int64_t planes = static_cast<int64_t>(s_.winograd_col_off.size()) / T;
    const int64_t blocks = (s_.output.dim[1] + winograd::kBlock - 1) / winograd::kBlock;
    require(s_.phase_split && (planar || s_.lanes == k_.vector_floats) && !s_.has_residual &&
                s_.wave.group < 0 && s_.row_units == 0 && s_.val_origin < 0 &&
                (!planar || s_.split_here),
            me + ": needs phase planes (planar, split here, or of one vector per position), no "
                 "residual, no wavefront, no row split, no gate");
    require(planes >= 1 && static_cast<int64_t>(s_.winograd_col_off.size()) == planes * T &&
                static_cast<int64_t>(s_.winograd_u.size()) ==
                    blocks * winograd_points() * planes * winograd::kBlock,
            me + ": weights must be [channel blocks][points][planes][block], offsets "
                 "[planes][window]");
    require(s_.winograd_in_rows >= 1 && s_.winograd_in_cols >= 1 && s_.winograd_tile_step >= 1,
            me + ": bad readable window or tile step");
    require(s_.winograd_split_w == 0 || s_.winograd_split_w >= s_.stride_w,
            me + ": bad column split");
    // Every read stays inside one image's phase planes: the last tile vector of the last
    // readable row (planar: the split pads each row to the last vector's reach, with zeros).
    if (pooled()) validate_pool();
    const int64_t tiles = (conv_cols() + s_.winograd_tile - 1) / s_.winograd_tile;
    const int64_t last_tile = planar ? (tiles - 1) / k_.vector_floats : tiles - 1;
    const int64_t rows = (s_.winograd_in_rows - 1) * s_.phase_rs * s_.lanes;
    for (size_t k = 0; k < s_.winograd_col_off.size(); ++k) {
      // Interleaved: positions below in_cols from the plane's first window column.
      const int64_t o = s_.winograd_col_off[k];
      const int64_t end = planar ? o + rows + last_tile * s_.winograd_tile_step + k_.vector_floats
                                 : s_.winograd_col_off[k - k % T] + rows +
                                       s_.winograd_in_cols * s_.lanes;
      require(o >= 0 && end <= winograd_image_floats(), me + ": a window leaves the phase planes");
    }
    require(s_.output.stride[3] == 1 && s_.output.dim[3] % s_.lanes == 0,
            me + ": output positions must be contiguous");
  }

  // A fused max pool: windows inside the conv's outputs' padded extent, each holding one.
  void validate_pool() const {
    const std::string me = "conv (winograd, max pool)";
    const auto& q = s_.winograd_pool;
    require(q.size() == 8 && s_.lanes > 1 && !s_.winograd_stream,
            me + ": {kernel, stride, pads, conv rows, columns}, batch-interleaved, not streamed");
    const int64_t out[2] = {s_.output.dim[2], s_.output.dim[3] / s_.lanes}, conv[2] = {q[6], q[7]};
    for (int i = 0; i < 2; ++i) {
      const int64_t k = q[i], st = q[2 + i], pad = q[4 + i];
      require(k >= 1 && k <= kMaxPoolKernel && st >= 1 && pad >= 0 && pad < k &&
                  conv[i] >= 1 && out[i] >= 1 &&
                  (out[i] - 1) * st - pad < conv[i],
              me + ": windows of at most " + std::to_string(kMaxPoolKernel) +
                " a side, each holding a conv output");
    }
  }

  // Floats of one image's (group's) phase planes.
  int64_t winograd_image_floats() const {
    const int64_t split_w = s_.winograd_split_w > 0 ? s_.winograd_split_w : s_.stride_w;
    return s_.input.dim[1] * s_.stride_h * split_w * s_.phase_plane;
  }

  // Tile rows [t0, t1) of every image (group), all output channels.
  void compute_winograd(const Buffers& buf, int64_t t0, int64_t t1, int64_t b0 = 0,
                        int64_t b1 = -1) const {
    WinogradArgs w;
    w.block0 = b0;
    w.block1 = b1;
    if (pooled()) {
      const auto& q = s_.winograd_pool;
      w.pooled = true;
      w.pool_kh = q[0], w.pool_kw = q[1], w.pool_sh = q[2], w.pool_sw = q[3];
      w.pool_pt = q[4], w.pool_pl = q[5];
      w.pool_rows = s_.output.dim[2];
      w.pool_cols = s_.output.dim[3] / s_.lanes;
    }
    w.col_off = s_.winograd_col_off.data();
    w.tile = s_.winograd_tile;
    w.planes = static_cast<int64_t>(s_.winograd_col_off.size()) / winograd_window();
    w.in_rs = s_.phase_rs * s_.lanes;
    w.in_rows = s_.winograd_in_rows;
    w.in_cols = s_.winograd_in_cols;
    w.tile_step = s_.winograd_tile_step;
    w.planar = s_.lanes == 1;
    w.u = s_.winograd_u.data();
    w.channels = s_.output.dim[1];
    w.bias = s_.bias.empty() ? nullptr : s_.bias.data();
    w.out_cs = s_.output.stride[1];
    w.out_rs = s_.output.stride[2];
    w.rows = conv_rows();
    w.cols = conv_cols();
    w.act = act_;
    const int64_t V = k_.vector_floats, image = winograd_image_floats();
    for (int64_t n = 0; n < s_.output.dim[0]; ++n) {
      w.in = buf.arena + s_.scratch_origin + n * image;
      w.out = buf.at(s_.output) + n * s_.output.stride[0];
      w.stream = s_.winograd_stream && !w.planar &&
                 reinterpret_cast<uintptr_t>(w.out) % (V * 4) == 0 && w.out_cs % V == 0 &&
                 w.out_rs % V == 0;
      k_.conv_winograd(w, t0, t1);
    }
  }

  // Whether any of the conv's tensors is position-major (ConvSpec::in_ws).
  bool position_major() const {
    return s_.in_ws != s_.lanes || s_.out_ws != s_.lanes || s_.res_ws != s_.lanes;
  }
  bool position_major_input() const { return s_.in_ws != s_.lanes; }
  // The floats a stream view (1, C, H, W * lanes) reaches when its positions are `ws` floats
  // apart: (C, H, W, lanes) with the channel stride as given.
  View positions_box(const View& v, int64_t ws) const {
    if (ws == s_.lanes) return v;
    View box = v;
    const int64_t dims[4] = {v.dim[1], v.dim[2], v.dim[3] / s_.lanes, s_.lanes};
    const int64_t strides[4] = {v.stride[1], v.stride[2], ws, 1};
    for (int i = 0; i < 4; ++i) {
      box.dim[i] = dims[i];
      box.stride[i] = strides[i];
    }
    return box;
  }

  bool jit_interleaved() const {
    return s_.strided && !s_.bsr && !s_.halo && s_.lanes == 16;
  }
  // Planar: stride 1, CSR, one image, output (and residual) in the stream's layout, and a
  // clamp, which the tile applies before the masked store (other kinds would run after it and
  // write the border lanes). Without an activation, DenseNet-121's standalone BatchNorm steps
  // that later read such convs' outputs ran 3x slower, for a reason not found
  // (docs/performance-log.md, 2026-12-06 late session).
  bool jit_planar() const {
    return !s_.strided && !s_.bsr && !s_.direct && !s_.phase_split && !s_.gather && s_.fast &&
           s_.lanes == 1 && s_.stride_h == 1 && s_.stride_w == 1 && s_.output.dim[0] == 1 &&
           s_.act.kind == kActClip;
  }
  // Vectors a planar call sweeps: the wavefront's step (rows per sweep) or the whole stream.
  int64_t jit_planar_vectors() const {
    const int64_t V = k_.vector_floats, whole = (s_.stream_len + V - 1) / V;
    if (s_.wave.group < 0) return whole;
    return std::min(whole, (s_.wave.step * s_.stream_rs + V - 1) / V);
  }

  const float* weights(const Buffers& buf) const {
    return s_.val_origin >= 0 ? buf.arena + s_.val_origin : s_.val.data();
  }

  // The floats the kernel may read from its input (or the phase planes): from the stream origin
  // to the largest tap offset plus the positions it sweeps (whole vectors).
  View reach() const {
    const int64_t V = k_.vector_floats;
    const int64_t max_off = s_.off.empty() ? 0 : *std::max_element(s_.off.begin(), s_.off.end());
    int64_t base, sweep;
    if (s_.direct) {
      base = s_.input.origin - s_.pad_top * s_.input.stride[2] - s_.pad_left;
      sweep = (s_.output.dim[0] - 1) * s_.input.stride[0] +
              (s_.output.dim[2] - 1) * s_.stride_h * s_.input.stride[2] +
              (s_.output.dim[3] - 1) * s_.stride_w + 1;
    } else if (s_.strided) {
      base = s_.input.origin - s_.pad_top * s_.input.stride[2] - s_.pad_left * s_.in_ws;
      sweep = (s_.output.dim[2] - 1) * s_.stride_h * s_.input.stride[2] +
              (s_.output.dim[3] / s_.lanes - 1) * s_.stride_w * s_.in_ws + s_.lanes;
    } else {
      const int64_t images_stride =
          s_.phase_split ? s_.input.dim[1] * s_.stride_h * s_.stride_w * s_.phase_plane
                         : s_.input.stride[0];
      base = s_.phase_split ? s_.scratch_origin
                            : s_.input.origin - s_.pad_top * s_.input.stride[2] -
                                  s_.pad_left * s_.lanes;
      sweep = (s_.output.dim[0] - 1) * images_stride + (s_.stream_len + V - 1) / V * V;
    }
    const int space = s_.phase_split ? kArena : s_.input.space;
    return span_view(space, s_.input.slot, base, max_off + sweep);
  }

  // Convs that can compute a range of output rows (ConvSpec::row_units): stride-1 planar CSR
  // convs of one image reading in place (stream rows shift with the output rows), interleaved
  // strided convs (conv_csr_strided rows) and direct convs of one image.
  bool by_rows() const {
    const bool planar = !s_.bsr && !s_.direct && !s_.phase_split && !s_.gather &&
                        s_.lanes == 1 && s_.stride_h == 1 && s_.stride_w == 1 &&
                        s_.output.dim[0] == 1;
    return planar || s_.strided || (s_.direct && s_.output.dim[0] == 1);
  }

  // Stride-1 planar convs whose output and residual share the stream's layout ("fast") split
  // the stream by whole vectors instead of rows: no band's last vector runs into the next band,
  // which matters when the output overwrites the residual in place (planner: output over
  // residual): a row band's overhanging vector would read a residual the next band's owner may
  // already have replaced.
  bool by_vectors() const { return s_.fast && !s_.strided && by_rows(); }

  // Channels (units) [u0, u1) of output rows [r0, r1) (r1 < 0: all rows; see by_rows), or of
  // stream positions [p0, p1) (p1 > 0, multiples of the vector width; see by_vectors).
  void compute(const Buffers& buf, int64_t u0, int64_t u1, int64_t r0 = 0, int64_t r1 = -1,
               int64_t p0 = 0, int64_t p1 = -1) const {
    if (u0 >= u1) return;
    if (s_.direct) {
      compute_direct(buf, u0, u1, r0, r1);
      return;
    }
    ConvKernelArgs a;
    a.images = s_.output.dim[0];
    if (s_.phase_split) {
      a.in = buf.arena + s_.scratch_origin;
      a.in_is = s_.input.dim[1] * s_.stride_h * s_.stride_w * s_.phase_plane;
    } else {
      a.in = buf.at(s_.input) - s_.pad_top * s_.input.stride[2] - s_.pad_left * s_.in_ws;
      a.in_is = s_.input.stride[0];
    }
    bind_output(buf, &a);
    a.len = s_.stream_len;
    a.rs = s_.stream_rs;
    a.width = s_.width;
    a.fast = s_.fast;
    a.mask = s_.mask.data();
    a.bias = s_.bias.empty() ? nullptr : s_.bias.data();
    a.act = act_;
    a.ptr = s_.ptr.data();
    a.off = s_.off.data();
    a.val = weights(buf);
    a.block = s_.bsr ? kBsrBlock : 1;
    a.row_taps = row_taps_;
    a.skip_empty = s_.skip_empty && !s_.bsr;
    a.channels = s_.output.dim[1];
    a.blocks = s_.blocks;
    a.block_ptr = s_.block_ptr.empty() ? nullptr : s_.block_ptr.data();
    a.window_planes = s_.window_planes;
    a.window_reach = s_.window_reach;
    if (s_.strided) {
      a.rows = s_.output.dim[2];
      a.positions = s_.output.dim[3] / s_.lanes;
      a.in_row_step = s_.stride_h * s_.input.stride[2];
      a.in_pos_step = s_.stride_w * s_.in_ws;
      a.out_pos_step = s_.out_ws;
      a.res_pos_step = s_.res_ws;
      a.lanes = s_.lanes;
      a.halo = s_.halo;
      if (r1 >= 0) {
        a.rows = r1 - r0;
        shift_rows(a, r0, a.in_row_step);
      }
      if (jit_ && jit_->covers(u0, u1)) {
        run_jit(a, u0, u1);
        return;
      }
      k_.conv_csr_strided(a, u0, u1);
      return;
    }
    // Stride 1: output stream row r reads input stream rows from r on. Row bands are left to
    // layouts whose epilogue stores only valid positions (not "fast"), so bands never overlap.
    if (p1 > 0) {
      // Fast layout: stream position p is output offset p, so a span is a plain shift.
      a.len = (p1 < a.len ? p1 : a.len) - p0;
      a.mask += p0;
      a.in += p0;
      a.out += p0;
      if (a.res) a.res += p0;
    } else if (r1 >= 0) {
      a.len = (r1 - r0 - 1) * a.rs + a.width;
      a.mask += r0 * a.rs;
      shift_rows(a, r0, a.rs);
    }
    if (jit_ && !s_.strided && s_.fast && jit_->covers(u0, u1)) {
      run_jit_planar(a, u0, u1);
      return;
    }
    (s_.bsr ? k_.conv_bsr : k_.conv_csr)(a, u0, u1);
  }

  // The tiles of channels [u0, u1) at every vector of a's stream (a fast planar layout: stream
  // position p is output offset p), run by run as in run_jit.
  void run_jit_planar(const ConvKernelArgs& a, int64_t u0, int64_t u1) const {
    const std::vector<JitTile>& tiles = jit_->tiles();
    const float* table = jit_->table();
    const int64_t V = k_.vector_floats, nvec = (a.len + V - 1) / V;
    jit_->for_each_run(u0, u1, [&](size_t b, size_t e) {
      for (int64_t v = 0; v < nvec; ++v) {
        const float* res = a.res ? a.res + v * V : nullptr;
        for (size_t t = b; t < e; ++t)
          tiles[t].fn(a.in + v * V, a.out + v * V, table, res, a.mask + v * V);
      }
    });
  }

  // The machine-code tiles of channels [u0, u1) at every output position of a's rows, each run
  // of tiles over a whole row before the next; blocked tiles (JitConvSpec::blocks, each block
  // a run) over chunks of kJitChunkPositions positions instead, so a chunk's partial sums stay
  // in L1 beside the input its block reads. Kinds of activation other than a clamp run after
  // a tile's last block, on the vectors it just stored.
  void run_jit(const ConvKernelArgs& a, int64_t u0, int64_t u1) const {
    const std::vector<JitTile>& tiles = jit_->tiles();
    const float* table = jit_->table();
    const bool activate = !act_.is_clamp();
    const int64_t last = jit_->blocks() - 1;
    const int64_t chunk = last > 0 ? kJitChunkPositions : a.positions;
    float* partial = last > 0 ? jit_partials(chunk) : nullptr;
    for (int64_t r = 0; r < a.rows; ++r)
      for (int64_t p0 = 0; p0 < a.positions; p0 += chunk) {
        const int64_t p1 = std::min(a.positions, p0 + chunk);
        jit_->for_each_run(u0, u1, [&](size_t b, size_t e) {
          for (int64_t p = p0; p < p1; ++p) {
            const float* in = a.in + r * a.in_row_step + p * a.in_pos_step;
            float* out = a.out + r * a.out_rs + p * a.out_pos_step;
            const float* res = a.res ? a.res + r * a.res_rs + p * a.res_pos_step : nullptr;
            float* aux = partial ? partial + (p - p0) * JitConv::kPartialFloats : nullptr;
            for (size_t t = b; t < e; ++t) {
              tiles[t].fn(in, out, table, res, aux);
              if (activate && tiles[t].block == last)
                k_.activate_vectors(out + tiles[t].first * a.out_cs, tiles[t].count, a.out_cs,
                                    nullptr, act_, tiles[t].first, 1);
            }
          }
        });
      }
  }

  // A thread's partial sums for blocked tiles: `positions` positions of one tile.
  static float* jit_partials(int64_t positions) {
    thread_local std::vector<float> scratch;
    const size_t need = static_cast<size_t>(positions * JitConv::kPartialFloats);
    if (scratch.size() < need) scratch.resize(need);
    return scratch.data();
  }

  // Moves the origins of a kernel call to output row r0 (input rows in_row floats apart).
  static void shift_rows(ConvKernelArgs& a, int64_t r0, int64_t in_row) {
    a.in += r0 * in_row;
    a.out += r0 * a.out_rs;
    if (a.res) a.res += r0 * a.res_rs;
  }

  // Where the kernel stores: the output view, and the residual it adds (if any).
  void bind_output(const Buffers& buf, ConvKernelArgs* a) const {
    a->out = buf.at(s_.output);
    a->out_is = s_.output.stride[0];
    a->out_cs = s_.output.stride[1];
    a->out_rs = s_.output.stride[2];
    if (s_.has_residual) {
      a->res = buf.at(s_.residual);
      a->res_is = s_.residual.stride[0];
      a->res_cs = s_.residual.stride[1];
      a->res_rs = s_.residual.stride[2];
    }
  }

  // Output channels [c0, c1) of a direct strided conv: bias, then each tap's strided plane
  // accumulated into the output positions (border untouched), then residual and activation.
  // Few taps per channel (PlannerOptions.direct_max_taps): taps read the zero-bordered input
  // directly at the conv's strides, no phase split.
  // Output rows [r0, r1) only when r1 >= 0 (a wavefront member, or a thread's band).
  void compute_direct(const Buffers& buf, int64_t c0, int64_t c1, int64_t r0 = 0,
                      int64_t r1 = -1) const {
    ConvKernelArgs a;
    a.images = s_.output.dim[0];
    a.in = buf.at(s_.input) - s_.pad_top * s_.input.stride[2] - s_.pad_left;
    a.in_is = s_.input.stride[0];
    bind_output(buf, &a);
    a.rows = s_.output.dim[2];
    a.positions = s_.output.dim[3];
    a.in_row_step = s_.stride_h * s_.input.stride[2];
    if (r1 >= 0) {
      a.rows = r1 - r0;
      shift_rows(a, r0, a.in_row_step);
    }
    a.in_pos_step = s_.stride_w;
    a.bias = s_.bias.empty() ? nullptr : s_.bias.data();
    a.act = act_;
    a.ptr = s_.ptr.data();
    a.off = s_.off.data();
    a.val = weights(buf);
    a.skip_empty = s_.skip_empty;
    a.channels = s_.output.dim[1];
    k_.conv_direct(a, c0, c1);
  }

  void split_phases(const Buffers& buf, int tid, int nth) const {
    const int64_t C = s_.input.dim[1];
    PhaseSplitArgs g;
    g.H = s_.input.dim[2];
    g.W = s_.gather ? s_.input.dim[3] : s_.input.dim[3] / s_.lanes;
    g.src_rs = s_.input.stride[2];
    g.sh = s_.stride_h;
    g.sw = winograd() && s_.winograd_split_w > 0 ? s_.winograd_split_w : s_.stride_w;
    g.pad_top = s_.pad_top;
    g.pad_left = s_.pad_left;
    g.rows = s_.phase_rows;
    g.rs = s_.phase_rs;
    g.plane = s_.phase_plane;
    g.lanes = s_.lanes;
    g.gather_stride = s_.gather ? s_.input.stride[0] : 0;
    // Gathering: one unit = one channel of every image (the images share its phase planes).
    const int64_t images = s_.gather ? 1 : s_.input.dim[0];
    int64_t p0, p1;
    split_range(images * C, tid, nth, &p0, &p1);
    const float* x = buf.at(s_.input);
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      k_.split_plane(g, x + n * s_.input.stride[0] + c * s_.input.stride[1],
                     buf.arena + s_.scratch_origin + plane * g.sh * g.sw * g.plane);
    }
  }

  // BSR taps that come in runs of 3 inputs one vector apart in every block (the kernel columns
  // of a dense interleaved stride-1 conv): conv_bsr then loads each run's inputs once.
  bool taps_in_rows_of_3() const {
    const int64_t V = k_.vector_floats;
    for (size_t blk = 0; blk + 1 < s_.ptr.size(); ++blk) {
      const int32_t j0 = s_.ptr[blk], j1 = s_.ptr[blk + 1];
      if ((j1 - j0) % 3 != 0) return false;
      for (int32_t j = j0; j < j1; j += 3) {
        if (s_.off[j + 1] - s_.off[j] != V || s_.off[j + 2] - s_.off[j + 1] != V) return false;
      }
    }
    return s_.ptr.size() > 1;
  }

  ConvSpec s_;
  KernelTable k_;
  Activation act_;
  View read_view_;
  std::unique_ptr<JitConv> jit_;  // null: the CSR kernel runs
  int row_taps_ = 1;  // ConvKernelArgs::row_taps
};

class TinyConvStep final : public Step {
 public:
  TinyConvStep(TinyConvSpec spec, const PlanContext& ctx) : s_(std::move(spec)), k_(ctx.kernels) {
    const std::string me = "tiny conv";
    require(s_.bounds.size() >= 2 && nondecreasing(s_.bounds) && s_.bounds.front() == 0 &&
                s_.bounds.back() * 16 == s_.wt_stride,
            me + ": bounds must rise from 0 to the 16-channel blocks");
    require(s_.input.stride[3] == 1, me + ": rows must be contiguous");
    require(s_.wt_stride % 16 == 0 && s_.wt_stride >= s_.output.dim[1] &&
                static_cast<int64_t>(s_.wt.size()) == s_.wt_stride * s_.input.dim[1] &&
                static_cast<int64_t>(s_.bias.size()) == s_.wt_stride,
            me + ": weights must be [blocks][in_channels][16]");
    s_.act.validate(s_.output.dim[1], me);
    act_ = s_.act.view();
  }
  const char* name() const override { return "conv_tiny"; }
  std::string detail() const override {
    return "planar split=channels:" + std::to_string(s_.bounds.size() - 1);
  }
  bool light() const override { return false; }
  std::vector<View> views() const override {
    std::vector<View> v = {s_.input, s_.output};
    if (s_.has_residual) v.push_back(s_.residual);
    if (s_.wt_origin >= 0) v.push_back(span_view(kArena, 0, s_.wt_origin, s_.wt.size()));
    return v;
  }
  int64_t units(int, int64_t) const override {
    return static_cast<int64_t>(s_.bounds.size()) - 1;
  }
  void run(int, const Buffers& buf, int tid, int) const override {
    if (s_.bounds[tid] >= s_.bounds[tid + 1]) return;
    TinyGemmArgs g;
    g.x_cs = s_.input.stride[1];
    g.x_rs = s_.input.stride[2];
    g.in_channels = s_.input.dim[1];
    g.positions = s_.input.dim[2] * s_.input.dim[3];
    g.width = s_.output.dim[3];
    g.wt = s_.wt_origin >= 0 ? buf.arena + s_.wt_origin : s_.wt.data();
    g.wt_stride = s_.wt_stride;
    g.out_channels = s_.output.dim[1];
    g.bias = s_.bias.data();
    g.out_cs = s_.output.stride[1];
    g.out_rs = s_.output.stride[2];
    g.res_cs = s_.has_residual ? s_.residual.stride[1] : 0;
    g.res_rs = s_.has_residual ? s_.residual.stride[2] : 0;
    g.act = act_;
    for (int64_t n = 0; n < s_.output.dim[0]; ++n) {
      g.x = buf.at(s_.input) + n * s_.input.stride[0];
      g.out = buf.at(s_.output) + n * s_.output.stride[0];
      g.res = s_.has_residual ? buf.at(s_.residual) + n * s_.residual.stride[0] : nullptr;
      k_.conv_tiny(g, s_.bounds[tid], s_.bounds[tid + 1]);
    }
  }

 private:
  TinyConvSpec s_;
  KernelTable k_;
  Activation act_;
};

// One image between the planar layout (a NCHW view) and the column-segment layout (its stream
// view, runtime/planner/layout.py), row by row (kernels/segments.cpp); rows split across threads.
class SegmentCopyStep final : public Step {
 public:
  SegmentCopyStep(const SegmentCopySpec& spec, const PlanContext& ctx)
      : planar_(spec.planar), seg_(spec.segments), to_segments_(spec.to_segments),
        k_(ctx.kernels) {
    require(planar_.dim[0] == 1 && planar_.dim[3] % k_.vector_floats == 0 &&
                planar_.dim[1] == seg_.dim[1] && planar_.dim[2] == seg_.dim[2] &&
                planar_.dim[3] == seg_.dim[3],
            "segment copy: one image whose width is a multiple of the vector width, same shape "
            "on both sides");
  }
  const char* name() const override { return "segment_copy"; }
  std::vector<View> views() const override {
    // The segment side also holds a halo vector before and after every row.
    View seg = seg_;
    seg.origin -= k_.vector_floats;
    seg.dim[3] += 2 * k_.vector_floats;
    return {planar_, seg};
  }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    const int64_t H = planar_.dim[2], P = planar_.dim[3] / k_.vector_floats;
    int64_t r0, r1;
    split_range(planar_.dim[1] * H, tid, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / H, h = r % H;
      float* row = buf.at(planar_) + c * planar_.stride[1] + h * planar_.stride[2];
      float* seg = buf.at(seg_) + c * seg_.stride[1] + h * seg_.stride[2];
      if (to_segments_) {
        k_.to_segments(row, seg, P);
      } else {
        k_.from_segments(seg, row, P);
      }
    }
  }

 private:
  View planar_, seg_;
  bool to_segments_;
  KernelTable k_;
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<ConvSpec> conv(m, "ConvSpec");
  conv.def(py::init<>())
      .def_readwrite("input", &ConvSpec::input)
      .def_readwrite("output", &ConvSpec::output)
      .def_readwrite("residual", &ConvSpec::residual)
      .def_readwrite("has_residual", &ConvSpec::has_residual)
      .def_readwrite("lanes", &ConvSpec::lanes)
      .def_readwrite("gather", &ConvSpec::gather)
      .def_readwrite("strided", &ConvSpec::strided)
      .def_readwrite("in_ws", &ConvSpec::in_ws)
      .def_readwrite("out_ws", &ConvSpec::out_ws)
      .def_readwrite("res_ws", &ConvSpec::res_ws)
      .def_readwrite("direct", &ConvSpec::direct)
      .def_readwrite("bsr", &ConvSpec::bsr)
      .def_readwrite("skip_empty", &ConvSpec::skip_empty)
      .def_readwrite("stream_rs", &ConvSpec::stream_rs)
      .def_readwrite("stream_len", &ConvSpec::stream_len)
      .def_readwrite("width", &ConvSpec::width)
      .def_readwrite("fast", &ConvSpec::fast)
      .def_readwrite("pad_top", &ConvSpec::pad_top)
      .def_readwrite("pad_left", &ConvSpec::pad_left)
      .def_readwrite("phase_split", &ConvSpec::phase_split)
      .def_readwrite("split_here", &ConvSpec::split_here)
      .def_readwrite("stride_h", &ConvSpec::stride_h)
      .def_readwrite("stride_w", &ConvSpec::stride_w)
      .def_readwrite("phase_rows", &ConvSpec::phase_rows)
      .def_readwrite("phase_rs", &ConvSpec::phase_rs)
      .def_readwrite("phase_plane", &ConvSpec::phase_plane)
      .def_readwrite("scratch_origin", &ConvSpec::scratch_origin)
      .def_readwrite("blocks", &ConvSpec::blocks)
      .def_readwrite("units", &ConvSpec::units)
      .def_readwrite("row_units", &ConvSpec::row_units)
      .def_readwrite("window_planes", &ConvSpec::window_planes)
      .def_readwrite("window_reach", &ConvSpec::window_reach)
      .def_readwrite("halo", &ConvSpec::halo)
      .def_readwrite("act", &ConvSpec::act)
      .def_readwrite("wave", &ConvSpec::wave)
      .def_readwrite("val_origin", &ConvSpec::val_origin);
  def_array(conv, "ptr", &ConvSpec::ptr);
  def_array(conv, "off", &ConvSpec::off);
  def_array(conv, "block_ptr", &ConvSpec::block_ptr);
  def_array(conv, "val", &ConvSpec::val);
  def_array(conv, "bias", &ConvSpec::bias);
  def_array(conv, "mask", &ConvSpec::mask);
  def_array(conv, "bounds", &ConvSpec::bounds);
  def_array(conv, "winograd_u", &ConvSpec::winograd_u);
  def_array(conv, "winograd_col_off", &ConvSpec::winograd_col_off);
  def_array(conv, "winograd_pool", &ConvSpec::winograd_pool);
  conv.def_readwrite("winograd_tile", &ConvSpec::winograd_tile)
      .def_readwrite("winograd_in_rows", &ConvSpec::winograd_in_rows)
      .def_readwrite("winograd_in_cols", &ConvSpec::winograd_in_cols)
      .def_readwrite("winograd_tile_step", &ConvSpec::winograd_tile_step)
      .def_readwrite("winograd_split_w", &ConvSpec::winograd_split_w)
      .def_readwrite("winograd_stream", &ConvSpec::winograd_stream);
  plan.def("add", &add_step<ConvStep, ConvSpec>);

  py::class_<TinyConvSpec> tiny(m, "TinyConvSpec");
  tiny.def(py::init<>())
      .def_readwrite("input", &TinyConvSpec::input)
      .def_readwrite("output", &TinyConvSpec::output)
      .def_readwrite("residual", &TinyConvSpec::residual)
      .def_readwrite("has_residual", &TinyConvSpec::has_residual)
      .def_readwrite("wt_stride", &TinyConvSpec::wt_stride)
      .def_readwrite("wt_origin", &TinyConvSpec::wt_origin)
      .def_readwrite("act", &TinyConvSpec::act);
  def_array(tiny, "wt", &TinyConvSpec::wt);
  def_array(tiny, "bias", &TinyConvSpec::bias);
  def_array(tiny, "bounds", &TinyConvSpec::bounds);
  plan.def("add", &add_step<TinyConvStep, TinyConvSpec>);

  py::class_<SegmentCopySpec>(m, "SegmentCopySpec")
      .def(py::init<>())
      .def_readwrite("planar", &SegmentCopySpec::planar)
      .def_readwrite("segments", &SegmentCopySpec::segments)
      .def_readwrite("to_segments", &SegmentCopySpec::to_segments);
  plan.def("add", &add_step<SegmentCopyStep, SegmentCopySpec>);
}

}  // namespace fd
