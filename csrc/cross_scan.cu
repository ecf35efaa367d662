// Images <-> VMamba's routes (CrossParams in scan.h): cross_scan, cross_merge and the per-route
// copies of the SS2D core.  Row-major images (unit position stride, BCHW) go through shared
// memory tiles, so that both sides are read and written along their contiguous axis: a block
// holds a tile of T x T positions of kTileElems / (T * T) images, loaded row by row, and walks it
// row by row for the row-major routes and column by column for the column-major ones.  Other
// layouts (channels last) take one gather per element.
#include "scan_kernels.cuh"

namespace ssops {

// The image-side offset of route k's image (b, c) and the route-side offset of its step 0.
struct CrossRows {
  int64_t image, route;
};
__device__ __forceinline__ CrossRows cross_rows(const CrossParams& p, int64_t b, int c, int k) {
  return {b * p.sx_b + k * p.sx_k + c * p.sx_c, ((b * p.K + k) * p.C + c) * p.L};
}

template <typename S, typename D, int MODE>
__global__ void cross_gather_kernel(const CrossParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(p.batch) * p.C * p.L) return;
  int c, pos;  // (scan: pos is the route step; steps fastest, so writes are coalesced)
  int64_t b;
  if (MODE != kCrossScan && p.channel_fast) {  // neighbouring threads: neighbouring channels
    c = static_cast<int>(i % p.C), pos = static_cast<int>((i / p.C) % p.L), b = i / p.C / p.L;
  } else {
    pos = static_cast<int>(i % p.L), c = static_cast<int>((i / p.L) % p.C), b = i / p.L / p.C;
  }
  const S* src = static_cast<const S*>(p.src);
  D* dst = static_cast<D*>(p.dst);
  float acc = 0.f;
  for (int k = 0; k < p.K; ++k) {
    const bool rev = (p.reversed >> k) & 1, tr = (p.transposed >> k) & 1;
    const CrossRows r = cross_rows(p, b, c, k);
    if constexpr (MODE == kCrossScan) {
      dst[r.route + pos] = from_f<D>(to_f(src[r.image + route_pos(pos, p.L, p.H, p.W, rev, tr) * p.sx_l]));
    } else {
      const float v = to_f(src[r.route + route_step(pos, p.L, p.H, p.W, rev, tr)]);
      if constexpr (MODE == kCrossMerge) acc += v;
      else dst[r.image + pos * p.sx_l] = from_f<D>(v);
    }
  }
  if constexpr (MODE == kCrossMerge) dst[cross_rows(p, b, c, 0).image + pos * p.sx_l] = from_f<D>(acc);
}

constexpr int kTileElems = 2048, kTileThreads = 256, kMaxRoutes = 4;

// The tiled kernels: element j of this thread in a tile of I images x T x T positions, walked
// with columns fastest (`down` false: along image rows, a row-major route's steps) or rows fastest
// (a column-major route's steps).
template <int T>
struct TileElem {
  int i, r, c;
  __device__ __forceinline__ TileElem(int j, bool down) {
    const int e = threadIdx.x + j * kTileThreads, rem = e % (T * T);
    i = e / (T * T);
    r = down ? rem % T : rem / T;
    c = down ? rem / T : rem % T;
  }
};

