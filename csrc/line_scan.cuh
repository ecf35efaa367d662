// The SS2D core's forward at N = 1 over whole grids: one thread per grid line.
//
// A route over an H x W grid walks its lines (rows, or columns when transposed) one after the
// other, each left to right or, reversed, right to left.  Each line maps the state entering
// it, h, to P h + S (P: the product of its decays, S: its end state from zero).  So a thread
// per line walks its line once for (P, S), stores them in shared memory, folds the maps of
// the lines the route walks before its own into its entering state, and walks its line
// again from there, now adding C h to the outputs.  A row thread serves every route over rows,
// a column thread every route over columns; row threads read their rows with vector loads,
// column threads one element per step with neighbouring columns in neighbouring threads
// (coalesced).  Each orientation sums its routes' outputs (and sum_k D_k u) into its own
// float32 plane in shared memory, one thread per line (no atomics), and the block writes
// y = rows + columns once, coalesced.  No copy of x or of the routes' inputs is made.
#pragma once

#include "scan_kernels.cuh"

namespace ssops {

// V elements of T from `at` (aligned to V elements), in walk order (REV: the last first).
template <int V, bool REV, typename T>
__device__ __forceinline__ void load_run(float (&v)[V], const T* at) {
  Packed<V, T> raw;
#pragma unroll
  for (int i = 0; i < Vec<V, T>::count; ++i)
    raw.vec[i] = reinterpret_cast<const typename Vec<V, T>::type*>(at)[i];
#pragma unroll
  for (int k = 0; k < V; ++k) v[k] = to_f(raw.e[REV ? V - 1 - k : k]);
}

// This thread's line of one plane (channel d of batch b): offsets of its first element in the
// grid, the element stride along it, its length and its rank among its orientation's lines.
struct Line {
  int b, d, plane, line, n;
  bool col;
  int64_t first, step;  // grid offsets (elements)
};

__device__ __forceinline__ bool line_of(const FusedParams& p, Line& ln) {
  const bool rows = p.transposed != (1u << p.K) - 1;
  const int nrow = rows ? p.cpb * p.H : 0;
  int t = threadIdx.x;
  ln.col = t >= nrow;
  if (ln.col) t -= nrow;
  const int per = ln.col ? p.W : p.H;
  ln.plane = t / per, ln.line = t - ln.plane * per;
  ln.b = blockIdx.x % p.batch, ln.d = (blockIdx.x / p.batch) * p.cpb + ln.plane;
  ln.n = ln.col ? p.H : p.W;
  ln.first = ln.col ? ln.line : static_cast<int64_t>(ln.line) * p.W;
  ln.step = ln.col ? p.W : 1;
  return ln.plane < p.cpb;
}

// The rank of this thread's line in route k's walk, and the slot of its map.
__device__ __forceinline__ int rank(const FusedParams& p, const Line& ln, int k) {
  return (p.reversed >> k) & 1 ? (ln.col ? p.W : p.H) - 1 - ln.line : ln.line;
}
__device__ __forceinline__ int slot(const FusedParams& p, const Line& ln, int k) {
  const int longest = p.H > p.W ? p.H : p.W;
  return (ln.plane * p.K + k) * longest + rank(p, ln, k);
}

// One route k over this thread's line, walked in the route's direction.  OUT false: returns
// the line's map (P, S).  OUT true: starts from h and writes (or, `add`, adds) C h [+ Dsum u]
// at each of the line's positions of `out` (element stride out_step).
template <typename T, int V, bool REV, bool COL, bool OUT>
__device__ __forceinline__ float2 walk_line(const FusedParams& p, const Line& ln, int k, float h,
                                            float* out, int out_step, bool add, float Dsum) {
  const int row = k * p.dim + ln.d;
  const float a2 = p.A[row] * kLog2e, bias = p.bias ? p.bias[row] : 0.f;
  const T* u = static_cast<const T*>(p.u) + ln.b * p.su_b + ln.d * p.su_d + ln.first;
  const T* dl = static_cast<const T*>(p.delta) + k * p.sd_k + ln.b * p.sd_b + ln.d * p.sd_d +
                ln.first;
  const int64_t g = ln.d / (p.dim / p.G);
  const int64_t bo = k * p.sB_k + ln.b * p.sB_b + g * p.sB_g + ln.first;
  const int64_t co = k * p.sC_k + ln.b * p.sC_b + g * p.sC_g + ln.first;
  float prod = 1.f;
  // Column lines take V steps at a time too (loads in flight), one element each, stride W.
  for (int c = 0; c < ln.n; c += V) {
    const int i0 = REV ? ln.n - V - c : c;  // this chunk's first element along the line
    float uv[V], dv[V], bv[V], cv[V];
    if constexpr (COL) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const int i = REV ? ln.n - 1 - c - j : c + j;
        const bool in = c + j < ln.n;
        const int64_t at = static_cast<int64_t>(in ? i : 0) * ln.step;
        uv[j] = in ? to_f(u[at]) : 0.f;
        dv[j] = in ? to_f(dl[at]) : 0.f;
        bv[j] = in ? load_w<T>(p.B, bo + at, p.bc_f32) : 0.f;
        if constexpr (OUT) cv[j] = in ? load_w<T>(p.C, co + at, p.bc_f32) : 0.f;
      }
    } else {  // whole aligned runs of V (the launch checks W % V == 0)
      load_run<V, REV>(uv, u + i0);
      load_run<V, REV>(dv, dl + i0);
      if (p.bc_f32) {
        load_run<V, REV>(bv, static_cast<const float*>(p.B) + bo + i0);
        if constexpr (OUT) load_run<V, REV>(cv, static_cast<const float*>(p.C) + co + i0);
      } else {
        load_run<V, REV>(bv, static_cast<const T*>(p.B) + bo + i0);
        if constexpr (OUT) load_run<V, REV>(cv, static_cast<const T*>(p.C) + co + i0);
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const bool in = !COL || c + j < ln.n;  // past the end: the identity step (dt = u = 0)
      const float raw = dv[j] + bias;
      const float dt = in ? (p.softplus ? softplus(raw) : raw) : 0.f;
      const float a = exp2_approx(dt * a2);
      h = fmaf(a, h, dt * uv[j] * bv[j]);
      if constexpr (OUT) {
        if (in) {
          const int i = REV ? ln.n - 1 - c - j : c + j;
          float& o = out[i * out_step];
          const float y = fmaf(Dsum, uv[j], cv[j] * h);
          o = add ? o + y : y;
        }
      } else {
        prod *= a;
      }
    }
  }
  return make_float2(prod, h);
}

