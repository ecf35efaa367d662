// Fused multi-route scans: one block scans every route of whole sequences held in shared memory.
//
// bidirectional_scan (2 routes) and the SS2D core (4 routes over an H x W grid) read each
// sequence's inputs once, in position order (coalesced, several loads in flight per thread),
// into shared memory, stored in the order the routes walk them (scan.h fused_smem_bytes); the
// routes' outputs are summed in shared memory and y is written once.  Within a route, a
// channel's steps are cut among its 32 * wpc threads, ITEMS consecutive steps each: a thread
// runs its steps sequentially in registers, and the threads are joined by a block scan of
// their aggregates (h -> p h + s), one state at a time.  The backward recomputes each route's
// states the same way, then steps the adjoint g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1} right
// to left with the mirrored scan.  B / C's gradients are summed over the block's channels in
// shared memory and added to global memory once per block and route.
#pragma once

#include "line_scan.cuh"
#include "scan_kernels.cuh"

namespace ssops {

// Experiment knobs (SSOPS_NVCC_FLAGS="-DSSOPS_FUSED_VEC=0 ..."; bench/NOTES.md): vector loads
// when staging, the forward's minimum blocks per SM (2 caps it at 64 registers), scalar loads
// in flight per thread.
#ifndef SSOPS_FUSED_VEC
#define SSOPS_FUSED_VEC 1
#endif
#ifndef SSOPS_FUSED_FWD_MINB
#define SSOPS_FUSED_FWD_MINB 1
#endif
#ifndef SSOPS_FUSED_INFLIGHT
#define SSOPS_FUSED_INFLIGHT 8
#endif

constexpr int kFusedMaxThreads = 512;  // per block: at most 128 registers per thread
constexpr int kFusedMaxBwdItems = 8;   // steps per thread in the backward (16 spill)
constexpr int kInFlight = SSOPS_FUSED_INFLIGHT;  // global loads issued before their stores

struct Agg {  // a run of steps maps the state entering it, h, to p * h + s
  float p, s;
};

// The value entering this thread's run, for the threads tc = 0 .. 32 * wpc - 1 of a channel in
// order (REV: right to left).  slots: this channel's wpc per-warp aggregates, a buffer not in use
// by the previous call; every thread of the block calls this (it syncs when wpc > 1).
template <bool REV>
__device__ __forceinline__ float entering(Agg a, float2* slots, int wpc, int tc) {
  const int lane = tc & 31, w = tc >> 5;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {  // inclusive scan of the warp's runs
    const float p = REV ? __shfl_down_sync(kFull, a.p, off) : __shfl_up_sync(kFull, a.p, off);
    const float s = REV ? __shfl_down_sync(kFull, a.s, off) : __shfl_up_sync(kFull, a.s, off);
    if (REV ? lane + off < 32 : lane >= off) a.s = fmaf(a.p, s, a.s), a.p *= p;
  }
  float pe = REV ? __shfl_down_sync(kFull, a.p, 1) : __shfl_up_sync(kFull, a.p, 1);
  float se = REV ? __shfl_down_sync(kFull, a.s, 1) : __shfl_up_sync(kFull, a.s, 1);
  if (lane == (REV ? 31 : 0)) pe = 1.f, se = 0.f;
  float h = 0.f;  // entering this warp
  if (wpc > 1) {
    if (lane == (REV ? 0 : 31)) slots[w] = make_float2(a.p, a.s);
    __syncthreads();
    if (REV) {
      for (int j = wpc - 1; j > w; --j) h = fmaf(slots[j].x, h, slots[j].y);
    } else {
      for (int j = 0; j < w; ++j) h = fmaf(slots[j].x, h, slots[j].y);
    }
  }
  return fmaf(pe, h, se);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
  return v;
}

// This thread's place: channel slot cl of the block (channel d of batch b, B / C group g),
// thread tc of the channel's 32 * wpc.
struct Seat {
  int cl, tc, b, d0, d, g;
  __device__ explicit Seat(const FusedParams& p) {
    const int per_channel = 32 * p.wpc;
    cl = threadIdx.x / per_channel, tc = threadIdx.x % per_channel;
    b = blockIdx.x % p.batch;  // batch fastest: blocks running together add to different dB rows
    d0 = (blockIdx.x / p.batch) * p.cpb, d = d0 + cl;
    g = d0 / (p.dim / p.G);
  }
};

// Storage index of step s of a row: one padding word per 32 (conflict-free strided reads).
__device__ __forceinline__ int pad(int s) { return s + (s >> 5); }

// Storage index of grid position pos in order o (0: row-major, 1: column-major).
__device__ __forceinline__ int stored_at(const FusedParams& p, int pos, int o) {
  return pad(route_step(pos, p.L, p.H, p.W, false, o));
}

// Shared memory (scan.h fused_smem_bytes).  Per-channel arrays are [copy][cpb][row]: copy o
// in storage order o (a second copy only where some route walks columns); a route's own inputs
// are in its slot ([ks][cpb][row] or [ks][N][row]), in its order.
template <typename T>
struct Smem {
  int row, copies, cpb, ks, N;
  bool wide;                               // vector loads when staging (the forward)
  float2* slots;                           // [2][cpb][wpc]
  float *y, *du, *B, *C, *dB, *dC, *sums;  // backward: y holds g = dL/dy; dB, dC: [N][row]
  T *u, *delta;
  __device__ Smem(const FusedParams& p, bool backward) {
    extern __shared__ float4 smem_[];
    row = fused_row(p.L), copies = p.transposed ? 2 : 1, cpb = p.cpb, N = p.N;
    ks = p.preload ? p.K : 1, wide = !backward;
    const int cr = copies * cpb * row, nr = p.N * row, kr = ks * cpb * row;
    slots = reinterpret_cast<float2*>(smem_);
    y = reinterpret_cast<float*>(slots + 2 * cpb * p.wpc);
    du = backward ? y + cr : nullptr;
    B = backward ? du + cr : y + cr;
    C = B + ks * nr;
    dB = backward ? C + ks * nr : nullptr;
    dC = backward ? dB + nr : nullptr;
    sums = backward ? dC + nr : nullptr;
    u = reinterpret_cast<T*>(backward ? sums + cpb * (p.N + 2) : C + ks * nr);
    delta = u + (p.su_k ? kr : cr);
  }
  template <typename V>
  __device__ V* rows(V* base, int o, int c) const { return base + (o * cpb + c) * row; }
  __device__ int slot(int k) const { return ks > 1 ? k : 0; }
  __device__ T* delta_of(int k, int c) const { return rows(delta, slot(k), c); }
  __device__ float* B_of(int k) const { return B + slot(k) * N * row; }
  __device__ float* C_of(int k) const { return C + slot(k) * N * row; }
  // route k's u: its own (slot) or the shared x in the route's order o
  __device__ T* u_of(const FusedParams& p, int k, int o, int c) const {
    return rows(u, p.su_k ? slot(k) : o, c);
  }
};

// rows x L elements of global memory (row r at src + r * src_row) into shared memory (row r at
// dst + r * dst_row) in storage order o of an H x W grid: V elements per load, IN loads per
// thread in flight before their stores.  V > 1 is not inlined (its registers would spill in the
// backward, which loads element by element); hence its arguments by value.
template <int V, typename S, typename D>
__device__ __noinline__ void stage_vec(D* dst, int dst_row, const S* __restrict__ src,
                                       int64_t src_row, int rows, int o, int L, int H, int W) {
  using Vec = std::conditional_t<V * sizeof(S) == 16, uint4,
                                 std::conditional_t<V * sizeof(S) == 8, uint2, S>>;
  constexpr int IN = V == 1 ? kInFlight : V >= 8 ? 1 : 8 / V;  // >= 16 bytes in flight
  union Lanes {
    Vec vec;
    S e[V];
  };
  const int per_row = L / V, total = rows * per_row;
  for (int base = threadIdx.x; base < total; base += IN * blockDim.x) {
    Lanes v[IN];
#pragma unroll
    for (int j = 0; j < IN; ++j) {
      const int i = base + j * blockDim.x, r = i / per_row;
      if (i < total) v[j].vec = reinterpret_cast<const Vec*>(src + r * src_row)[i - r * per_row];
    }
#pragma unroll
    for (int j = 0; j < IN; ++j) {
      const int i = base + j * blockDim.x, r = i / per_row;
      if (i >= total) continue;
      const int pos = (i - r * per_row) * V;
      int gi = o ? pos / W : 0, gj = pos - gi * W;  // grid row and column (order 1)
      D* out = dst + r * dst_row;
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const int at = pad(o ? gj * H + gi : pos + q);
        if constexpr (std::is_same_v<S, D>) out[at] = v[j].e[q];
        else out[at] = to_f(v[j].e[q]);
        if (o && ++gj == W) gj = 0, ++gi;
      }
    }
  }
}

