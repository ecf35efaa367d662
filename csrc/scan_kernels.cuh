// The selective-scan kernels of the cuda backend, forward and backward, for one route.
//
// A lane owns NS states of one channel over one segment of its steps (scan.h: the work split).
// The recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t runs sequentially in registers,
// K steps (a chunk) at a time: the chunk's u / delta / z / dy are read with 16-byte loads when
// the walk is contiguous, else element by element (column-major walks put neighbouring columns
// in neighbouring lanes, so those loads still coalesce).  Segments scanned side by side are
// joined by a warp scan over their aggregates: a segment maps an entering state h to
// exp(A * sum dt) h + h_local, where h_local is its end state from zero.
//
// The backward recomputes states instead of storing them.  The adjoint runs
// g_t = C_t dout_t + exp(dt_{t+1} A) g_{t+1}; a segment maps the adjoint entering it from the
// right, G, to exp(A * sum dt) G + rho, rho = sum_t (prod_{i<=t} dA_i) C_t dout_t, so the same
// warp scan (run right to left) joins segments.  Each lane keeps the local state at the start
// of each chunk of its segment in shared memory, then walks the chunks backwards, recomputing
// the chunk's K states in registers before stepping the adjoint through them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "scan.h"

namespace ssops {

constexpr unsigned kFull = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

// Steps per chunk: K x NS recomputed states stay in registers in the backward.

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }
// log(1 + e^x) with the fast intrinsics: absolute error ~1e-7, where dt matters (|x| small)
__device__ __forceinline__ float softplus(float x) {
  const float y = __logf(1.f + __expf(fminf(x, 20.f)));
  return x > 20.f ? x : y;  // a select, not a branch
}

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f(float v) { return v; }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f(float v) { return v; }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) {
  return __float2bfloat16_rn(v);
}

// B / C hold the input dtype or float32.
template <typename T>
__device__ __forceinline__ float load_w(const void* p, int64_t i, bool f32) {
  return f32 ? static_cast<const float*>(p)[i] : to_f(static_cast<const T*>(p)[i]);
}

// --------------------------------------------------------------------------- chunk I/O
// The widest load that K elements of T fill exactly.
template <int K, typename T>
struct Vec {
  static constexpr int bytes = K * sizeof(T);
  using type = std::conditional_t<bytes % 16 == 0, uint4,
                                  std::conditional_t<bytes % 8 == 0, uint2, T>>;
  static constexpr int count = bytes / sizeof(type);
};

// K elements of T as whole vectors, so that they stay in registers.
template <int K, typename T>
union Packed {
  typename Vec<K, T>::type vec[Vec<K, T>::count];
  T e[K];
};

