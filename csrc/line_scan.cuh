// The SS2D core's forward at N = 1 over whole grids: one thread per grid line.
//
// A route over an H x W grid walks its lines (rows, or columns when transposed) one after the
// other, each left to right or, reversed, right to left.  Each line maps the state entering
// it, h, to P h + S (P: the product of its decays, S: its end state from zero).  So a thread
// per line walks its line once for (P, S), stores them in shared memory, folds the maps of
// the lines the route walks before its own into its entering state, and walks its line
// again from there, now producing C h.  One launch per orientation, a block holding the lines
// of cpb channels: first the columns (neighbouring columns in neighbouring threads, one
// element per step: coalesced), which sum their routes into a float32 buffer in position
// order; then the rows (each row read with vector loads), which add their routes and
// (sum_k D_k) u to that sum and write y.  A thread adds its routes' outputs into a
// shared-memory plane of its block's channels, in its own line, which no other thread of the
// block touches.  No copy of x or of the routes' inputs is made.
#pragma once

#include "scan_kernels.cuh"

namespace ssops {

// This thread's line: channel d of batch b (slot `plane` of the block), line `line` of its
// orientation, n steps long, its first element at grid offset `first`, `step` apart.
template <bool COL>
struct Line {
  int b, d, plane, line, n, nlines;
  int64_t first, step;
  __device__ explicit Line(const FusedParams& p) {
    nlines = COL ? p.W : p.H;
    plane = threadIdx.x / nlines, line = threadIdx.x - plane * nlines;
    b = blockIdx.x % p.batch, d = (blockIdx.x / p.batch) * p.cpb + plane;
    n = COL ? p.H : p.W;
    first = COL ? line : static_cast<int64_t>(line) * p.W;
    step = COL ? p.W : 1;
  }
  __device__ bool active(const FusedParams& p) const { return plane < p.cpb; }
  __device__ bool walks(const FusedParams& p, int k) const {
    return ((p.transposed >> k) & 1) == COL;
  }
  // the rank of this line in route k's walk, and the slot of its map
  __device__ int rank(const FusedParams& p, int k) const {
    return (p.reversed >> k) & 1 ? nlines - 1 - line : line;
  }
  __device__ int slot(const FusedParams& p, int k) const {
    return (plane * p.K + k) * nlines + rank(p, k);
  }
};

enum LinePass { kMap, kPlane, kSum };

// V elements of T from `at` (aligned to V elements, whole vector loads), in walk order (REV:
// the last first).
template <int V, bool REV, typename T>
__device__ __forceinline__ void load_floats(float (&v)[V], const T* at) {
  Packed<V, T> raw;
#pragma unroll
  for (int i = 0; i < Vec<V, T>::count; ++i)
    raw.vec[i] = reinterpret_cast<const typename Vec<V, T>::type*>(at)[i];
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = to_f(raw.e[REV ? V - 1 - j : j]);
}

// One route k over this thread's line, walked in the route's direction.  kMap returns the
// line's map (P, S).  kPlane starts from h and adds (`add`, else stores) C h + Dsum u into the
// thread's row or column of `plane`; kSum (columns) writes that plus the plane, the columns'
// float32 sum, to p.partial.
template <typename T, int V, bool TAIL, bool REV, bool COL, LinePass PASS>
__device__ __forceinline__ float2 walk_line(const FusedParams& p, const Line<COL>& ln, int k,
                                            float h, float* plane, bool add, float Dsum) {
  const int row = k * p.dim + ln.d;
  const float a2 = p.A[row] * kLog2e, bias = p.bias ? p.bias[row] : 0.f;
  const T* u = static_cast<const T*>(p.u) + ln.b * p.su_b + ln.d * p.su_d + ln.first;
  const T* dl = static_cast<const T*>(p.delta) + k * p.sd_k + ln.b * p.sd_b + ln.d * p.sd_d +
                ln.first;
  const int64_t g = ln.d / (p.dim / p.G);
  const int64_t bo = k * p.sB_k + ln.b * p.sB_b + g * p.sB_g + ln.first;
  const int64_t co = k * p.sC_k + ln.b * p.sC_b + g * p.sC_g + ln.first;
  const float *Bf = static_cast<const float*>(p.B) + bo, *Cf = static_cast<const float*>(p.C) + co;
  const T *Bt = static_cast<const T*>(p.B) + bo, *Ct = static_cast<const T*>(p.C) + co;
  float* sum = PASS == kSum
                   ? p.partial + (static_cast<int64_t>(ln.b) * p.dim + ln.d) * p.L + ln.first
                   : nullptr;
  const int pr = line_plane_row(p.W);
  float* mine = plane + (COL ? ln.line : ln.line * pr);
  // offsets of the walk's next element along the line: in the grid (elements) and in the plane
  const int grid_step = REV ? -static_cast<int>(ln.step) : static_cast<int>(ln.step);
  const int plane_step = REV ? -(COL ? pr : 1) : (COL ? pr : 1);
  int at = REV ? (ln.n - 1) * static_cast<int>(ln.step) : 0;
  int in_plane = REV ? (ln.n - 1) * (COL ? pr : 1) : 0;
  float prod = 1.f;
  // Column lines take V steps at a time too (loads in flight), one element each, stride W;
  // TAIL: the line's length is not a multiple of V (the last run's extra steps are skipped).
  for (int c = 0; c < ln.n; c += V) {
    float uv[V], dv[V], bv[V], cv[V];
    if constexpr (COL) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const int o = !TAIL || c + j < ln.n ? at + j * grid_step : 0;
        uv[j] = to_f(u[o]), dv[j] = to_f(dl[o]);
        bv[j] = p.bc_f32 ? Bf[o] : to_f(Bt[o]);
        if constexpr (PASS != kMap) cv[j] = p.bc_f32 ? Cf[o] : to_f(Ct[o]);
      }
    } else {  // whole aligned runs of V (the launch checks W % V == 0)
      const int i0 = REV ? ln.n - V - c : c;  // this run's first element along the line
      load_floats<V, REV>(uv, u + i0);
      load_floats<V, REV>(dv, dl + i0);
      if (p.bc_f32) {
        load_floats<V, REV>(bv, Bf + i0);
        if constexpr (PASS != kMap) load_floats<V, REV>(cv, Cf + i0);
      } else {
        load_floats<V, REV>(bv, Bt + i0);
        if constexpr (PASS != kMap) load_floats<V, REV>(cv, Ct + i0);
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const bool in = !TAIL || c + j < ln.n;  // past the end: the identity step (dt = u = 0)
      const float raw = dv[j] + bias;
      const float dt = in ? (p.softplus ? softplus(raw) : raw) : 0.f;
      const float a = exp2_approx(dt * a2);
      h = fmaf(a, h, dt * uv[j] * bv[j]);
      if constexpr (PASS == kMap) {
        prod *= a;
      } else if (in) {
        float& o = mine[in_plane + j * plane_step];
        const float y = fmaf(Dsum, uv[j], cv[j] * h) + (add ? o : 0.f);
        if constexpr (PASS == kSum) sum[at + j * grid_step] = y;
        else o = y;
      }
    }
    at += V * grid_step, in_plane += V * plane_step;
  }
  return make_float2(prod, h);
}