template <typename S, typename D>
__device__ __forceinline__ void stage_elems(const FusedParams& p, D* dst, int dst_row,
                                            const S* __restrict__ src, int64_t src_row, int rows,
                                            int o) {
  const int total = rows * p.L;
  for (int base = threadIdx.x; base < total; base += kInFlight * blockDim.x) {
    S v[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const int i = base + j * blockDim.x, r = i / p.L;
      if (i < total) v[j] = src[r * src_row + i - r * p.L];
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const int i = base + j * blockDim.x, r = i / p.L;
      if (i >= total) continue;
      const int at = stored_at(p, i - r * p.L, o);
      if constexpr (std::is_same_v<S, D>) dst[r * dst_row + at] = v[j];
      else dst[r * dst_row + at] = to_f(v[j]);
    }
  }
}

// Staging with the widest loads (16, 8 bytes) the rows' alignment allows where `wide` (the
// forward), else element by element.
template <typename S, typename D>
__device__ void stage(const FusedParams& p, D* dst, int dst_row, const S* src, int64_t src_row,
                      int rows, int o, bool wide) {
  const auto fits = [&](int bytes) {
    const int v = bytes / static_cast<int>(sizeof(S));
    return SSOPS_FUSED_VEC && wide && p.L % v == 0 &&
           (rows == 1 || src_row * sizeof(S) % bytes == 0) &&
           reinterpret_cast<uintptr_t>(src) % bytes == 0;
  };
  if (fits(16)) stage_vec<16 / sizeof(S)>(dst, dst_row, src, src_row, rows, o, p.L, p.H, p.W);
  else if (fits(8)) stage_vec<8 / sizeof(S)>(dst, dst_row, src, src_row, rows, o, p.L, p.H, p.W);
  else stage_elems(p, dst, dst_row, src, src_row, rows, o);
}

