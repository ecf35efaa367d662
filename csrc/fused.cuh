// Fused multi-route scans: one block scans every route of whole sequences held in shared memory.
//
// bidirectional_scan (2 routes) and the SS2D core (4 routes over an H x W grid) read each
// sequence's inputs once, in position order (coalesced), into shared memory; each route walks
// them in its own order through an index map (route_pos), the routes' outputs are summed in
// shared memory and y is written once.  Within a route, a channel's steps are cut among its
// 32 * wpc threads, ITEMS consecutive steps each: a thread runs its steps sequentially in
// registers, and the threads are joined by a block scan of their aggregates (h -> p h + s),
// one state at a time.  The backward recomputes each route's states the same way, then steps
// the adjoint g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1} right to left with the mirrored scan.
// B / C's gradients are summed over the block's channels in shared memory and added to global
// memory once per block.
#pragma once

#include "scan_kernels.cuh"

namespace ssops {

constexpr int kFusedMaxThreads = 512;  // per block: at most 128 registers per thread
constexpr int kFusedMaxBwdItems = 8;   // steps per thread in the backward (16 spill)

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

// Shared memory (scan.h fused_smem_bytes).
template <typename T>
struct Smem {
  float2* slots;  // [2][cpb][wpc]
  float *y, *du, *B, *C, *dB, *dC, *sums;  // forward: y, B, C; backward: y holds g
  T *u, *delta;
  __device__ Smem(const FusedParams& p, bool backward) {
    extern __shared__ float4 smem_[];
    const int cl = p.cpb * p.L, nl = p.N * p.L;
    slots = reinterpret_cast<float2*>(smem_);
    y = reinterpret_cast<float*>(slots + 2 * p.cpb * p.wpc);
    du = backward ? y + cl : nullptr;
    B = backward ? du + cl : y + cl;
    C = B + nl;
    dB = backward ? C + nl : nullptr;
    dC = backward ? dB + nl : nullptr;
    sums = backward ? dC + nl : nullptr;
    u = reinterpret_cast<T*>(backward ? sums + p.cpb * (p.N + 2) : C + nl);
    delta = u + cl;
  }
};

// Everything route k reads, position order, into shared memory (u only if routes have their own).
template <typename T>
__device__ void load_route(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k,
                           bool load_u) {
  const int L = p.L;
  for (int c = 0; c < p.cpb; ++c) {
    const T* dl = static_cast<const T*>(p.delta) + k * p.sd_k + s.b * p.sd_b + (s.d0 + c) * p.sd_d;
    const T* u = static_cast<const T*>(p.u) + k * p.su_k + s.b * p.su_b + (s.d0 + c) * p.su_d;
#pragma unroll 4
    for (int l = threadIdx.x; l < L; l += blockDim.x) {
      sm.delta[c * L + l] = dl[l];
      if (load_u) sm.u[c * L + l] = u[l];
    }
  }
  const int64_t ob = k * p.sB_k + s.b * p.sB_b + s.g * p.sB_g;
  const int64_t oc = k * p.sC_k + s.b * p.sC_b + s.g * p.sC_g;
  for (int n = 0; n < p.N; ++n) {
#pragma unroll 4
    for (int l = threadIdx.x; l < L; l += blockDim.x) {
      sm.B[n * L + l] = load_w<T>(p.B, ob + n * p.sB_n + l, p.bc_f32);
      sm.C[n * L + l] = load_w<T>(p.C, oc + n * p.sC_n + l, p.bc_f32);
    }
  }
}

// A thread's ITEMS steps of route k: positions, dt and u (zero dt and u past the end: the
// identity step).
template <typename T, int ITEMS>
struct Steps {
  int pos[ITEMS];
  float dt[ITEMS], u[ITEMS], raw[ITEMS];
  int row;  // k * dim + d: this route's row of A, D, delta_bias
  __device__ Steps(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k) {
    const bool rev = (p.reversed >> k) & 1, tr = (p.transposed >> k) & 1;
    row = k * p.dim + s.d;
    const float bias = p.bias ? p.bias[row] : 0.f;
    const T* dl = sm.delta + s.cl * p.L;
    const T* u_ = sm.u + s.cl * p.L;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const int l = s.tc * ITEMS + i;
      const bool valid = l < p.L;
      pos[i] = valid ? route_pos(l, p.L, p.H, p.W, rev, tr) : 0;
      raw[i] = to_f(dl[pos[i]]) + bias;
      dt[i] = valid ? (p.softplus ? softplus(raw[i]) : raw[i]) : 0.f;
      u[i] = valid ? to_f(u_[pos[i]]) : 0.f;
    }
  }
  __device__ bool valid(const FusedParams& p, const Seat& s, int i) const {
    return s.tc * ITEMS + i < p.L;
  }
};

