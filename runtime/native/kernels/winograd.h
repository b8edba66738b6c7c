// Winograd's minimal filtering F(m x m, 4x4) (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", arXiv 1509.09308):
//
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
//
// correlates a (m + 3) x (m + 3) input tile d with a 4x4 kernel g into the m x m output tile Y
// ((.) is the element-wise product). The engine uses it for the stride-2 7x7 stems of ResNets
// and DenseNets, which are dense: after the stride-phase split such a conv is a stride-1 4x4
// conv over 4 phase planes per channel (conv_winograd.cpp, which applies B^T and A^T below with
// the terms their rows share computed once). Two tile sizes:
// - F(3x3, 4x4), Toom-Cook points 0, 1, -1, 2, -2 and infinity: 36 / 9 = 4 products per output
//   and plane instead of 16. Planar planes (V tiles side by side in a vector) use it.
// - F(5x5, 4x4), points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity (those of the common
//   F(6x6, 3x3)): 64 / 25 = 2.56 products. Batch-interleaved planes use it.
// The kernel transform G g G^T runs once, in Python (runtime/planner/winograd.py), from the G
// below (module binding winograd_matrices); tests/runtime/test_winograd.py checks each
// identity and the kernels against a direct conv.
#pragma once

namespace fd {
namespace winograd {

constexpr int kKernel = 4;  // kernel side

// Output channels whose transformed weights are interleaved: [blocks][points][planes][kBlock].
constexpr int kBlock = 8;

struct F3 {
  static constexpr int kOut = 3;                  // output tile side
  static constexpr int kTile = kOut + kKernel - 1;  // input tile side
  static constexpr int kPoints = kTile * kTile;
  static constexpr float kAT[kOut][kTile] = {
      {1, 1, 1, 1, 1, 0},
      {0, 1, -1, 2, -2, 0},
      {0, 1, 1, 4, 4, 1},
  };
  static constexpr float kG[kTile][kKernel] = {
      {1.0f / 4, 0, 0, 0},
      {-1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6},
      {-1.0f / 6, 1.0f / 6, -1.0f / 6, 1.0f / 6},
      {1.0f / 24, 1.0f / 12, 1.0f / 6, 1.0f / 3},
      {1.0f / 24, -1.0f / 12, 1.0f / 6, -1.0f / 3},
      {0, 0, 0, 1},
  };
  static constexpr float kBT[kTile][kTile] = {
      {4, 0, -5, 0, 1, 0},
      {0, -4, -4, 1, 1, 0},
      {0, 4, -4, -1, 1, 0},
      {0, -2, -1, 2, 1, 0},
      {0, 2, -1, -2, 1, 0},
      {0, 4, 0, -5, 0, 1},
  };
};

struct F5 {
  static constexpr int kOut = 5;
  static constexpr int kTile = kOut + kKernel - 1;
  static constexpr int kPoints = kTile * kTile;
  static constexpr float kAT[kOut][kTile] = {
      {1, 1, 1, 1, 1, 1, 1, 0},
      {0, 1, -1, 2, -2, 0.5f, -0.5f, 0},
      {0, 1, 1, 4, 4, 0.25f, 0.25f, 0},
      {0, 1, -1, 8, -8, 0.125f, -0.125f, 0},
      {0, 1, 1, 16, 16, 0.0625f, 0.0625f, 1},
  };
  static constexpr float kG[kTile][kKernel] = {
      {1, 0, 0, 0},
      {-2.0f / 9, -2.0f / 9, -2.0f / 9, -2.0f / 9},
      {-2.0f / 9, 2.0f / 9, -2.0f / 9, 2.0f / 9},
      {1.0f / 90, 2.0f / 90, 4.0f / 90, 8.0f / 90},
      {1.0f / 90, -2.0f / 90, 4.0f / 90, -8.0f / 90},
      {32.0f / 45, 16.0f / 45, 8.0f / 45, 4.0f / 45},
      {32.0f / 45, -16.0f / 45, 8.0f / 45, -4.0f / 45},
      {0, 0, 0, 1},
  };
  static constexpr float kBT[kTile][kTile] = {
      {1, 0, -5.25f, 0, 5.25f, 0, -1, 0},
      {0, 1, 1, -4.25f, -4.25f, 1, 1, 0},
      {0, -1, 1, 4.25f, -4.25f, -1, 1, 0},
      {0, 0.5f, 0.25f, -2.5f, -1.25f, 2, 1, 0},
      {0, -0.5f, 0.25f, 2.5f, -1.25f, -2, 1, 0},
      {0, 2, 4, -2.5f, -5, 0.5f, 1, 0},
      {0, -2, 4, 2.5f, -5, -0.5f, 1, 0},
      {0, -1, 0, 5.25f, 0, -5.25f, 0, 1},
  };
};

// The largest input tile (scratch sizes).
constexpr int kMaxTile = F5::kTile;
constexpr int kMaxPoints = F5::kPoints;

}  // namespace winograd
}  // namespace fd
