// Winograd's minimal filtering F(3x3, 4x4) (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", arXiv 1509.09308), from the Toom-Cook points 0, 1, -1, 2, -2 and infinity:
//
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
//
// correlates a 6x6 input tile d with a 4x4 kernel g into the 3x3 output tile Y ((.) is the
// element-wise product). Per output this is 36 / 9 = 4 multiplies per kernel instead of 16.
// The engine uses it for the stride-2 7x7 stems of ResNets and DenseNets, which are dense:
// after the stride-phase split such a conv is a stride-1 4x4 conv over 4 phase planes per
// channel (conv_winograd.cpp, which applies B^T and A^T below with the terms their rows share
// computed once). The kernel transform G g G^T runs once, in Python (runtime/planner/
// winograd.py), from the G below (module binding winograd_matrices);
// tests/runtime/test_winograd.py checks the identity and the kernel against a direct conv.
#pragma once

namespace fd {
namespace winograd {

constexpr int kOut = 3;     // output tile side
constexpr int kKernel = 4;  // kernel side
constexpr int kTile = 6;    // input tile side, kOut + kKernel - 1
constexpr int kPoints = kTile * kTile;

constexpr float kAT[kOut][kTile] = {
    {1, 1, 1, 1, 1, 0},
    {0, 1, -1, 2, -2, 0},
    {0, 1, 1, 4, 4, 1},
};
constexpr float kG[kTile][kKernel] = {
    {1.0f / 4, 0, 0, 0},
    {-1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6},
    {-1.0f / 6, 1.0f / 6, -1.0f / 6, 1.0f / 6},
    {1.0f / 24, 1.0f / 12, 1.0f / 6, 1.0f / 3},
    {1.0f / 24, -1.0f / 12, 1.0f / 6, -1.0f / 3},
    {0, 0, 0, 1},
};
constexpr float kBT[kTile][kTile] = {
    {4, 0, -5, 0, 1, 0},
    {0, -4, -4, 1, 1, 0},
    {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0},
    {0, 2, -1, -2, 1, 0},
    {0, 4, 0, -5, 0, 1},
};

// Output channels whose transformed weights are interleaved: [blocks][kPoints][planes][kBlock].
constexpr int kBlock = 8;

}  // namespace winograd
}  // namespace fd