// v[k] = element at position p0 + k*dp of the row at base (element stride sl), for k < n;
// 0 beyond.  A full chunk of a contiguous walk is one aligned block of K elements.
// contig: the launch's chunks are whole aligned blocks (ScanParams::contig), n is 0 or K.
template <int K, typename T>
__device__ __forceinline__ void load_chunk(float (&v)[K], const T* base, int64_t sl, int64_t p0,
                                           int64_t dp, int n, bool contig) {
  using V = typename Vec<K, T>::type;
  if (contig && n == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = 0.f;
    return;
  }
  if (contig || (n == K && sl == 1 && (dp == 1 || dp == -1))) {
    const T* lo = base + (dp == 1 ? p0 : p0 - (K - 1));
    if (contig || reinterpret_cast<uintptr_t>(lo) % sizeof(V) == 0) {
      Packed<K, T> raw;
#pragma unroll
      for (int i = 0; i < Vec<K, T>::count; ++i) raw.vec[i] = reinterpret_cast<const V*>(lo)[i];
      if (dp == 1) {
#pragma unroll
        for (int k = 0; k < K; ++k) v[k] = to_f(raw.e[k]);
      } else {
#pragma unroll
        for (int k = 0; k < K; ++k) v[k] = to_f(raw.e[K - 1 - k]);
      }
      return;
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = k < n ? to_f(base[(p0 + k * dp) * sl]) : 0.f;
}

template <int K, typename T>
__device__ __forceinline__ void store_chunk(const float (&v)[K], T* base, int64_t sl, int64_t p0,
                                            int64_t dp, int n, bool contig) {
  using V = typename Vec<K, T>::type;
  if (contig && n == 0) return;
  if (contig || (n == K && sl == 1 && (dp == 1 || dp == -1))) {
    T* lo = base + (dp == 1 ? p0 : p0 - (K - 1));
    if (contig || reinterpret_cast<uintptr_t>(lo) % sizeof(V) == 0) {
      Packed<K, T> raw;
      if (dp == 1) {
#pragma unroll
        for (int k = 0; k < K; ++k) raw.e[k] = from_f<T>(v[k]);
      } else {
#pragma unroll
        for (int k = 0; k < K; ++k) raw.e[K - 1 - k] = from_f<T>(v[k]);
      }
#pragma unroll
      for (int i = 0; i < Vec<K, T>::count; ++i) reinterpret_cast<V*>(lo)[i] = raw.vec[i];
      return;
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (k < n) base[(p0 + k * dp) * sl] = from_f<T>(v[k]);
}

// --------------------------------------------------------------------------- work split
struct Walk {
  int L, H, W;
  bool reverse, transpose;
  // memory position of step s; a column-major walk goes down column s / H
  __device__ __forceinline__ int64_t pos(int s) const {
    const int r = reverse ? L - 1 - s : s;
    return transpose ? static_cast<int64_t>(r % H) * W + r / H : r;
  }
  // position change per step inside a segment (segments of a column-major walk are columns)
  __device__ __forceinline__ int64_t dpos() const {
    const int64_t d = transpose ? W : 1;
    return reverse ? -d : d;
  }
};

// Position of step s of a route over an H x W grid (a (reversed,) row- or column-major walk),
// and the step at which the route reaches position p (its inverse).
__device__ __forceinline__ int route_pos(int s, int L, int H, int W, bool rev, bool tr) {
  const int r = rev ? L - 1 - s : s;
  return tr ? (r % H) * W + r / H : r;
}
__device__ __forceinline__ int route_step(int p, int L, int H, int W, bool rev, bool tr) {
  const int s = tr ? (p % W) * H + p / W : p;
  return rev ? L - 1 - s : s;
}

struct Lane {
  int sg, q, c;              // state lane, segment, channel within the warp
  int q_stride, c_stride;    // lane distance between neighbouring segments / channels
  int64_t flat;              // b * dim + d
  int b, d;
  bool valid;                // a real channel (the last warp may have spare lanes)
};

__device__ __forceinline__ Lane lane_of(const ScanParams& p) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  Lane ln;
  ln.sg = lane % p.lg;
  const int rest = lane / p.lg;
  if (p.c_fast) {
    ln.c = rest % p.cpw, ln.q = rest / p.cpw, ln.c_stride = p.lg, ln.q_stride = p.lg * p.cpw;
  } else {
    ln.q = rest % p.nseg, ln.c = rest / p.nseg, ln.q_stride = p.lg, ln.c_stride = p.lg * p.nseg;
  }
  ln.flat = warp * p.cpw + ln.c;
  ln.valid = ln.flat < static_cast<int64_t>(p.batch) * p.dim;
  const int64_t f = ln.valid ? ln.flat : 0;
  ln.b = static_cast<int>(f / p.dim), ln.d = static_cast<int>(f % p.dim);
  return ln;
}

// The per-lane constants: this lane's states of its channel, and its rows of every tensor.
template <int NS>
struct Channel {
  float A[NS], a2[NS];       // A and A * log2(e); 0 for states past N
  bool on[NS];               // state exists
  float Bc[NS], Cc[NS];      // constant B / C
  float D, bias;
  int64_t urow, drow, Brow, Crow, dBrow, dCrow;
};

template <typename T, int NS>
__device__ __forceinline__ Channel<NS> channel_of(const ScanParams& p, const Lane& ln) {
  Channel<NS> ch;
  ch.urow = ln.b * p.su_b + ln.d * p.su_d;
  ch.drow = ln.b * p.sd_b + ln.d * p.sd_d;
  ch.Brow = ln.b * p.sB_b + static_cast<int64_t>(ln.d / p.dpg_b) * p.sB_g;
  ch.Crow = ln.b * p.sC_b + static_cast<int64_t>(ln.d / p.dpg_c) * p.sC_g;
  // the warp's partial sum of a variable B / C's gradient (its channels share the group)
  ch.dBrow = ln.b * p.sdB_b + static_cast<int64_t>(ln.d / p.dpg_b) * p.sdB_g +
             static_cast<int64_t>(ln.d % p.dpg_b / p.cpw) * p.sdB_p;
  ch.dCrow = ln.b * p.sdC_b + static_cast<int64_t>(ln.d / p.dpg_c) * p.sdC_g +
             static_cast<int64_t>(ln.d % p.dpg_c / p.cpw) * p.sdC_p;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const int n = ln.sg * NS + j;
    ch.on[j] = ln.valid && n < p.N;
    ch.A[j] = ch.on[j] ? p.A[static_cast<int64_t>(ln.d) * p.N + n] : 0.f;
    ch.a2[j] = ch.A[j] * kLog2e;
    ch.Bc[j] = ch.on[j] && p.b_const ? load_w<T>(p.B, ch.Brow + n * p.sB_n, p.bc_f32) : 0.f;
    ch.Cc[j] = ch.on[j] && p.c_const ? load_w<T>(p.C, ch.Crow + n * p.sC_n, p.bc_f32) : 0.f;
  }
  ch.D = ln.valid && p.D ? p.D[ln.d] : 0.f;
  ch.bias = ln.valid && p.bias ? p.bias[ln.d] : 0.f;
  return ch;
}

// B or C of the lane's states over a chunk: v[j][k] for state j at step k (0 past n steps).
template <typename T, int NS, int K>
__device__ __forceinline__ void load_bc(float (&v)[NS][K], const ScanParams& p,
                                        const Channel<NS>& ch, bool is_b, int sg, int64_t p0,
                                        int64_t dp, int n) {
  const bool constant = is_b ? p.b_const : p.c_const;
  const void* base = is_b ? p.B : p.C;
  const int64_t sn = is_b ? p.sB_n : p.sC_n, sl = is_b ? p.sB_l : p.sC_l;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    if (constant || !ch.on[j]) {
      const float c = is_b ? ch.Bc[j] : ch.Cc[j];  // 0 for a missing state
#pragma unroll
      for (int k = 0; k < K; ++k) v[j][k] = k < n ? c : 0.f;
      continue;
    }
    const int64_t row = (is_b ? ch.Brow : ch.Crow) + (sg * NS + j) * sn;
    if (p.bc_f32)
      load_chunk<K>(v[j], static_cast<const float*>(base) + row, sl, p0, dp, n, p.contig);
    else
      load_chunk<K>(v[j], static_cast<const T*>(base) + row, sl, p0, dp, n, p.contig);
  }
}

// The lane's segment in segment group grp: steps [begin, end) (empty past L).
struct Segment {
  int begin, end;
};
__device__ __forceinline__ Segment segment_of(const ScanParams& p, const Lane& ln, int grp) {
  const int64_t b = (static_cast<int64_t>(grp) * p.nseg + ln.q) * p.seg_len;
  Segment s;
  s.begin = static_cast<int>(min(b, static_cast<int64_t>(p.L)));
  s.end = static_cast<int>(min(b + p.seg_len, static_cast<int64_t>(p.L)));
  return s;
}

// Valid steps of the chunk starting at s0 (0 for a spare lane).
__device__ __forceinline__ int steps_in(const Segment& sg, int s0, int K, bool valid) {
  return valid ? max(0, min(K, sg.end - s0)) : 0;
}

__device__ __forceinline__ float lane_sum(float v, int lg) {
  for (int o = 1; o < lg; o *= 2) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// Sum over the lanes of the other segments of the same channel and state lane.
__device__ __forceinline__ float segment_sum(float v, const Lane& ln, int nseg) {
  for (int o = 1; o < nseg; o *= 2) v += __shfl_xor_sync(kFull, v, o * ln.q_stride);
  return v;
}

// Warp scans over a channel's segments, each an affine map h -> 2^(a2 S) h + x.  Forward
// (inclusive / exclusive of the segments before): later maps apply after earlier ones.
template <int NS>
__device__ __forceinline__ void scan_segments(float& S, float (&x)[NS], const float (&a2)[NS],
                                              const Lane& ln, int nseg, bool exclusive) {
  for (int o = 1; o < nseg; o *= 2) {
    const float So = __shfl_up_sync(kFull, S, o * ln.q_stride);
    float xo[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) xo[j] = __shfl_up_sync(kFull, x[j], o * ln.q_stride);
    if (ln.q >= o) {
#pragma unroll
      for (int j = 0; j < NS; ++j) x[j] += exp2_approx(a2[j] * S) * xo[j];
      S += So;
    }
  }
  if (exclusive) {
    const float So = __shfl_up_sync(kFull, S, ln.q_stride);
    S = ln.q == 0 ? 0.f : So;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const float xo = __shfl_up_sync(kFull, x[j], ln.q_stride);
      x[j] = ln.q == 0 ? 0.f : xo;
    }
  }
}

// The same, right to left and exclusive (the adjoint enters a segment from the later ones).
template <int NS>
__device__ __forceinline__ void scan_segments_back(float& S, float (&x)[NS],
                                                   const float (&a2)[NS], const Lane& ln,
                                                   int nseg) {
  for (int o = 1; o < nseg; o *= 2) {
    const float So = __shfl_down_sync(kFull, S, o * ln.q_stride);
    float xo[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) xo[j] = __shfl_down_sync(kFull, x[j], o * ln.q_stride);
    if (ln.q + o < nseg) {
#pragma unroll
      for (int j = 0; j < NS; ++j) x[j] += exp2_approx(a2[j] * S) * xo[j];
      S += So;
    }
  }
  const float So = __shfl_down_sync(kFull, S, ln.q_stride);
  S = ln.q == nseg - 1 ? 0.f : So;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const float xo = __shfl_down_sync(kFull, x[j], ln.q_stride);
    x[j] = ln.q == nseg - 1 ? 0.f : xo;
  }
}