// The block's channels of a per-channel input of route k (u, delta) into rows dst, order o.
template <typename T>
__device__ void stage_channels(const FusedParams& p, const Seat& s, T* dst, int row,
                               const void* src, int64_t s_k, int64_t s_b, int64_t s_d, int k,
                               int o, bool wide) {
  stage(p, dst, row, static_cast<const T*>(src) + k * s_k + s.b * s_b + s.d0 * s_d, s_d, p.cpb, o,
        wide);
}

template <typename T>
__device__ void load_shared_u(const FusedParams& p, const Smem<T>& sm, const Seat& s) {
  for (int o = 0; o < sm.copies; ++o)
    stage_channels(p, s, sm.rows(sm.u, o, 0), sm.row, p.u, 0, p.su_b, p.su_d, 0, o, sm.wide);
}

// Route k's B and C (the input dtype or float32) into its slot, in its order.
template <typename T>
__device__ void stage_bc(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k) {
  const int o = (p.transposed >> k) & 1;
  const int64_t ob = k * p.sB_k + s.b * p.sB_b + s.g * p.sB_g;
  const int64_t oc = k * p.sC_k + s.b * p.sC_b + s.g * p.sC_g;
  if (p.bc_f32) {
    stage(p, sm.B_of(k), sm.row, static_cast<const float*>(p.B) + ob, p.sB_n, p.N, o, sm.wide);
    stage(p, sm.C_of(k), sm.row, static_cast<const float*>(p.C) + oc, p.sC_n, p.N, o, sm.wide);
  } else {
    stage(p, sm.B_of(k), sm.row, static_cast<const T*>(p.B) + ob, p.sB_n, p.N, o, sm.wide);
    stage(p, sm.C_of(k), sm.row, static_cast<const T*>(p.C) + oc, p.sC_n, p.N, o, sm.wide);
  }
}