// Route k's contribution to y (this block's channels, position order) added into y_acc.
template <typename T, int ITEMS>
__device__ void route_forward(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k,
                              float* y_acc, int& parity) {
  const Steps<T, ITEMS> st(p, sm, s, k);
  const float Dk = p.D ? p.D[st.row] : 0.f;
  float yv[ITEMS];
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) yv[i] = Dk * st.u[i];
  for (int n = 0; n < p.N; ++n) {
    const float a2 = p.A[st.row * p.N + n] * kLog2e;
    const float* Bn = sm.B + n * p.L;
    const float* Cn = sm.C + n * p.L;
    float da[ITEMS], bx[ITEMS];
    Agg run{1.f, 0.f};
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      da[i] = exp2_approx(st.dt[i] * a2);
      bx[i] = st.dt[i] * st.u[i] * Bn[st.pos[i]];
      run.s = fmaf(da[i], run.s, bx[i]), run.p *= da[i];
    }
    parity ^= 1;
    float h = entering<false>(run, sm.slots + (parity * p.cpb + s.cl) * p.wpc, p.wpc, s.tc);
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      h = fmaf(da[i], h, bx[i]);
      yv[i] = fmaf(Cn[st.pos[i]], h, yv[i]);
    }
  }
  float* y = y_acc + s.cl * p.L;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i)
    if (st.valid(p, s, i)) y[st.pos[i]] += yv[i];
}

template <typename T>
__device__ __forceinline__ void load_shared_u(const FusedParams& p, const Smem<T>& sm,
                                              const Seat& s) {
  for (int c = 0; c < p.cpb; ++c) {
    const T* u = static_cast<const T*>(p.u) + s.b * p.su_b + (s.d0 + c) * p.su_d;
#pragma unroll 4
    for (int l = threadIdx.x; l < p.L; l += blockDim.x) sm.u[c * p.L + l] = u[l];
  }
}