template <typename T, int V, bool TAIL, bool COL, LinePass PASS>
__device__ __forceinline__ float2 walk_route(const FusedParams& p, const Line<COL>& ln, int k,
                                             float h, float* plane, bool add, float Dsum) {
  return (p.reversed >> k) & 1
             ? walk_line<T, V, TAIL, true, COL, PASS>(p, ln, k, h, plane, add, Dsum)
             : walk_line<T, V, TAIL, false, COL, PASS>(p, ln, k, h, plane, add, Dsum);
}

// A block's planes [cpb][H][line_plane_row(W)] and its lines' maps [cpb][K][lines].  Columns
// sum their routes in the plane and write the last into p.partial; rows start from
// p.partial (or zero), add their routes and sum_k D_k u, and the block writes y from the
// planes, coalesced (a row thread's own stores would each touch another row).
// (4 blocks of the most threads: at most 64 registers.)
template <typename T, int V, bool TAIL, bool COL>
__global__ void __launch_bounds__(kLineMaxThreads, 4) line_fwd_kernel(const FusedParams p) {
  extern __shared__ float4 line_smem_[];
  float* planes = reinterpret_cast<float*>(line_smem_);
  float2* maps = reinterpret_cast<float2*>(planes + line_maps_offset(p));
  const Line<COL> ln(p);
  const int pr = line_plane_row(p.W), plane_size = p.H * pr;
  const int64_t first_channel = (blockIdx.x % p.batch) * static_cast<int64_t>(p.dim) +
                                (blockIdx.x / p.batch) * p.cpb;  // b * dim + d0
  // f(plane offset, flat offset, channel slot, position) for the block's pixels in order
  const auto each_pixel = [&](auto&& f) {
    for (int i = threadIdx.x; i < p.cpb * p.L; i += blockDim.x) {
      const int c = i / p.L, pos = i - c * p.L, r = pos / p.W;
      f(c * plane_size + r * pr + pos - r * p.W, (first_channel + c) * p.L + pos, c, pos);
    }
  };
  if (!COL)
    each_pixel([&](int at, int64_t flat, int, int) {
      planes[at] = p.partial ? p.partial[flat] : 0.f;
    });
  float* plane = planes + ln.plane * plane_size;
  if (ln.active(p))
    for (int k = 0; k < p.K; ++k)
      if (ln.walks(p, k))
        maps[ln.slot(p, k)] = walk_route<T, V, TAIL, COL, kMap>(p, ln, k, 0.f, plane, false, 0.f);
  __syncthreads();
  if (ln.active(p)) {
    int last = -1;
    for (int k = 0; k < p.K; ++k) last = ln.walks(p, k) ? k : last;
    float Dsum = 0.f;  // sum_k D_k u: added by the rows' first route
    if (!COL && p.D)
      for (int k = 0; k < p.K; ++k) Dsum += p.D[k * p.dim + ln.d];
    bool add = !COL;
    for (int k = 0; k < p.K; ++k) {
      if (!ln.walks(p, k)) continue;
      float h = 0.f;
      const int at = ln.slot(p, k);
      for (int s = at - ln.rank(p, k); s < at; ++s) h = fmaf(maps[s].x, h, maps[s].y);
      if (COL && k == last) walk_route<T, V, TAIL, COL, kSum>(p, ln, k, h, plane, add, 0.f);
      else walk_route<T, V, TAIL, COL, kPlane>(p, ln, k, h, plane, add, Dsum);
      add = true, Dsum = 0.f;
    }
  }
  if (COL) return;
  __syncthreads();
  each_pixel([&](int at, int64_t, int c, int pos) {
    const float y = planes[at] * p.y_scale;
    const int64_t o = (blockIdx.x % p.batch) * p.sy_b +
                      ((blockIdx.x / p.batch) * p.cpb + c) * p.sy_d + pos;
    if (p.y_f32) static_cast<float*>(p.y)[o] = y;
    else static_cast<T*>(p.y)[o] = from_f<T>(y);
  });
}