// A row-major route visits a tile's positions in image order (or reversed): each thread moves
// its elements straight between the two sides, in registers.  A column-major route visits
// them down the columns: its values pass through a shared-memory tile (one per column route
// with its own image), written one way and read the other after the kernel's one barrier.
// Every load of a thread is issued before that barrier (K x PER in flight).
template <typename S, typename D, int T, int MODE>
__global__ void __launch_bounds__(kTileThreads, 2) cross_tiled_kernel(const CrossParams p) {
  constexpr int I = kTileElems / (T * T), PER = kTileElems / kTileThreads;
  __shared__ float tile[2][I][T][T + 1];  // (+1: a column walk hits distinct banks)
  __shared__ int64_t image_row[I], route_row[I];  // route 0's offsets of the block's images
  const int64_t img0 = static_cast<int64_t>(blockIdx.x) * I;
  const int64_t left = static_cast<int64_t>(p.batch) * p.C - img0;
  const int images = left < I ? static_cast<int>(left) : I;  // in this block
  if (threadIdx.x < images) {
    const int64_t img = img0 + threadIdx.x;
    const CrossRows r = cross_rows(p, img / p.C, static_cast<int>(img % p.C), 0);
    image_row[threadIdx.x] = r.image, route_row[threadIdx.x] = r.route;
  }
  const int tiles_w = (p.W + T - 1) / T;
  const int h0 = blockIdx.y / tiles_w * T, w0 = blockIdx.y % tiles_w * T;
  const int64_t route_k = static_cast<int64_t>(p.C) * p.L;  // route stride of the route side
  const S* src = static_cast<const S*>(p.src);
  D* dst = static_cast<D*>(p.dst);
  const auto on = [&](const TileElem<T>& e) {
    return e.i < images && h0 + e.r < p.H && w0 + e.c < p.W;
  };
  const auto pos = [&](const TileElem<T>& e) { return (h0 + e.r) * p.W + w0 + e.c; };
  const auto tr = [&](int k) { return (p.transposed >> k) & 1; };
  const auto step = [&](const TileElem<T>& e, int k) {  // route k's step at e
    const int s = tr(k) ? (w0 + e.c) * p.H + h0 + e.r : pos(e);
    return (p.reversed >> k) & 1 ? p.L - 1 - s : s;
  };
  const auto routed = [&](const TileElem<T>& e, int k) { return route_row[e.i] + k * route_k + step(e, k); };
  const auto image = [&](const TileElem<T>& e, int k) { return image_row[e.i] + k * p.sx_k + pos(e); };
  // the tile slot of column route k: one per route with its own image, else one for all
  const auto slot = [&](int k) {
    return MODE == kCrossMerge || (MODE == kCrossScan && p.sx_k == 0)
               ? 0 : __popc(p.transposed & ((1u << k) - 1));
  };
  __syncthreads();  // (the image offsets)
  float v[kMaxRoutes][PER];  // each route's values, in its own walk order
  if constexpr (MODE == kCrossScan) {
#pragma unroll
    for (int k = 0; k < kMaxRoutes; ++k) {
      if (k >= p.K) break;
#pragma unroll
      for (int j = 0; j < PER; ++j) {  // (a shared image is loaded once)
        const TileElem<T> e(j, false);
        v[k][j] = k && p.sx_k == 0 ? v[0][j] : on(e) ? to_f(src[image(e, k)]) : 0.f;
      }
    }
#pragma unroll
    for (int k = 0; k < kMaxRoutes; ++k) {
      if (k >= p.K) break;
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const TileElem<T> e(j, false);
        if (!on(e)) continue;
        if (tr(k)) tile[slot(k)][e.i][e.r][e.c] = v[k][j];
        else dst[routed(e, k)] = from_f<D>(v[k][j]);
      }
    }
    if (!p.transposed) return;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kMaxRoutes; ++k) {
      if (k >= p.K) break;
      if (!tr(k)) continue;
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const TileElem<T> e(j, true);
        if (on(e)) dst[routed(e, k)] = from_f<D>(tile[slot(k)][e.i][e.r][e.c]);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < kMaxRoutes; ++k) {  // every route's values, in its walk order
      if (k >= p.K) break;
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const TileElem<T> e(j, tr(k));
        v[k][j] = on(e) ? to_f(src[routed(e, k)]) : 0.f;
      }
    }
    float row[PER];  // merge: the row routes' sum, by image order
#pragma unroll
    for (int j = 0; j < PER; ++j) row[j] = 0.f;