// Value of the lane holding segment q of this lane's channel and state lane.
__device__ __forceinline__ float from_segment(float v, const Lane& ln, int q) {
  return __shfl_sync(kFull, v, (threadIdx.x & 31) + (q - ln.q) * ln.q_stride);
}

// One chunk of the inputs every pass reads: u and dt (after bias and softplus; 0 past the end).
template <typename T, int K>
struct Chunk {
  int n;                     // valid steps
  int64_t p0, dp;            // position of the first step, change per step
  float u[K], dt[K], pre[K];
  template <int NS>
  __device__ __forceinline__ void load(const ScanParams& p, const Walk& w, const Segment& sg,
                                       const Lane& ln, const Channel<NS>& ch, int s0) {
    n = steps_in(sg, s0, K, ln.valid);
    p0 = n > 0 ? w.pos(s0) : 0;
    dp = w.dpos();
    load_chunk<K>(u, static_cast<const T*>(p.u) + ch.urow, p.su_l, p0, dp, n, p.contig);
    load_chunk<K>(pre, static_cast<const T*>(p.delta) + ch.drow, p.sd_l, p0, dp, n, p.contig);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      pre[k] += ch.bias;
      dt[k] = k < n ? (p.softplus ? softplus(pre[k]) : pre[k]) : 0.f;
    }
  }
};

