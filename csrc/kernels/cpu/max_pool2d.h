// max_pool2d on the CPU, NCHW, with torch's semantics: -inf padding, dilation, ceil_mode windows,
// NaN propagation, and indices as flat offsets into each H*W plane. Tested by
// tests/test_max_pool2d.py against torch.nn.functional.max_pool2d.
#pragma once

#include <cstdint>

#include "../params.h"
#include "parallel.h"

namespace fastlayers::cpu {

template <typename T>
void max_pool2d_forward(const Context& ctx, const Pool2dParams& p, const T* x, T* y,
                        int64_t* indices);

// gx = 0, then gx[plane][indices[o]] += gy[o]. Returns false (and skips them) if any index lies
// outside its H*W plane, which only hand-made indices can do.
template <typename T>
bool max_pool2d_backward(const Context& ctx, const Pool2dParams& p, const T* gy,
                         const int64_t* indices, T* gx);

}  // namespace fastlayers::cpu
