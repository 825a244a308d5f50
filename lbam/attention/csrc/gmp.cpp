// LBAM's channel-branch pooling on CPU in one pass over F, and the max pooling's gradient.
// Registered as torch.ops.lbam.pool_avgmax and torch.ops.lbam.add_max_grad_ (see lbam/attention/_ext.py).
//
// Why: eager PyTorch reads F twice for GAP and GMP (mean, amax), and amax's gradient costs three more
// full-size passes (find the maxima, count the ties, add). Here one vectorised pass over each H×W map keeps,
// per SIMD lane, the sum, the maximum, where that maximum first occurred and how often it occurred since; the
// lanes that hold the map's maximum give its position and whether it is tied. The backward adds d_max at that
// position (one element per map); only maps with ties are read again, to split d_max evenly among them as
// amax's backward does. Per map the backward keeps one int32 (`where`): the position of a unique maximum,
// kTied, or kNaN (amax propagates NaN, and its gradient is then NaN over the whole map).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>

namespace {

constexpr int32_t kTied = -1, kNaN = -2;

template <typename T>
void pool_row(const T* p, int64_t n, T* avg, T* mx, int32_t* where) {
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // lane integers, as wide as T
  typedef T V __attribute__((vector_size(32)));                      // GCC/Clang vector extensions
  typedef I IV __attribute__((vector_size(32)));
  constexpr int W = sizeof(V) / sizeof(T), U = 2, S = W * U;  // U vectors per step: independent chains
  constexpr T kLowest = -std::numeric_limits<T>::infinity();
  V sum[U], best[U];
  IV at[U], count[U];
  for (int u = 0; u < U; ++u) {
    sum[u] = V{};
    best[u] = V{} + kLowest;
    at[u] = IV{};
    count[u] = IV{};
  }
  const int64_t full = n / S * S;
  for (int64_t i = 0; i < full; i += S) {
    for (int u = 0; u < U; ++u) {
      V v;
      std::memcpy(&v, p + i + u * W, sizeof(V));  // unaligned load
      sum[u] += v;
      const IV gt = v > best[u], eq = v == best[u];  // masks: -1 (true) or 0
      best[u] = gt ? v : best[u];
      at[u] = gt ? IV{} + static_cast<I>(i) : at[u];  // strict >: the lane keeps its first maximum
      count[u] = gt ? IV{} + 1 : count[u] - eq;
    }
  }
  T total = 0, top = kLowest;
  for (int u = 0; u < U; ++u) {
    for (int j = 0; j < W; ++j) {
      total += sum[u][j];
      top = std::max(top, best[u][j]);
    }
  }
  for (int64_t i = full; i < n; ++i) {
    total += p[i];
    top = std::max(top, p[i]);
  }
  *avg = total / static_cast<T>(n);
  if (total != total && std::any_of(p, p + n, [](T v) { return v != v; })) {
    *mx = std::numeric_limits<T>::quiet_NaN();
    *where = kNaN;
    return;
  }
  int64_t first = n, c = 0;
  if (full > 0) {
    for (int u = 0; u < U; ++u) {
      for (int j = 0; j < W; ++j) {
        if (best[u][j] == top) {
          c += count[u][j];
          first = std::min<int64_t>(first, static_cast<int64_t>(at[u][j]) + u * W + j);
        }
      }
    }
  }
  for (int64_t i = full; i < n; ++i) {
    if (p[i] == top) {
      first = std::min(first, i);
      ++c;
    }
  }
  *mx = top;
  *where = c == 1 ? static_cast<int32_t>(first) : kTied;
}

int64_t grain(int64_t n) { return std::max<int64_t>(1, 32768 / n); }  // rows per task: >= 32k elements

std::tuple<at::Tensor, at::Tensor, at::Tensor> pool_avgmax(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "pool_avgmax: contiguous NCHW CPU tensor");
  const int64_t rows = x.size(0) * x.size(1), n = x.size(2) * x.size(3);
  TORCH_CHECK(n > 0 && n < (int64_t{1} << 31), "pool_avgmax: maps of 1 to 2^31 - 1 elements");
  auto avg = at::empty({x.size(0), x.size(1)}, x.options());
  auto mx = at::empty_like(avg);
  auto where = at::empty({x.size(0), x.size(1)}, x.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool_avgmax", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t *pa = avg.data_ptr<scalar_t>(), *pm = mx.data_ptr<scalar_t>();
    int32_t* pw = where.data_ptr<int32_t>();
    at::parallel_for(0, rows, grain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) pool_row(px + r * n, n, pa + r, pm + r, pw + r);
    });
  });
  return {avg, mx, where};
}

// dx += d_max at each map's maximum, split evenly among ties; a NaN map gets NaN everywhere, as amax.
void add_max_grad_(at::Tensor dx, const at::Tensor& x, const at::Tensor& mx, const at::Tensor& where,
                   const at::Tensor& d_max) {
  TORCH_CHECK(dx.device().is_cpu() && dx.is_contiguous() && x.is_contiguous() && dx.sizes() == x.sizes() &&
                  x.dim() == 4 && dx.scalar_type() == x.scalar_type(),
              "add_max_grad_: dx and x contiguous NCHW CPU tensors of one shape and dtype");
  const int64_t rows = x.size(0) * x.size(1), n = x.size(2) * x.size(3);
  TORCH_CHECK(mx.numel() == rows && where.numel() == rows && d_max.numel() == rows &&
                  where.scalar_type() == at::kInt,
              "add_max_grad_: one value per map");
  auto g = d_max.to(x.scalar_type()).contiguous();
  auto m = mx.contiguous(), w = where.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "add_max_grad_", [&] {
    scalar_t* pd = dx.data_ptr<scalar_t>();
    const scalar_t *px = x.const_data_ptr<scalar_t>(), *pm = m.const_data_ptr<scalar_t>();
    const scalar_t* pg = g.const_data_ptr<scalar_t>();
    const int32_t* pw = w.const_data_ptr<int32_t>();
    at::parallel_for(0, rows, grain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        scalar_t* d = pd + r * n;
        const scalar_t* p = px + r * n;
        if (pw[r] >= 0) {
          d[pw[r]] += pg[r];
        } else if (pw[r] == kNaN) {
          for (int64_t i = 0; i < n; ++i) d[i] += std::numeric_limits<scalar_t>::quiet_NaN();
        } else {
          const scalar_t top = pm[r];
          const int64_t ties = std::count(p, p + n, top);
          const scalar_t share = pg[r] / static_cast<scalar_t>(ties);
          for (int64_t i = 0; i < n; ++i) d[i] += p[i] == top ? share : scalar_t(0);
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY(lbam, m) {
  m.def("pool_avgmax(Tensor x) -> (Tensor, Tensor, Tensor)");
  m.def("add_max_grad_(Tensor(a!) dx, Tensor x, Tensor mx, Tensor where, Tensor d_max) -> ()");
}

TORCH_LIBRARY_IMPL(lbam, CPU, m) {
  m.impl("pool_avgmax", pool_avgmax);
  m.impl("add_max_grad_", add_max_grad_);
}