// Gradient w.r.t. dy of the gated output: dout = dy * silu(z) (dy without z).
template <typename T, int K>
__device__ __forceinline__ void load_dout(const ScanParams& p, int64_t row, int64_t p0,
                                          int64_t dp, int n, float (&dy)[K], float (&z)[K],
                                          float (&dout)[K]) {
  if (p.dy_f32)
    load_chunk<K>(dy, static_cast<const float*>(p.dy) + row, p.su_l, p0, dp, n, p.contig);
  else
    load_chunk<K>(dy, static_cast<const T*>(p.dy) + row, p.su_l, p0, dp, n, p.contig);
  if (p.z) load_chunk<K>(z, static_cast<const T*>(p.z) + row, p.su_l, p0, dp, n, p.contig);
#pragma unroll
  for (int k = 0; k < K; ++k) dout[k] = p.z ? dy[k] * z[k] * sigmoid(z[k]) : dy[k];
}

// --------------------------------------------------------------------------- forward
// Everything the forward reads for one chunk.
template <typename T, int NS, int K>
struct FwdChunk {
  Chunk<T, K> x;
  float B[NS][K], C[NS][K], z[K], y_in[K];
  __device__ __forceinline__ void load(const ScanParams& p, const Walk& w, const Segment& sg,
                                       const Lane& ln, const Channel<NS>& ch, int s0) {
    x.load(p, w, sg, ln, ch, s0);
    load_bc<T>(B, p, ch, true, ln.sg, x.p0, x.dp, x.n);
    load_bc<T>(C, p, ch, false, ln.sg, x.p0, x.dp, x.n);
    const bool out = ln.sg == 0;  // the lane that writes y
    load_chunk<K>(z, static_cast<const T*>(p.z) + ch.urow, p.su_l, x.p0, x.dp,
                  out && p.z ? x.n : 0, p.contig);
    load_chunk<K>(y_in, p.y_in + ch.urow, p.su_l, x.p0, x.dp, out && p.y_in ? x.n : 0, p.contig);
  }
};