template <typename T, int V, bool COL, bool TAIL = false>
void launch_line_orientation(const FusedParams& p, cudaStream_t stream) {
  const size_t smem = line_smem_bytes(p, COL);
  const auto kernel = line_fwd_kernel<T, V, TAIL, COL>;
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  const int threads = (p.cpb * (COL ? p.W : p.H) + 31) / 32 * 32;
  kernel<<<p.batch * (p.dim / p.cpb), threads, smem, stream>>>(p);
}

// Columns (when any route walks them) into p.partial, then rows into y.  p.vec: elements per
// row load, the widest that every row's alignment allows (ops.cpp).
template <typename T>
void launch_line_fwd(const FusedParams& p, cudaStream_t stream) {
  if (p.transposed) {
    if (p.H % 4) launch_line_orientation<T, 4, true, true>(p, stream);
    else launch_line_orientation<T, 4, true>(p, stream);
  }
  switch (p.vec) {
    case 8:
      if constexpr (sizeof(T) == 2) return launch_line_orientation<T, 8, false>(p, stream);
      [[fallthrough]];
    case 4: return launch_line_orientation<T, 4, false>(p, stream);
    case 2: return launch_line_orientation<T, 2, false>(p, stream);
    default: return launch_line_orientation<T, 1, false>(p, stream);
  }
}

}  // namespace ssops
