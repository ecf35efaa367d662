// cross_scan / cross_merge: VMamba's routes as index maps (one gather per output element).
#include "scan_kernels.cuh"

namespace ssops {

template <typename T>
__global__ void cross_scan_kernel(const CrossParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(p.batch) * p.C * p.L) return;
  const int s = static_cast<int>(i % p.L);  // output order: steps fastest (coalesced writes)
  const int64_t bc = i / p.L;
  const int c = static_cast<int>(bc % p.C), b = static_cast<int>(bc / p.C);
  const T* x = static_cast<const T*>(p.src) + b * p.sx_b + c * p.sx_c;
  T* out = static_cast<T*>(p.dst) + (static_cast<int64_t>(b) * p.K * p.C + c) * p.L + s;
  for (int k = 0; k < p.K; ++k) {
    const int pos = route_pos(s, p.L, p.H, p.W, (p.reversed >> k) & 1, (p.transposed >> k) & 1);
    out[static_cast<int64_t>(k) * p.C * p.L] = x[pos * p.sx_l];
  }
}

template <typename T>
__global__ void cross_merge_kernel(const CrossParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(p.batch) * p.C * p.L) return;
  int c, pos;
  int64_t b;
  if (p.channel_fast) {  // channels-last output: neighbouring threads write neighbouring channels
    c = static_cast<int>(i % p.C), pos = static_cast<int>((i / p.C) % p.L), b = i / p.C / p.L;
  } else {
    pos = static_cast<int>(i % p.L), c = static_cast<int>((i / p.L) % p.C), b = i / p.L / p.C;
  }
  const T* y = static_cast<const T*>(p.src) + (b * p.K * p.C + c) * p.L;
  float acc = 0.f;
  for (int k = 0; k < p.K; ++k) {
    const int s = route_step(pos, p.L, p.H, p.W, (p.reversed >> k) & 1, (p.transposed >> k) & 1);
    acc += to_f(y[static_cast<int64_t>(k) * p.C * p.L + s]);
  }
  static_cast<T*>(p.dst)[b * p.sx_b + c * p.sx_c + pos * p.sx_l] = from_f<T>(acc);
}

template <typename T>
void launch_cross_typed(const CrossParams& p, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(p.batch) * p.C * p.L;
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  if (p.merge)
    cross_merge_kernel<T><<<blocks, 256, 0, stream>>>(p);
  else
    cross_scan_kernel<T><<<blocks, 256, 0, stream>>>(p);
}

void launch_cross(const CrossParams& p, int dtype, cudaStream_t stream) {
  switch (dtype) {
    case 0: return launch_cross_typed<float>(p, stream);
    case 1: return launch_cross_typed<__half>(p, stream);
    default: return launch_cross_typed<__nv_bfloat16>(p, stream);
  }
}

}  // namespace ssops