// The local aggregate of the lane's segment: (sum dt, end state from zero).
template <typename T, int NS, int K>
__device__ __forceinline__ void aggregate(const ScanParams& p, const Walk& w, const Lane& ln,
                                          const Channel<NS>& ch, const Segment& sg, int nch,
                                          float& S, float (&h)[NS]) {
  S = 0.f;
#pragma unroll
  for (int j = 0; j < NS; ++j) h[j] = 0.f;
  for (int ci = 0; ci < nch; ++ci) {
    Chunk<T, K> c;
    c.load(p, w, sg, ln, ch, sg.begin + ci * K);
    float Bk[NS][K];
    load_bc<T>(Bk, p, ch, true, ln.sg, c.p0, c.dp, c.n);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float dtu = c.dt[k] * c.u[k];
#pragma unroll
      for (int j = 0; j < NS; ++j) h[j] = exp2_approx(c.dt[k] * ch.a2[j]) * h[j] + dtu * Bk[j][k];
      S += c.dt[k];
    }
  }
}

// Steps the states through one chunk and writes its y.
template <typename T, int NS, int K>
__device__ __forceinline__ void fwd_chunk(const ScanParams& p, const Lane& ln,
                                          const Channel<NS>& ch, const FwdChunk<T, NS, K>& c,
                                          float (&h)[NS]) {
  float y[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float dtu = c.x.dt[k] * c.x.u[k];
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      h[j] = exp2_approx(c.x.dt[k] * ch.a2[j]) * h[j] + dtu * c.B[j][k];
      acc += c.C[j][k] * h[j];
    }
    y[k] = acc;
  }
  if (p.lg > 1) {
#pragma unroll
    for (int k = 0; k < K; ++k) y[k] = lane_sum(y[k], p.lg);
  }
  if (ln.sg != 0 || c.x.n == 0) return;
#pragma unroll
  for (int k = 0; k < K; ++k) y[k] = (y[k] + ch.D * c.x.u[k] + c.y_in[k]) * p.y_scale;
  if (p.z) {
#pragma unroll
    for (int k = 0; k < K; ++k) y[k] *= c.z[k] * sigmoid(c.z[k]);
  }
  if (p.out_f32)
    store_chunk<K>(y, static_cast<float*>(p.y) + ch.urow, p.su_l, c.x.p0, c.x.dp, c.x.n, p.contig);
  else
    store_chunk<K>(y, static_cast<T*>(p.y) + ch.urow, p.su_l, c.x.p0, c.x.dp, c.x.n, p.contig);
}

template <typename T, int NS>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) scan_fwd_kernel(const ScanParams p) {
  constexpr int K = chunk_steps(NS);
  const Lane ln = lane_of(p);
  const Walk w{p.L, p.H, p.W, p.reverse, p.transpose};
  const Channel<NS> ch = channel_of<T, NS>(p, ln);
  const int nch = (p.seg_len + K - 1) / K;  // the same for every lane: shuffles stay converged
  float carry[NS];                           // state entering the segment group
#pragma unroll
  for (int j = 0; j < NS; ++j) carry[j] = 0.f;

  for (int grp = 0; grp < p.ngroups; ++grp) {
    const Segment sg = segment_of(p, ln, grp);
    float h[NS];
    if (nch == 1) {
      // Segments of one chunk (the warp scans 32 / lg consecutive chunks side by side, the
      // usual split of a row-major walk): load it once, join the segments, then step through.
      FwdChunk<T, NS, K> c;
      c.load(p, w, sg, ln, ch, sg.begin);
      float S = 0.f, x[NS];
#pragma unroll
      for (int j = 0; j < NS; ++j) x[j] = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const float dtu = c.x.dt[k] * c.x.u[k];
#pragma unroll
        for (int j = 0; j < NS; ++j)
          x[j] = exp2_approx(c.x.dt[k] * ch.a2[j]) * x[j] + dtu * c.B[j][k];
        S += c.x.dt[k];
      }
      scan_segments<NS>(S, x, ch.a2, ln, p.nseg, true);
#pragma unroll
      for (int j = 0; j < NS; ++j) h[j] = exp2_approx(ch.a2[j] * S) * carry[j] + x[j];
      fwd_chunk<T>(p, ln, ch, c, h);
    } else {
      if (p.nseg > 1) {  // the state entering this lane's segment, from the segments before it
        float S, x[NS];
        aggregate<T, NS, K>(p, w, ln, ch, sg, nch, S, x);
        scan_segments<NS>(S, x, ch.a2, ln, p.nseg, true);
#pragma unroll
        for (int j = 0; j < NS; ++j) h[j] = exp2_approx(ch.a2[j] * S) * carry[j] + x[j];
      } else {
#pragma unroll
        for (int j = 0; j < NS; ++j) h[j] = carry[j];
      }
      for (int ci = 0; ci < nch; ++ci) {
        FwdChunk<T, NS, K> c;
        c.load(p, w, sg, ln, ch, sg.begin + ci * K);
        fwd_chunk<T>(p, ln, ch, c, h);
      }
    }
#pragma unroll
    for (int j = 0; j < NS; ++j) carry[j] = from_segment(h[j], ln, p.nseg - 1);
  }
  if (ln.q == 0) {
#pragma unroll
    for (int j = 0; j < NS; ++j)
      if (ch.on[j]) p.last[ln.flat * p.N + ln.sg * NS + j] = carry[j];
  }
}