// Everything route k reads (with its own u, if the routes have their own), in its order.
template <typename T>
__device__ void load_route(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k) {
  const int o = (p.transposed >> k) & 1;
  stage_channels(p, s, sm.delta_of(k, 0), sm.row, p.delta, p.sd_k, p.sd_b, p.sd_d, k, o, sm.wide);
  if (p.su_k)
    stage_channels(p, s, sm.u_of(p, k, o, 0), sm.row, p.u, p.su_k, p.su_b, p.su_d, k, o, sm.wide);
  stage_bc(p, sm, s, k);
}

// Every route's own inputs up front in one batched pass (short sequences, p.preload): route k's
// rows are delta (cpb), its own u (cpb, if any), then B and C (N each, unless float32: staged
// apart), kInFlight loads per thread before their stores.
template <typename T>
__device__ void load_all_routes(const FusedParams& p, const Smem<T>& sm, const Seat& s) {
  const int own_u = p.su_k ? p.cpb : 0, nbc = p.bc_f32 ? 0 : 2 * p.N;
  const int per = p.cpb + own_u + nbc, total = p.K * per * p.L;
  const auto where = [&](int i, int& k, int& q, int& l) {
    const int r = i / p.L;
    l = i - r * p.L, k = r / per, q = r - k * per;
  };
  const auto source = [&](int k, int q) {  // row q of route k in global memory
    if (q < p.cpb)
      return static_cast<const T*>(p.delta) + k * p.sd_k + s.b * p.sd_b + (s.d0 + q) * p.sd_d;
    if ((q -= p.cpb) < own_u)
      return static_cast<const T*>(p.u) + k * p.su_k + s.b * p.su_b + (s.d0 + q) * p.su_d;
    if ((q -= own_u) < p.N)
      return static_cast<const T*>(p.B) + k * p.sB_k + s.b * p.sB_b + s.g * p.sB_g + q * p.sB_n;
    q -= p.N;
    return static_cast<const T*>(p.C) + k * p.sC_k + s.b * p.sC_b + s.g * p.sC_g + q * p.sC_n;
  };
  for (int base = threadIdx.x; base < total; base += kInFlight * blockDim.x) {
    T v[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const int i = base + j * blockDim.x;
      if (i >= total) continue;
      int k, q, l;
      where(i, k, q, l);
      v[j] = source(k, q)[l];
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const int i = base + j * blockDim.x;
      if (i >= total) continue;
      int k, q, l;
      where(i, k, q, l);
      const int at = stored_at(p, l, (p.transposed >> k) & 1);
      if (q < p.cpb) {
        sm.delta_of(k, q)[at] = v[j];
      } else if ((q -= p.cpb) < own_u) {
        sm.u_of(p, k, 0, q)[at] = v[j];
      } else if ((q -= own_u) < p.N) {
        sm.B_of(k)[q * sm.row + at] = to_f(v[j]);
      } else {
        sm.C_of(k)[(q - p.N) * sm.row + at] = to_f(v[j]);
      }
    }
  }
  if (p.bc_f32)
    for (int k = 0; k < p.K; ++k) stage_bc(p, sm, s, k);
}

// A thread's ITEMS steps of route k: dt and u (zero dt and u past the end: the identity step)
// and their storage indices.
template <typename T, int ITEMS>
struct Steps {
  float dt[ITEMS], u[ITEMS];
  float bias;
  int row, o, l0, L;  // row = k * dim + d: this route's row of A, D, delta_bias; o: order
  bool rev;
  __device__ Steps(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k) {
    rev = (p.reversed >> k) & 1, o = (p.transposed >> k) & 1;
    row = k * p.dim + s.d, l0 = s.tc * ITEMS, L = p.L;
    bias = p.bias ? p.bias[row] : 0.f;
    const T* dl = sm.delta_of(k, s.cl);
    const T* u_ = sm.u_of(p, k, o, s.cl);
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const float raw = to_f(dl[at(i)]) + bias;
      dt[i] = valid(i) ? (p.softplus ? softplus(raw) : raw) : 0.f;
      u[i] = valid(i) ? to_f(u_[at(i)]) : 0.f;
    }
  }
  __device__ __forceinline__ bool valid(int i) const { return l0 + i < L; }
  // storage index of step i (recomputed, not kept: registers are the limit)
  __device__ __forceinline__ int at(int i) const {
    return valid(i) ? pad(rev ? L - 1 - l0 - i : l0 + i) : 0;
  }
};