#pragma unroll
    for (int k = 0; k < kMaxRoutes; ++k) {
      if (k >= p.K) break;
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const TileElem<T> e(j, tr(k));
        if (!on(e)) continue;
        if (tr(k)) {
          float& t = tile[slot(k)][e.i][e.r][e.c];
          t = MODE == kCrossMerge && (p.transposed & ((1u << k) - 1)) ? t + v[k][j] : v[k][j];
        } else if (MODE == kCrossMerge) {
          row[j] += v[k][j];
        } else {
          dst[image(e, k)] = from_f<D>(v[k][j]);
        }
      }
    }
    if (p.transposed) __syncthreads();
    if constexpr (MODE == kCrossMerge) {
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const TileElem<T> e(j, false);
        if (on(e))
          dst[image(e, 0)] = from_f<D>(p.transposed ? row[j] + tile[0][e.i][e.r][e.c] : row[j]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < kMaxRoutes; ++k) {
        if (k >= p.K) break;
        if (!tr(k)) continue;
#pragma unroll
        for (int j = 0; j < PER; ++j) {
          const TileElem<T> e(j, false);
          if (on(e)) dst[image(e, k)] = from_f<D>(tile[slot(k)][e.i][e.r][e.c]);
        }
      }
    }
  }
}

template <typename S, typename D, int MODE>
void launch_cross_mode(const CrossParams& p, cudaStream_t stream) {
  const int64_t images = static_cast<int64_t>(p.batch) * p.C;
  const int side = std::max(p.H, p.W);
  const int T = side > 16 ? 32 : side > 8 ? 16 : 8;
  const int64_t tiles = static_cast<int64_t>((p.H + T - 1) / T) * ((p.W + T - 1) / T);
  if (p.sx_l != 1 || tiles > 65535 || p.K > kMaxRoutes || __builtin_popcount(p.transposed) > 2) {
    const int64_t n = images * p.L;
    cross_gather_kernel<S, D, MODE><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(p);
    return;
  }
  const auto grid = [&](int t) {
    return dim3(static_cast<unsigned>((images * t * t + kTileElems - 1) / kTileElems),
                static_cast<unsigned>(tiles));
  };
  if (T == 32)
    cross_tiled_kernel<S, D, 32, MODE><<<grid(32), kTileThreads, 0, stream>>>(p);
  else if (T == 16)
    cross_tiled_kernel<S, D, 16, MODE><<<grid(16), kTileThreads, 0, stream>>>(p);
  else
    cross_tiled_kernel<S, D, 8, MODE><<<grid(8), kTileThreads, 0, stream>>>(p);
}

template <typename S, typename D>
void launch_cross_typed(const CrossParams& p, cudaStream_t stream) {
  switch (p.mode) {
    case kCrossScan: return launch_cross_mode<S, D, kCrossScan>(p, stream);
    case kCrossMerge: return launch_cross_mode<S, D, kCrossMerge>(p, stream);
    default: return launch_cross_mode<S, D, kCrossUnroute>(p, stream);
  }
}

// The scan copies in one dtype; the merges read the input dtype or float32 (partial sums) and
// write either.
template <typename D>
void launch_cross_to(const CrossParams& p, int src_dtype, cudaStream_t stream) {
  if (src_dtype == 0) return launch_cross_typed<float, D>(p, stream);
  if (src_dtype == 1) return launch_cross_typed<__half, D>(p, stream);
  launch_cross_typed<__nv_bfloat16, D>(p, stream);
}

void launch_cross(const CrossParams& p, int src_dtype, int dst_dtype, cudaStream_t stream) {
  switch (dst_dtype) {
    case 0: return launch_cross_to<float>(p, src_dtype, stream);
    case 1: return launch_cross_to<__half>(p, src_dtype, stream);
    default: return launch_cross_to<__nv_bfloat16>(p, src_dtype, stream);
  }
}

}  // namespace ssops
