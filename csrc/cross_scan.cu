// Images <-> VMamba's routes (CrossParams in scan.h): cross_scan, cross_merge and the per-route
// copies of the SS2D core.  Merges and per-route images of row-major layout (unit position
// stride, BCHW) go through shared-memory tiles, so that both sides are read and written along
// their contiguous axis: a block holds a tile of T x T positions of kTileElems / (T * T) images.
// cross_scan of one shared image and other layouts (channels last) take one gather per element
// (for cross_scan, the column routes' strided reads of x are served by the caches).
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
      const int at = route_pos(pos, p.L, p.H, p.W, rev, tr);
      dst[r.route + pos] = from_f<D>(to_f(src[r.image + at * p.sx_l]));
    } else {
      const float v = to_f(src[r.route + route_step(pos, p.L, p.H, p.W, rev, tr)]);
      if constexpr (MODE == kCrossMerge) acc += v;
      else dst[r.image + pos * p.sx_l] = from_f<D>(v);
    }
  }
  if constexpr (MODE == kCrossMerge)
    dst[cross_rows(p, b, c, 0).image + pos * p.sx_l] = from_f<D>(acc);
}

constexpr int kTileElems = 2048, kTileThreads = 256;

// The route sets of the tiled kernels, as compile-time flags (ssops/_routes.py ROUTE_FLAGS):
// K routes, bit k of REV / TR: route k walks backwards / column by column.
template <int K_, unsigned REV_, unsigned TR_>
struct RouteSet {
  static constexpr int K = K_;
  static constexpr unsigned REV = REV_, TR = TR_;
};
using Unidi = RouteSet<1, 0u, 0u>;
using Bidi = RouteSet<2, 0b10u, 0u>;
using Cross = RouteSet<4, 0b1100u, 0b1010u>;

// Element j of this thread in a tile of I images x T x T positions, walked with columns fastest
// (`down` false: along image rows, a row-major route's steps) or rows fastest (a column-major
// route's steps).
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
// Every load of a thread is issued before that barrier (K x PER in flight).  Positions and steps
// are 32-bit, worked out once per element and walk order; the route flags are compile-time.
template <typename S, typename D, int T, int MODE, typename R>
__global__ void __launch_bounds__(kTileThreads, 2) cross_tiled_kernel(const CrossParams p) {
  constexpr int I = kTileElems / (T * T), PER = kTileElems / kTileThreads, K = R::K;
  constexpr bool ANY_TR = R::TR != 0;
  __shared__ float tile[ANY_TR ? 2 : 1][I][T][T + 1];  // (+1: a column walk hits distinct banks)
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
  __syncthreads();  // (the image offsets)
  // per element: in image order (row) and down the columns (col): real or not, the position
  // (row) or the column-major step (col); and its image's offsets (both walks of element j
  // stay in one image)
  bool on_row[PER], on_col[PER];
  int pos[PER], col_step[PER];
  int64_t image_at[PER], route_at[PER];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const TileElem<T> a(j, false), b(j, true);
    on_row[j] = a.i < images && h0 + a.r < p.H && w0 + a.c < p.W;
    on_col[j] = b.i < images && h0 + b.r < p.H && w0 + b.c < p.W;
    pos[j] = (h0 + a.r) * p.W + w0 + a.c;
    col_step[j] = (w0 + b.c) * p.H + h0 + b.r;
    const int i = a.i < images ? a.i : 0;
    image_at[j] = image_row[i], route_at[j] = route_row[i];
  }
  const auto step = [&](int j, int k) {  // route k's step of element j in its own walk order
    const int s = (R::TR >> k) & 1 ? col_step[j] : pos[j];
    return (R::REV >> k) & 1 ? p.L - 1 - s : s;
  };
  const auto routed = [&](int j, int k) { return route_at[j] + k * route_k + step(j, k); };
  const auto image = [&](int j, int k) { return image_at[j] + k * p.sx_k + pos[j]; };
  // the tile slot of column route k: one per route (merge: one, summed over the routes)
  const auto slot = [&](int k) {
    return MODE == kCrossMerge ? 0 : __popc(R::TR & ((1u << k) - 1));
  };
  // every column route's tile to dst[at(j, k)], walked down the columns (the route side) or
  // along the rows (the image side)
  const auto tile_out = [&](bool down, const auto& at) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (!((R::TR >> k) & 1)) continue;
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const TileElem<T> e(j, down);
        if (down ? on_col[j] : on_row[j])
          dst[at(j, k)] = from_f<D>(tile[slot(k)][e.i][e.r][e.c]);
      }
    }
  };
  float v[K][PER];  // each route's values, in its own walk order
  if constexpr (MODE == kCrossScan) {
#pragma unroll
    for (int k = 0; k < K; ++k)
#pragma unroll
      for (int j = 0; j < PER; ++j) v[k][j] = on_row[j] ? to_f(src[image(j, k)]) : 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        if (!on_row[j]) continue;
        const TileElem<T> e(j, false);
        if ((R::TR >> k) & 1) tile[slot(k)][e.i][e.r][e.c] = v[k][j];
        else dst[routed(j, k)] = from_f<D>(v[k][j]);
      }
    }
    if constexpr (ANY_TR) {
      __syncthreads();
      tile_out(true, routed);
    }
  } else {
#pragma unroll
    for (int k = 0; k < K; ++k)  // every route's values, in its walk order
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const bool on = (R::TR >> k) & 1 ? on_col[j] : on_row[j];
        v[k][j] = on ? to_f(src[routed(j, k)]) : 0.f;
      }
    float row[PER];  // merge: the row routes' sum, in image order