// State n of route k over this thread's steps: each step's decay da = exp(dt A) and input
// bx = dt B u, and the state entering the thread's run (a block scan: every thread calls this).
template <typename T, int ITEMS>
__device__ __forceinline__ float state_entering(const FusedParams& p, const Smem<T>& sm,
                                                const Seat& s, const Steps<T, ITEMS>& st, int k,
                                                int n, float (&da)[ITEMS], float (&bx)[ITEMS],
                                                int& parity) {
  const float a2 = p.A[st.row * p.N + n] * kLog2e;
  const float* Bn = sm.B_of(k) + n * sm.row;
  Agg run{1.f, 0.f};
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    da[i] = exp2_approx(st.dt[i] * a2);
    bx[i] = st.dt[i] * st.u[i] * Bn[st.at(i)];
    run.s = fmaf(da[i], run.s, bx[i]), run.p *= da[i];
  }
  parity ^= 1;
  return entering<false>(run, sm.slots + (parity * p.cpb + s.cl) * p.wpc, p.wpc, s.tc);
}

// Route k's contribution to y added into y_acc (copy o of the block's channels).
template <typename T, int ITEMS>
__device__ void route_forward(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k,
                              float* y_acc, int& parity) {
  const Steps<T, ITEMS> st(p, sm, s, k);
  const float Dk = p.D ? p.D[st.row] : 0.f;
  float yv[ITEMS];
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) yv[i] = Dk * st.u[i];
  for (int n = 0; n < p.N; ++n) {
    const float* Cn = sm.C_of(k) + n * sm.row;
    float da[ITEMS], bx[ITEMS];
    float h = state_entering(p, sm, s, st, k, n, da, bx, parity);
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      h = fmaf(da[i], h, bx[i]);
      yv[i] = fmaf(Cn[st.at(i)], h, yv[i]);
    }
  }
  float* y = sm.rows(y_acc, st.o, s.cl);
#pragma unroll
  for (int i = 0; i < ITEMS; ++i)
    if (st.valid(i)) y[st.at(i)] += yv[i];
}

// Sum of all routes' outputs (before y_scale and the gate) into y_acc, in each storage order.
template <typename T, int ITEMS>
__device__ void all_routes_forward(const FusedParams& p, const Smem<T>& sm, const Seat& s,
                                   float* y_acc) {
  for (int i = threadIdx.x; i < sm.copies * p.cpb * sm.row; i += blockDim.x) y_acc[i] = 0.f;
  if (!p.su_k) load_shared_u(p, sm, s);
  if (p.preload) load_all_routes(p, sm, s);
  int parity = 0;
  for (int k = 0; k < p.K; ++k) {
    __syncthreads();  // the previous route is done with delta / B / C and its part of y
    if (!p.preload) {
      load_route(p, sm, s, k);
      __syncthreads();
    }
    route_forward<T, ITEMS>(p, sm, s, k, y_acc, parity);
  }
  __syncthreads();
}

// Position pos of channel slot c of a per-channel float array: the sum of its copies.
template <typename T>
__device__ __forceinline__ float summed(const FusedParams& p, const Smem<T>& sm,
                                        const float* base, int c, int pos) {
  float v = sm.rows(base, 0, c)[pad(pos)];
  if (sm.copies > 1) v += sm.rows(base, 1, c)[stored_at(p, pos, 1)];
  return v;
}