template <typename T, int V, bool COL, bool OUT>
__device__ __forceinline__ float2 walk_route(const FusedParams& p, const Line& ln, int k, float h,
                                             float* out, int out_step, bool add, float Dsum) {
  return (p.reversed >> k) & 1
             ? walk_line<T, V, true, COL, OUT>(p, ln, k, h, out, out_step, add, Dsum)
             : walk_line<T, V, false, COL, OUT>(p, ln, k, h, out, out_step, add, Dsum);
}

// The maps of this thread's line for every route of its orientation, in the route's slots.
template <typename T, int V, bool COL>
__device__ __forceinline__ void line_maps(const FusedParams& p, const Line& ln, float2* maps) {
  for (int k = 0; k < p.K; ++k)
    if (((p.transposed >> k) & 1) == COL)
      maps[slot(p, ln, k)] = walk_route<T, V, COL, false>(p, ln, k, 0.f, nullptr, 0, false, 0.f);
}

// Every route of this thread's orientation from its entering state into the orientation's
// plane of outputs; sum_k D_k u goes with the orientation of route 0.
template <typename T, int V, bool COL>
__device__ __forceinline__ void line_outputs(const FusedParams& p, const Line& ln,
                                             const float2* maps, float* plane) {
  const auto mine = [&](int k) { return ((p.transposed >> k) & 1) == COL; };
  float Dsum = 0.f;
  if (p.D && mine(0))
    for (int k = 0; k < p.K; ++k) Dsum += p.D[k * p.dim + ln.d];
  const int pr = line_plane_row(p.W);
  float* out = plane + (COL ? ln.line : ln.line * pr);
  bool add = false;
  for (int k = 0; k < p.K; ++k) {
    if (!mine(k)) continue;
    const int at = slot(p, ln, k), first = at - rank(p, ln, k);
    float h = 0.f;
    for (int s = first; s < at; ++s) h = fmaf(maps[s].x, h, maps[s].y);
    walk_route<T, V, COL, true>(p, ln, k, h, out, COL ? pr : 1, add, add ? 0.f : Dsum);
    add = true;
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(kLineMaxThreads) line_fwd_kernel(const FusedParams p) {
  extern __shared__ float4 line_smem_[];
  const int pr = line_plane_row(p.W), plane_size = p.H * pr;
  float* rows = reinterpret_cast<float*>(line_smem_);  // [cpb][H][pr] per orientation
  float* cols = rows + p.cpb * plane_size;
  float2* maps = reinterpret_cast<float2*>(rows + line_maps_offset(p));
  const bool has_rows = p.transposed != (1u << p.K) - 1, has_cols = p.transposed != 0;
  Line ln;
  const bool active = line_of(p, ln);
  constexpr int kColRun = 4;  // column steps loaded together
  if (active && ln.col) line_maps<T, kColRun, true>(p, ln, maps);
  else if (active) line_maps<T, V, false>(p, ln, maps);
  __syncthreads();
  if (active && ln.col) line_outputs<T, kColRun, true>(p, ln, maps, cols + ln.plane * plane_size);
  else if (active) line_outputs<T, V, false>(p, ln, maps, rows + ln.plane * plane_size);
  __syncthreads();
  const int b = blockIdx.x % p.batch, d0 = (blockIdx.x / p.batch) * p.cpb;
  for (int i = threadIdx.x; i < p.cpb * p.L; i += blockDim.x) {
    const int c = i / p.L, pos = i - c * p.L, r = pos / p.W;
    const int at = c * plane_size + r * pr + pos - r * p.W;
    const float y = ((has_rows ? rows[at] : 0.f) + (has_cols ? cols[at] : 0.f)) * p.y_scale;
    const int64_t o = b * p.sy_b + (d0 + c) * p.sy_d + pos;
    if (p.y_f32) static_cast<float*>(p.y)[o] = y;
    else static_cast<T*>(p.y)[o] = from_f<T>(y);
  }
}

// p.vec: elements per row load, the widest that every row's alignment allows (ops.cpp).
template <typename T>
void launch_line_fwd(const FusedParams& p, cudaStream_t stream) {
  const size_t smem = line_smem_bytes(p);
  const int V = p.vec;
  auto kernel = line_fwd_kernel<T, 1>;
  if (V == 2) kernel = line_fwd_kernel<T, 2>;
  if (V == 4) kernel = line_fwd_kernel<T, 4>;
  if constexpr (sizeof(T) == 2) {
    if (V == 8) kernel = line_fwd_kernel<T, 8>;
  }
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  const int threads = (line_threads(p) + 31) / 32 * 32;
  kernel<<<p.batch * (p.dim / p.cpb), threads, smem, stream>>>(p);
}

}  // namespace ssops
