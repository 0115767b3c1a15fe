// float16 and bfloat16 on CPU. The CPU kernels compute in float32 and float64; a half-precision
// call is widened: its floating tensors are converted to float32, the float32 op runs (so sums
// accumulate in float32, as in torch's own CPU half-precision conv and linear), and its floating
// outputs are rounded back to the call's dtype. Integer tensors (max-pool indices) pass as they
// are. This is what makes the layers work under torch.autocast("cpu"). Tested in
// tests/test_autocast.py against torch's layers in the same dtype.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "checks.h"

namespace fastlayers {
namespace half_detail {

inline bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

inline const at::Tensor* floating(const at::Tensor& t) {
  return t.defined() && at::isFloatingType(t.scalar_type()) ? &t : nullptr;
}
inline const at::Tensor* floating(const std::optional<at::Tensor>& t) {
  return t.has_value() ? floating(*t) : nullptr;
}
template <class T>
const at::Tensor* floating(const T&) {
  return nullptr;
}

inline at::Tensor widen(const at::Tensor& t) { return floating(t) ? t.to(at::kFloat) : t; }
inline std::optional<at::Tensor> widen(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(widen(*t)) : t;
}
template <class T>
const T& widen(const T& x) {
  return x;
}

inline at::Tensor narrow(const at::Tensor& t, at::ScalarType dtype) {
  return floating(t) ? t.to(dtype) : t;
}
template <class... T>
std::tuple<T...> narrow(const std::tuple<T...>& outputs, at::ScalarType dtype) {
  return std::apply([&](const auto&... t) { return std::tuple<T...>(narrow(t, dtype)...); },
                    outputs);
}

// The name of the op's argument `index`, for error messages.
inline std::string argument_name(const char* op, size_t index) {
  const auto handle = c10::Dispatcher::singleton().findSchema({std::string("fastlayers::") + op, ""});
  if (!handle.has_value() || index >= handle->schema().arguments().size()) {
    return "argument " + std::to_string(index);
  }
  return handle->schema().arguments()[index].name();
}

}  // namespace half_detail

// Calls a float32/float64 CPU op `f` (registered as `op`) so that it also takes float16 and
// bfloat16. The first floating tensor argument (the input, or grad_output) sets the call's dtype;
// when that is a half type, every other floating tensor must have the same dtype. Otherwise `f`
// is called as it is and its own checks apply.
template <class R, class... Args>
R call_widened(R (*f)(Args...), const char* op, Args... args) {
  using namespace half_detail;
  const at::Tensor* tensors[] = {floating(args)...};
  size_t first = 0;
  while (first < sizeof...(Args) && tensors[first] == nullptr) ++first;
  if (first == sizeof...(Args) || !is_half(tensors[first]->scalar_type())) return f(args...);
  const at::ScalarType dtype = tensors[first]->scalar_type();
  for (size_t i = first + 1; i < sizeof...(Args); ++i) {
    FASTLAYERS_CHECK(tensors[i] == nullptr || tensors[i]->scalar_type() == dtype, op, "expected ",
                     argument_name(op, i), " to have the same dtype as ", argument_name(op, first),
                     " (", dtype_name(dtype), "), but got ", dtype_name(tensors[i]->scalar_type()));
  }
  return narrow(f(widen(args)...), dtype);
}

// m.impl(op, widened(&f, op)) registers f for float16 and bfloat16 as well.
template <class R, class... Args>
torch::CppFunction widened(R (*f)(Args...), const char* op) {
  return torch::CppFunction([f, op](Args... args) -> R { return call_widened<R, Args...>(f, op, args...); });
}

}  // namespace fastlayers