// --------------------------------------------------------------------------- backward
// Everything the backward reads for one chunk.
template <typename T, int NS, int K>
struct BwdChunk {
  Chunk<T, K> x;
  float dy[K], z[K], dout[K], B[NS][K], C[NS][K];
  __device__ __forceinline__ void load(const ScanParams& p, const Walk& w, const Segment& sg,
                                       const Lane& ln, const Channel<NS>& ch, int s0) {
    x.load(p, w, sg, ln, ch, s0);
    load_dout<T, K>(p, ch.urow, x.p0, x.dp, x.n, dy, z, dout);
    load_bc<T>(B, p, ch, true, ln.sg, x.p0, x.dp, x.n);
    load_bc<T>(C, p, ch, false, ln.sg, x.p0, x.dp, x.n);
  }
};

// A per-(channel, step) gradient of a variable B or C, summed over the warp's channels (one
// group: the work split makes cpw divide it) and stored as the warp's partial sum.
__device__ __forceinline__ void store_bc_partial(float v, float* at, bool on, const Lane& ln,
                                                 int cpw) {
  for (int o = 1; o < cpw; o *= 2) v += __shfl_xor_sync(kFull, v, o * ln.c_stride);
  if (ln.c == 0 && on) *at = v;
}

template <typename T, int NS>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) scan_bwd_kernel(const ScanParams p) {
  constexpr int K = chunk_steps(NS);
  extern __shared__ float checkpoints[];  // [chunk][NS states + sum dt][thread]
  const Lane ln = lane_of(p);
  const Walk w{p.L, p.H, p.W, p.reverse, p.transpose};
  const Channel<NS> ch = channel_of<T, NS>(p, ln);
  const int nch = (p.seg_len + K - 1) / K;
  auto ckpt = [&](int ci, int j) -> float& {
    return checkpoints[(ci * (NS + 1) + j) * blockDim.x + threadIdx.x];
  };
  auto group_state = [&](int grp, int j) -> float& {
    return p.group_states[(ln.flat * p.ngroups + grp) * p.N + ln.sg * NS + j];
  };

  // Pass A: the state entering each segment group (forward, aggregates only).
  if (p.ngroups > 1) {
    float carry[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) carry[j] = 0.f;
    for (int grp = 0; grp < p.ngroups; ++grp) {
      if (ln.q == 0) {
#pragma unroll
        for (int j = 0; j < NS; ++j)
          if (ch.on[j]) group_state(grp, j) = carry[j];
      }
      if (grp == p.ngroups - 1) break;
      float S, x[NS];
      aggregate<T, NS, K>(p, w, ln, ch, segment_of(p, ln, grp), nch, S, x);
      scan_segments<NS>(S, x, ch.a2, ln, p.nseg, false);
#pragma unroll
      for (int j = 0; j < NS; ++j)
        carry[j] = from_segment(exp2_approx(ch.a2[j] * S) * carry[j] + x[j], ln, p.nseg - 1);
    }
    __syncwarp();
  }

  // Pass B: segment groups from last to first.
  float G[NS];  // adjoint entering from the right, times the decay of the step it leaves
  float dA_acc[NS], dB_acc[NS], dC_acc[NS];
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    G[j] = p.dlast && ch.on[j] ? p.dlast[ln.flat * p.N + ln.sg * NS + j] : 0.f;
    dA_acc[j] = dB_acc[j] = dC_acc[j] = 0.f;
  }
  float dD_acc = 0.f, dbias_acc = 0.f;

  for (int grp = p.ngroups - 1; grp >= 0; --grp) {
    const Segment sg = segment_of(p, ln, grp);
    float h_in[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) h_in[j] = p.ngroups > 1 && ch.on[j] ? group_state(grp, j) : 0.f;

    // 1. local forward aggregates and adjoint aggregate of the segment; chunk checkpoints
    float S = 0.f, hl[NS], rho[NS], P[NS];
#pragma unroll
    for (int j = 0; j < NS; ++j) hl[j] = rho[j] = 0.f, P[j] = 1.f;
    for (int ci = 0; ci < nch; ++ci) {
#pragma unroll
      for (int j = 0; j < NS; ++j) ckpt(ci, j) = hl[j];
      ckpt(ci, NS) = S;
      BwdChunk<T, NS, K> c;
      c.load(p, w, sg, ln, ch, sg.begin + ci * K);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const float dtu = c.x.dt[k] * c.x.u[k];
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          const float dA = exp2_approx(c.x.dt[k] * ch.a2[j]);
          hl[j] = dA * hl[j] + dtu * c.B[j][k];
          P[j] *= dA;
          rho[j] += P[j] * c.C[j][k] * c.dout[k];
        }
        S += c.x.dt[k];
      }
    }
    // 2. join the segments: state entering each one, adjoint entering each one from the right
    float Sf = S, Sb = S;
    scan_segments<NS>(Sf, hl, ch.a2, ln, p.nseg, true);
    scan_segments_back<NS>(Sb, rho, ch.a2, ln, p.nseg);
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      h_in[j] = exp2_approx(ch.a2[j] * Sf) * h_in[j] + hl[j];
      G[j] = exp2_approx(ch.a2[j] * Sb) * G[j] + rho[j];
    }
    // 3. chunks from last to first: recompute the K states, step the adjoint back through them
    for (int ci = nch - 1; ci >= 0; --ci) {
      BwdChunk<T, NS, K> c;
      c.load(p, w, sg, ln, ch, sg.begin + ci * K);
      float h0[NS], hs[K][NS];
      const float S0 = ckpt(ci, NS);
#pragma unroll
      for (int j = 0; j < NS; ++j) h0[j] = ckpt(ci, j) + exp2_approx(ch.a2[j] * S0) * h_in[j];
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const float dtu = c.x.dt[k] * c.x.u[k];
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          const float prev = k == 0 ? h0[j] : hs[k - 1][j];
          hs[k][j] = exp2_approx(c.x.dt[k] * ch.a2[j]) * prev + dtu * c.B[j][k];
        }
      }
      float du[K], ddt[K], y[K];