// Sum of all routes' outputs (before y_scale and the gate) into y_acc.
template <typename T, int ITEMS>
__device__ void all_routes_forward(const FusedParams& p, const Smem<T>& sm, const Seat& s,
                                   float* y_acc) {
  const bool shared_u = p.su_k == 0;
  for (int i = threadIdx.x; i < p.cpb * p.L; i += blockDim.x) y_acc[i] = 0.f;
  if (shared_u) load_shared_u(p, sm, s);
  int parity = 0;
  for (int k = 0; k < p.K; ++k) {
    __syncthreads();  // the previous route is done with delta / B / C
    load_route(p, sm, s, k, !shared_u);
    __syncthreads();
    route_forward<T, ITEMS>(p, sm, s, k, y_acc, parity);
  }
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ float load_y(const FusedParams& p, const void* base, int64_t i) {
  return p.y_f32 ? static_cast<const float*>(base)[i] : to_f(static_cast<const T*>(base)[i]);
}

template <typename T, int ITEMS>
__global__ void __launch_bounds__(kFusedMaxThreads) fused_fwd_kernel(const FusedParams p) {
  const Seat s(p);
  const Smem<T> sm(p, false);
  all_routes_forward<T, ITEMS>(p, sm, s, sm.y);
  for (int c = 0; c < p.cpb; ++c) {
    const int64_t oy = s.b * p.sy_b + (s.d0 + c) * p.sy_d, oz = s.b * p.sz_b + (s.d0 + c) * p.sz_d;
    for (int l = threadIdx.x; l < p.L; l += blockDim.x) {
      float v = sm.y[c * p.L + l] * p.y_scale;
      if (p.z) {
        const float z = to_f(static_cast<const T*>(p.z)[oz + l]);
        v *= z * sigmoid(z);
      }
      if (p.y_f32) static_cast<float*>(p.y)[oy + l] = v;
      else static_cast<T*>(p.y)[oy + l] = from_f<T>(v);
    }
  }
}

// Route k's backward: du into sm.du (added when the routes share u), ddelta over sm.delta
// (each position is read and written by its own thread only), dB / dC into sm.dB / sm.dC, and
// this channel's dA (per state), dD and ddelta_bias sums into sm.sums.
template <typename T, int ITEMS>
__device__ void route_backward(const FusedParams& p, const Smem<T>& sm, const Seat& s, int k,
                               int& parity) {
  const Steps<T, ITEMS> st(p, sm, s, k);
  const float Dk = p.D ? p.D[st.row] : 0.f;
  const float* g_ch = sm.y + s.cl * p.L;
  const bool shared_bc = p.cpb > 1;  // several channels add to sm.dB / sm.dC
  float g[ITEMS], du[ITEMS], ddt[ITEMS];
  float dD = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    g[i] = st.valid(p, s, i) ? g_ch[st.pos[i]] : 0.f;
    du[i] = Dk * g[i], ddt[i] = 0.f;
    dD = fmaf(g[i], st.u[i], dD);
  }
  float* sums = sm.sums + s.cl * (p.N + 2);
  for (int n = 0; n < p.N; ++n) {
    const float A = p.A[st.row * p.N + n], a2 = A * kLog2e;
    const float* Bn = sm.B + n * p.L;
    const float* Cn = sm.C + n * p.L;
    float da[ITEMS], bx[ITEMS], hp[ITEMS];
    Agg run{1.f, 0.f};
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      da[i] = exp2_approx(st.dt[i] * a2);
      bx[i] = st.dt[i] * st.u[i] * Bn[st.pos[i]];
      run.s = fmaf(da[i], run.s, bx[i]), run.p *= da[i];
    }
    parity ^= 1;
    float h = entering<false>(run, sm.slots + (parity * p.cpb + s.cl) * p.wpc, p.wpc, s.tc);
    Agg back{1.f, 0.f};  // right to left: r -> da (C g + r)
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) hp[i] = h, h = fmaf(da[i], h, bx[i]);
#pragma unroll
    for (int i = ITEMS - 1; i >= 0; --i)
      back.s = da[i] * fmaf(Cn[st.pos[i]], g[i], back.s), back.p *= da[i];
    parity ^= 1;
    float r = entering<true>(back, sm.slots + (parity * p.cpb + s.cl) * p.wpc, p.wpc, s.tc);
    float dA = 0.f;
#pragma unroll
    for (int i = ITEMS - 1; i >= 0; --i) {
      const float Bv = Bn[st.pos[i]];
      const float q = fmaf(Cn[st.pos[i]], g[i], r);  // dL/dh at this step
      const float dah = da[i] * hp[i];
      if (st.valid(p, s, i)) {
        const float dC = g[i] * (dah + bx[i]), dB = q * st.dt[i] * st.u[i];
        if (shared_bc) {
          atomicAdd(sm.dC + n * p.L + st.pos[i], dC);
          atomicAdd(sm.dB + n * p.L + st.pos[i], dB);
        } else {
          sm.dC[n * p.L + st.pos[i]] += dC;
          sm.dB[n * p.L + st.pos[i]] += dB;
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
  T* dl = sm.delta + s.cl * p.L;
  float* du_ch = sm.du + s.cl * p.L;
  const bool shared_u = p.su_k == 0;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    if (!st.valid(p, s, i)) continue;
    const float dd = p.softplus ? ddt[i] * sigmoid(st.raw[i]) : ddt[i];
    dbias += dd;
    dl[st.pos[i]] = from_f<T>(dd);
    du_ch[st.pos[i]] = shared_u ? du_ch[st.pos[i]] + du[i] : du[i];
  }
  dD = warp_sum(dD), dbias = warp_sum(dbias);
  if ((s.tc & 31) == 0) atomicAdd(sums + p.N, dD), atomicAdd(sums + p.N + 1, dbias);
}

// dst[i] += src[i] for i < n, float4 at a time where both are 16-byte aligned.
__device__ __forceinline__ void add_to_global(float* dst, const float* src, int n) {
#if __CUDA_ARCH__ >= 900
  if ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) % 16 == 0) {
    for (int i = threadIdx.x; i < n / 4; i += blockDim.x)
      atomicAdd(reinterpret_cast<float4*>(dst) + i, reinterpret_cast<const float4*>(src)[i]);
    for (int i = n / 4 * 4 + threadIdx.x; i < n; i += blockDim.x) atomicAdd(dst + i, src[i]);
    return;
  }
#endif
  for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(dst + i, src[i]);
}