template <typename T, int ITEMS>
__global__ void __launch_bounds__(kFusedMaxThreads, SSOPS_FUSED_FWD_MINB)
    fused_fwd_kernel(const FusedParams p) {
  const Seat s(p);
  const Smem<T> sm(p, false);
  all_routes_forward<T, ITEMS>(p, sm, s, sm.y);
  const int total = p.cpb * p.L;
  for (int base = threadIdx.x; base < total; base += kInFlight * blockDim.x) {
    float z[kInFlight];
    if (p.z) {  // the gate's loads first, all in flight
#pragma unroll
      for (int j = 0; j < kInFlight; ++j) {
        const int i = base + j * blockDim.x, c = i / p.L;
        if (i < total)
          z[j] = to_f(static_cast<const T*>(p.z)[s.b * p.sz_b + (s.d0 + c) * p.sz_d + i - c * p.L]);
      }
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const int i = base + j * blockDim.x, c = i / p.L, l = i - c * p.L;
      if (i >= total) continue;
      float v = summed(p, sm, sm.y, c, l) * p.y_scale;
      if (p.z) v *= z[j] * sigmoid(z[j]);
      const int64_t oy = s.b * p.sy_b + (s.d0 + c) * p.sy_d + l;
      if (p.y_f32) static_cast<float*>(p.y)[oy] = v;
      else static_cast<T*>(p.y)[oy] = from_f<T>(v);
    }
  }
}

// Route k's backward: du into copy o of sm.du (added to: routes sharing u add up), ddelta over
// sm.delta (each step is read and written by its own thread only), dB / dC into sm.dB / sm.dC,
// and this channel's dA (per state), dD and ddelta_bias sums into sm.sums.
template <typename T, int ITEMS>
__device__ void route_backward(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k,
                               int& parity) {
  const Steps<T, ITEMS> st(p, sm, s, k);
  const float Dk = p.D ? p.D[st.row] : 0.f;
  const float* g_ch = sm.rows(sm.y, st.o, s.cl);
  const bool shared_bc = p.cpb > 1;  // several channels add to sm.dB / sm.dC
  float g[ITEMS], du[ITEMS], ddt[ITEMS];
  float dD = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    g[i] = st.valid(i) ? g_ch[st.at(i)] : 0.f;
    du[i] = Dk * g[i], ddt[i] = 0.f;
    dD = fmaf(g[i], st.u[i], dD);
  }
  float* sums = sm.sums + s.cl * (p.N + 2);
  for (int n = 0; n < p.N; ++n) {
    const float A = p.A[st.row * p.N + n];
    const float* Bn = sm.B_of(k) + n * sm.row;
    const float* Cn = sm.C_of(k) + n * sm.row;
    float* dBn = sm.dB + n * sm.row;
    float* dCn = sm.dC + n * sm.row;
    float da[ITEMS], bx[ITEMS], hp[ITEMS];
    float h = state_entering(p, sm, s, st, k, n, da, bx, parity);
    Agg back{1.f, 0.f};  // right to left: r -> da (C g + r)
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) hp[i] = h, h = fmaf(da[i], h, bx[i]);
#pragma unroll
    for (int i = ITEMS - 1; i >= 0; --i)
      back.s = da[i] * fmaf(Cn[st.at(i)], g[i], back.s), back.p *= da[i];
    parity ^= 1;
    float r = entering<true>(back, sm.slots + (parity * p.cpb + s.cl) * p.wpc, p.wpc, s.tc);
    float dA = 0.f;