#pragma unroll
      for (int k = K - 1; k >= 0; --k) {
        const int64_t pos = c.x.p0 + k * c.x.dp;
        const bool on = k < c.x.n;
        float gB = 0.f, dlogA = 0.f, yk = 0.f;
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          const float Bv = c.B[j][k], Cv = c.C[j][k];
          const float dA = exp2_approx(c.x.dt[k] * ch.a2[j]);
          const float g = G[j] + Cv * c.dout[k];
          const float dlog = g * dA * (k == 0 ? h0[j] : hs[k - 1][j]);  // d/d(dt A)
          gB += g * Bv;
          dlogA += dlog * ch.A[j];
          yk += Cv * hs[k][j];
          dA_acc[j] += dlog * c.x.dt[k];
          const float dBv = g * c.x.dt[k] * c.x.u[k], dCv = c.dout[k] * hs[k][j];
          const int64_t n = ln.sg * NS + j;
          if (p.b_const) dB_acc[j] += dBv;
          else store_bc_partial(dBv, p.dB + ch.dBrow + n * p.sdB_n + pos * p.sdB_l,
                                on && ch.on[j], ln, p.cpw);
          if (p.c_const) dC_acc[j] += dCv;
          else store_bc_partial(dCv, p.dC + ch.dCrow + n * p.sdC_n + pos * p.sdC_l,
                                on && ch.on[j], ln, p.cpw);
          G[j] = dA * g;
        }
        du[k] = gB * c.x.dt[k];
        ddt[k] = gB * c.x.u[k] + dlogA;
        y[k] = yk;
      }
      if (p.lg > 1) {
#pragma unroll
        for (int k = 0; k < K; ++k) {
          du[k] = lane_sum(du[k], p.lg);
          ddt[k] = lane_sum(ddt[k], p.lg);
          if (p.z) y[k] = lane_sum(y[k], p.lg);
        }
      }
      if (ln.sg == 0 && c.x.n > 0) {
        const int64_t row = ch.urow;
        float extra[K];
        if (p.du_in) load_chunk<K>(extra, p.du_in + row, p.su_l, c.x.p0, c.x.dp, c.x.n, p.contig);
#pragma unroll
        for (int k = 0; k < K; ++k) {
          du[k] += ch.D * c.dout[k] + (p.du_in ? extra[k] : 0.f);
          if (p.softplus) ddt[k] *= sigmoid(c.x.pre[k]);
          if (k < c.x.n) dbias_acc += ddt[k], dD_acc += c.dout[k] * c.x.u[k];
        }
        if (p.du_f32)
          store_chunk<K>(du, static_cast<float*>(p.du) + row, p.su_l, c.x.p0, c.x.dp, c.x.n,
                         p.contig);
        else
          store_chunk<K>(du, static_cast<T*>(p.du) + row, p.su_l, c.x.p0, c.x.dp, c.x.n, p.contig);
        store_chunk<K>(ddt, static_cast<T*>(p.ddelta) + ch.drow, p.sd_l, c.x.p0, c.x.dp, c.x.n,
                       p.contig);
        if (p.z) {
#pragma unroll
          for (int k = 0; k < K; ++k) {
            const float s = sigmoid(c.z[k]);
            y[k] = c.dy[k] * (y[k] + ch.D * c.x.u[k]) * s * (1.f + c.z[k] * (1.f - s));
          }
          store_chunk<K>(y, static_cast<T*>(p.dz) + row, p.su_l, c.x.p0, c.x.dp, c.x.n, p.contig);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < NS; ++j) G[j] = from_segment(G[j], ln, 0);
  }

  // Parameter gradients: summed over the channel's segments, then added over the batch.
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const int64_t at = static_cast<int64_t>(ln.d) * p.N + ln.sg * NS + j;
    const float a = segment_sum(dA_acc[j], ln, p.nseg);
    const float b = p.b_const ? segment_sum(dB_acc[j], ln, p.nseg) : 0.f;
    const float c = p.c_const ? segment_sum(dC_acc[j], ln, p.nseg) : 0.f;
    if (ln.q == 0 && ch.on[j]) {
      atomicAdd(p.dA + at, a);
      if (p.b_const) atomicAdd(p.dB + at, b);
      if (p.c_const) atomicAdd(p.dC + at, c);
    }
  }
  dD_acc = segment_sum(dD_acc, ln, p.nseg);
  dbias_acc = segment_sum(dbias_acc, ln, p.nseg);
  if (ln.q == 0 && ln.sg == 0 && ln.valid) {
    if (p.dD) atomicAdd(p.dD + ln.d, dD_acc);
    if (p.dbias) atomicAdd(p.dbias + ln.d, dbias_acc);
  }
}

}  // namespace ssops

#include "lane_scan.cuh"

namespace ssops {

template <typename T, int NS>
void launch_scan_ns(const ScanParams& p, bool backward, cudaStream_t stream) {
  const int64_t warps = (static_cast<int64_t>(p.batch) * p.dim + p.cpw - 1) / p.cpw;
  const dim3 grid(static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock));
  const dim3 block(kWarpsPerBlock * 32);
  if (!backward) {
    scan_fwd_kernel<T, NS><<<grid, block, 0, stream>>>(p);
    return;
  }
  const size_t smem = bwd_smem_bytes(NS, p.seg_len);
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(scan_bwd_kernel<T, NS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  scan_bwd_kernel<T, NS><<<grid, block, smem, stream>>>(p);
}

template <typename T>
void launch_scan_typed(const ScanParams& p, int ns, bool backward, cudaStream_t stream) {
  switch (ns) {
    case 0: return launch_lane_scan<T>(p, backward, stream);
    case 1: return launch_scan_ns<T, 1>(p, backward, stream);
    case 4: return launch_scan_ns<T, 4>(p, backward, stream);
    default: return launch_scan_ns<T, 16>(p, backward, stream);
  }
}

}  // namespace ssops