template <typename T, int ITEMS>
__global__ void __launch_bounds__(kFusedMaxThreads) fused_bwd_kernel(const FusedParams p) {
  const Seat s(p);
  const Smem<T> sm(p, true);
  const int L = p.L;
  const bool shared_u = p.su_k == 0;
  // sm.y <- g = dL/d(sum of the routes); with a gate, that sum is recomputed first
  if (p.z) all_routes_forward<T, ITEMS>(p, sm, s, sm.y);
  for (int c = 0; c < p.cpb; ++c) {
    const int64_t oy = s.b * p.sy_b + (s.d0 + c) * p.sy_d, oz = s.b * p.sz_b + (s.d0 + c) * p.sz_d;
    for (int l = threadIdx.x; l < L; l += blockDim.x) {
      const float dy = load_y<T>(p, p.dy, oy + l) * p.y_scale;
      float g = dy;
      if (p.z) {
        const float z = to_f(static_cast<const T*>(p.z)[oz + l]), sg = sigmoid(z);
        const float y = sm.y[c * L + l];
        static_cast<T*>(p.dz)[oz + l] = from_f<T>(dy * y * sg * (1.f + z * (1.f - sg)));
        g = dy * z * sg;
      }
      sm.y[c * L + l] = g;
      if (shared_u) sm.du[c * L + l] = 0.f;
    }
  }
  if (shared_u) load_shared_u(p, sm, s);
  int parity = 0;
  for (int k = 0; k < p.K; ++k) {
    __syncthreads();
    load_route(p, sm, s, k, !shared_u);
    for (int i = threadIdx.x; i < 2 * p.N * L; i += blockDim.x) sm.dB[i] = 0.f;  // and dC
    for (int i = threadIdx.x; i < p.cpb * (p.N + 2); i += blockDim.x) sm.sums[i] = 0.f;
    __syncthreads();
    route_backward<T, ITEMS>(p, sm, s, k, parity);
    __syncthreads();
    for (int c = 0; c < p.cpb; ++c) {
      T* dd = static_cast<T*>(p.ddelta) + k * p.sd_k + s.b * p.sd_b + (s.d0 + c) * p.sd_d;
      T* du = static_cast<T*>(p.du) + k * p.su_k + s.b * p.su_b + (s.d0 + c) * p.su_d;
      for (int l = threadIdx.x; l < L; l += blockDim.x) {
        dd[l] = sm.delta[c * L + l];
        if (!shared_u) du[l] = from_f<T>(sm.du[c * L + l]);
      }
    }
    const int64_t nl = static_cast<int64_t>(p.N) * L;
    const int64_t o = ((static_cast<int64_t>(k) * p.batch + s.b) * p.G + s.g) * nl;
    add_to_global(p.dB + o, sm.dB, static_cast<int>(nl));
    add_to_global(p.dC + o, sm.dC, static_cast<int>(nl));
    for (int i = threadIdx.x; i < p.cpb * (p.N + 2); i += blockDim.x) {
      const int c = i / (p.N + 2), j = i % (p.N + 2), row = k * p.dim + s.d0 + c;
      if (j < p.N) atomicAdd(p.dA + static_cast<int64_t>(row) * p.N + j, sm.sums[i]);
      else if (j == p.N && p.dD) atomicAdd(p.dD + row, sm.sums[i]);
      else if (j == p.N + 1 && p.dbias) atomicAdd(p.dbias + row, sm.sums[i]);
    }
  }
  if (shared_u) {
    __syncthreads();
    for (int c = 0; c < p.cpb; ++c) {
      T* du = static_cast<T*>(p.du) + s.b * p.su_b + (s.d0 + c) * p.su_d;
      for (int l = threadIdx.x; l < L; l += blockDim.x) du[l] = from_f<T>(sm.du[c * L + l]);
    }
  }
}

template <typename T, int ITEMS>
void launch_fused_items(const FusedParams& p, bool backward, cudaStream_t stream) {
  const size_t smem = fused_smem_bytes(p.L, p.N, p.cpb, p.wpc, backward, sizeof(T));
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
  switch (p.items) {
    case 2: return launch_fused_items<T, 2>(p, backward, stream);
    case 4: return launch_fused_items<T, 4>(p, backward, stream);
    case 8: return launch_fused_items<T, 8>(p, backward, stream);
    default: return launch_fused_items<T, 16>(p, backward, stream);
  }
}

}  // namespace ssops