#pragma unroll
    for (int i = ITEMS - 1; i >= 0; --i) {
      const float Bv = Bn[st.at(i)];
      const float q = fmaf(Cn[st.at(i)], g[i], r);  // dL/dh at this step
      const float dah = da[i] * hp[i];
      if (st.valid(i)) {
        const float dC = g[i] * (dah + bx[i]), dB = q * st.dt[i] * st.u[i];
        if (shared_bc) {
          atomicAdd(dCn + st.at(i), dC);
          atomicAdd(dBn + st.at(i), dB);
        } else {
          dCn[st.at(i)] += dC;
          dBn[st.at(i)] += dB;
        }
      }
      du[i] = fmaf(q * st.dt[i], Bv, du[i]);
      ddt[i] = fmaf(q, fmaf(A, dah, Bv * st.u[i]), ddt[i]);
      dA = fmaf(q * st.dt[i], dah, dA);
      r = da[i] * q;
    }
    dA = warp_sum(dA);
    if ((s.tc & 31) == 0) atomicAdd(sums + n, dA);
  }
  float dbias = 0.f;
  T* dl = sm.delta_of(k, s.cl);
  float* du_ch = sm.rows(sm.du, st.o, s.cl);
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    if (!st.valid(i)) continue;
    const float dd = p.softplus ? ddt[i] * sigmoid(to_f(dl[st.at(i)]) + st.bias) : ddt[i];
    dbias += dd;
    dl[st.at(i)] = from_f<T>(dd);
    du_ch[st.at(i)] += du[i];
  }
  dD = warp_sum(dD), dbias = warp_sum(dbias);
  if ((s.tc & 31) == 0) atomicAdd(sums + p.N, dD), atomicAdd(sums + p.N + 1, dbias);
}

// Global dst[r * dst_row + pos] += shared src[r * row + stored_at(pos, o)], for r < rows,
// pos < L: four positions per atomic where dst allows.
__device__ inline void add_rows(const FusedParams& p, float* dst, int64_t dst_row, const float* src,
                         int row, int rows, int o) {
#if __CUDA_ARCH__ >= 900
  if (p.L % 4 == 0 && dst_row % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
    const int quads = p.L / 4;
    for (int i = threadIdx.x; i < rows * quads; i += blockDim.x) {
      const int r = i / quads, pos = (i - r * quads) * 4;
      const float* sr = src + r * row;
      const float4 v = make_float4(sr[stored_at(p, pos, o)], sr[stored_at(p, pos + 1, o)],
                                   sr[stored_at(p, pos + 2, o)], sr[stored_at(p, pos + 3, o)]);
      atomicAdd(reinterpret_cast<float4*>(dst + r * dst_row + pos), v);
    }
    return;
  }
#endif
  for (int i = threadIdx.x; i < rows * p.L; i += blockDim.x) {
    const int r = i / p.L, pos = i - r * p.L;
    atomicAdd(dst + r * dst_row + pos, src[r * row + stored_at(p, pos, o)]);
  }
}