#pragma unroll
    for (int j = 0; j < PER; ++j) row[j] = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        if ((R::TR >> k) & 1) {
          if (!on_col[j]) continue;
          const TileElem<T> e(j, true);
          float& t = tile[slot(k)][e.i][e.r][e.c];
          t = MODE == kCrossMerge && (R::TR & ((1u << k) - 1)) ? t + v[k][j] : v[k][j];
        } else if (MODE == kCrossMerge) {
          row[j] += v[k][j];
        } else if (on_row[j]) {
          dst[image(j, k)] = from_f<D>(v[k][j]);
        }
      }
    }
    if constexpr (ANY_TR) __syncthreads();
    if constexpr (MODE == kCrossMerge) {
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const TileElem<T> e(j, false);
        if (on_row[j])
          dst[image(j, 0)] = from_f<D>(ANY_TR ? row[j] + tile[0][e.i][e.r][e.c] : row[j]);
      }
    } else {
      tile_out(false, image);
    }
  }
}

template <typename S, typename D, int MODE, typename R>
void launch_tiled(const CrossParams& p, int T, dim3 grid, cudaStream_t stream) {
  if (T == 32)
    cross_tiled_kernel<S, D, 32, MODE, R><<<grid, kTileThreads, 0, stream>>>(p);
  else if (T == 16)
    cross_tiled_kernel<S, D, 16, MODE, R><<<grid, kTileThreads, 0, stream>>>(p);
  else
    cross_tiled_kernel<S, D, 8, MODE, R><<<grid, kTileThreads, 0, stream>>>(p);
}

template <typename S, typename D, int MODE>
void launch_cross_mode(const CrossParams& p, cudaStream_t stream) {
  const int64_t images = static_cast<int64_t>(p.batch) * p.C;
  const int side = std::max(p.H, p.W);
  const int T = side > 16 ? 32 : side > 8 ? 16 : 8;
  const int64_t tiles = static_cast<int64_t>((p.H + T - 1) / T) * ((p.W + T - 1) / T);
  const auto is = [&](auto set) {
    using R = decltype(set);
    return p.K == R::K && p.reversed == R::REV && p.transposed == R::TR;
  };
  const bool known = is(Unidi{}) || is(Bidi{}) || is(Cross{});
  // (cross_scan of one shared image: the gathers were as fast or faster, bench/NOTES.md)
  const bool shared = MODE == kCrossScan && p.sx_k == 0;
  if (p.sx_l != 1 || tiles > 65535 || !known || shared) {
    const int64_t n = images * p.L;
    cross_gather_kernel<S, D, MODE><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(p);
    return;
  }
  const dim3 grid(static_cast<unsigned>((images * T * T + kTileElems - 1) / kTileElems),
                  static_cast<unsigned>(tiles));
  if (is(Cross{})) return launch_tiled<S, D, MODE, Cross>(p, T, grid, stream);
  if (is(Bidi{})) return launch_tiled<S, D, MODE, Bidi>(p, T, grid, stream);
  launch_tiled<S, D, MODE, Unidi>(p, T, grid, stream);
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