template <typename T, int ITEMS>
__global__ void __launch_bounds__(kFusedMaxThreads, 1)
    fused_bwd_kernel(const FusedParams p) {
  const Seat s(p);
  const Smem<T> sm(p, true);
  const int L = p.L, total = p.cpb * L;
  // g = dL/d(sum of the routes) into copy 0 of sm.y (with a gate, that sum is recomputed
  // first; it has no column routes then: bidirectional_scan), then into the column copy
  if (p.z) all_routes_forward<T, ITEMS>(p, sm, s, sm.y);
  for (int base = threadIdx.x; base < total; base += kInFlight * blockDim.x) {
    float dy[kInFlight], z[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const int i = base + j * blockDim.x, c = i / L, l = i - c * L;
      if (i >= total) continue;
      dy[j] = load_w<T>(p.dy, s.b * p.sy_b + (s.d0 + c) * p.sy_d + l, p.y_f32);
      if (p.z) z[j] = to_f(static_cast<const T*>(p.z)[s.b * p.sz_b + (s.d0 + c) * p.sz_d + l]);
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const int i = base + j * blockDim.x, c = i / L, l = i - c * L;
      if (i >= total) continue;
      float g = dy[j] * p.y_scale;
      float* g0 = sm.rows(sm.y, 0, c) + pad(l);
      if (p.z) {
        const float sg = sigmoid(z[j]), y = *g0 * p.y_scale;
        static_cast<T*>(p.dz)[s.b * p.sz_b + (s.d0 + c) * p.sz_d + l] =
            from_f<T>(dy[j] * y * sg * (1.f + z[j] * (1.f - sg)));
        g *= z[j] * sg;
      }
      *g0 = g;
      if (sm.copies > 1) sm.rows(sm.y, 1, c)[stored_at(p, l, 1)] = g;
    }
  }
  for (int i = threadIdx.x; i < sm.copies * p.cpb * sm.row; i += blockDim.x) sm.du[i] = 0.f;
  if (!p.su_k) load_shared_u(p, sm, s);
  if (p.preload && !p.z) load_all_routes(p, sm, s);  // (with z: loaded by the forward)
  int parity = 0;
  for (int k = 0; k < p.K; ++k) {
    const int o = (p.transposed >> k) & 1;
    __syncthreads();
    if (!p.preload) load_route(p, sm, s, k);
    for (int i = threadIdx.x; i < 2 * p.N * sm.row; i += blockDim.x) sm.dB[i] = 0.f;  // and dC
    for (int i = threadIdx.x; i < p.cpb * (p.N + 2); i += blockDim.x) sm.sums[i] = 0.f;
    __syncthreads();
    route_backward<T, ITEMS>(p, sm, s, k, parity);
    __syncthreads();
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
      const int c = i / L, l = i - c * L, at = stored_at(p, l, o);
      static_cast<T*>(p.ddelta)[k * p.sd_k + s.b * p.sd_b + (s.d0 + c) * p.sd_d + l] =
          sm.delta_of(k, c)[at];
      if (p.su_k) {  // routes with their own u: this route's du, then a fresh sum
        float* du = sm.rows(sm.du, o, c) + at;
        static_cast<T*>(p.du)[k * p.su_k + s.b * p.su_b + (s.d0 + c) * p.su_d + l] =
            from_f<T>(*du);
        *du = 0.f;
      }
    }
    const int64_t nl = static_cast<int64_t>(p.N) * L;
    const int64_t off = ((static_cast<int64_t>(k) * p.batch + s.b) * p.G + s.g) * nl;
    add_rows(p, p.dB + off, L, sm.dB, sm.row, p.N, o);
    add_rows(p, p.dC + off, L, sm.dC, sm.row, p.N, o);
    for (int i = threadIdx.x; i < p.cpb * (p.N + 2); i += blockDim.x) {
      const int c = i / (p.N + 2), j = i % (p.N + 2), row = k * p.dim + s.d0 + c;
      if (j < p.N) atomicAdd(p.dA + static_cast<int64_t>(row) * p.N + j, sm.sums[i]);
      else if (j == p.N && p.dD) atomicAdd(p.dD + row, sm.sums[i]);
      else if (j == p.N + 1 && p.dbias) atomicAdd(p.dbias + row, sm.sums[i]);
    }
  }
  if (!p.su_k) {  // routes sharing u (the SS2D core): du summed over the storage orders
    __syncthreads();
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
      const int c = i / L, l = i - c * L;
      static_cast<T*>(p.du)[s.b * p.su_b + (s.d0 + c) * p.su_d + l] =
          from_f<T>(summed(p, sm, sm.du, c, l));
    }
  }
}

template <typename T, int ITEMS>
void launch_fused_items(const FusedParams& p, bool backward, cudaStream_t stream) {
  const size_t smem = fused_smem_bytes(p.L, p.N, p.cpb, p.wpc, backward, sizeof(T),
                                       p.transposed ? 2 : 1, p.preload ? p.K : 1, p.su_k != 0);
  auto kernel = fused_fwd_kernel<T, ITEMS>;
  if constexpr (ITEMS <= kFusedMaxBwdItems) {
    if (backward) kernel = fused_bwd_kernel<T, ITEMS>;
  }
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  const int blocks = p.batch * (p.dim / p.cpb);
  kernel<<<blocks, 32 * p.wpc * p.cpb, smem, stream>>>(p);
}

template <typename T>
void launch_fused_typed(const FusedParams& p, bool backward, cudaStream_t stream) {
  if (p.lines) return backward ? launch_line_bwd<T>(p, stream) : launch_line_fwd<T>(p, stream);
  switch (p.items) {
    case 2: return launch_fused_items<T, 2>(p, backward, stream);
    case 4: return launch_fused_items<T, 4>(p, backward, stream);
    case 8: return launch_fused_items<T, 8>(p, backward, stream);
    default: return launch_fused_items<T, 16>(p, backward, stream);
  }
}

}  // namespace ssops
