// The SS2D core's forward at N = 1 over whole grids: one thread per grid line.
//
// A route over an H x W grid walks its lines (rows, or columns when transposed) one after the
// other, each left to right or, reversed, right to left.  Each line maps the state entering
// it, h_in, to P h_in + S (P: the product of its decays, S: its end state from zero), and its
// state at step t is its state from zero plus q_t h_in (q_t: the product of the decays so far).
// So a thread per line walks its line once from zero, adding C h into a shared-memory plane
// and keeping q C in another, and stores its map (P, S); once every line's map is in, it folds
// the maps of the lines the route walks before its own into h_in and adds q C h_in to its
// cells (where the second plane would cost blocks an SM, it walks its line twice instead: for
// the map, then from h_in; line_fwd_split).  One launch per orientation, a block holding the
// lines of cpb channels: first the columns (neighbouring columns in neighbouring threads, one
// element per step: coalesced), which sum their routes into a float32 buffer in position
// order; then the rows (each row read with vector loads), which add their routes and
// (sum_k D_k) u to that sum and write y.  A thread touches only its own line of its channel's
// planes.  No copy of x or of the routes' inputs is made.
#pragma once

#include "scan_kernels.cuh"

namespace ssops {

// The lanes of a warp whose first `n` lanes hold a line (the rest idle).
__device__ __forceinline__ unsigned active_lanes(int n) {
  return n >= 32 ? ~0u : (1u << max(n, 0)) - 1;
}

// How a block's threads take its lines: kByChannel, a channel's lines in turn (neighbouring
// threads: neighbouring lines); kByLine, a line's channels in neighbouring lanes (cpb, a power
// of two, divides a warp); kByPair, the two halves of a warp the same 16 lines of a pair of
// channels (2c, 2c + 1: lanes 16 apart), the pairs' lines in turn (as kByChannel where cpb is
// 1).
enum LineOrder { kByChannel, kByLine, kByPair };

// This thread's line: channel d of batch b (slot `plane` of the block), line `line` of its
// orientation, n steps long, its first element at grid offset `first`, `step` apart, its first
// cell at `cell` of its channel's plane.
// kByPair: lanes t and t ^ 16 hold a pair's two channels, the second in the warp's upper half;
// pair_entry: this lane's (pair, line) among the block's cpb / 2 * nlines, 16 a warp
__device__ __forceinline__ int pair_half() { return (threadIdx.x >> 4) & 1; }
__device__ __forceinline__ int pair_entry() { return (threadIdx.x >> 5) * 16 + (threadIdx.x & 15); }

// channel d of batch b's row of p.partial (float32, position order)
__device__ __forceinline__ float* partial_row(const FusedParams& p, int b, int d) {
  return p.partial + (static_cast<int64_t>(b) * p.dim + d) * p.L;
}

template <bool COL>
struct Line {
  int b, d, plane, line, n, nlines, cell;
  int64_t first, step;
  LineOrder order;  // (a constant where the kernels construct it: no register)
  __device__ explicit Line(const FusedParams& p, LineOrder order_ = kByChannel) : order(order_) {
    nlines = COL ? p.W : p.H;
    const int t = threadIdx.x;
    if (order == kByLine) {
      line = t / p.cpb, plane = t - line * p.cpb;
      if (line >= nlines) plane = p.cpb;  // (idle: active() asks the plane only)
    } else if (paired(p)) {
      const int e = pair_entry(), pair = e / nlines;
      line = e - pair * nlines, plane = 2 * pair + pair_half();
    } else {
      plane = t / nlines, line = t - plane * nlines;
    }
    b = blockIdx.x % p.batch, d = (blockIdx.x / p.batch) * p.cpb + plane;
    n = COL ? p.H : p.W;
    first = COL ? line : static_cast<int64_t>(line) * p.W;
    step = COL ? p.W : 1;
    cell = COL ? line : line * line_plane_row(p.W);
  }
  __device__ bool paired(const FusedParams& p) const { return order == kByPair && p.cpb > 1; }
  // this thread's place among the block's cpb * nlines lines (a dense numbering in any order;
  // computed when asked, as lanes() is: kept from the start, they cost registers in the walks)
  __device__ int index(const FusedParams& p) const {
    return paired(p) ? 2 * pair_entry() + pair_half() : static_cast<int>(threadIdx.x);
  }
  // the lanes of this thread's warp that hold a line
  __device__ unsigned lanes(const FusedParams& p) const {
    const int warp = threadIdx.x & ~31u, lines = p.cpb * nlines;
    if (!paired(p)) return active_lanes(lines - warp);
    const unsigned half = active_lanes(lines / 2 - warp / 2) & 0xffffu;
    return half | half << 16;
  }
  __device__ bool active(const FusedParams& p) const { return plane < p.cpb; }
  __device__ bool walks(const FusedParams& p, int k) const {
    return ((p.transposed >> k) & 1) == COL;
  }
  // the rank of this line in route k's walk, and the slot of its map among maps [route][cpb]
  // [lines] (route: k in the forward's maps of every route, the o-th of the orientation's routes
  // in the backward's)
  __device__ int rank(const FusedParams& p, int k) const {
    return (p.reversed >> k) & 1 ? nlines - 1 - line : line;
  }
  __device__ int slot(const FusedParams& p, int k, int route) const {
    return route * p.cpb * nlines + plane * nlines + rank(p, k);
  }
};

// V elements of T from `at` (aligned to V elements), as whole vector loads.
template <int V, typename T>
__device__ __forceinline__ Packed<V, T> load_packed(const T* at) {
  Packed<V, T> raw;
#pragma unroll
  for (int i = 0; i < Vec<V, T>::count; ++i)
    raw.vec[i] = reinterpret_cast<const typename Vec<V, T>::type*>(at)[i];
  return raw;
}

// A run's V elements as floats in walk order (REV: the last first).
template <int V, bool REV, typename T>
__device__ __forceinline__ void run_floats(const Packed<V, T>& raw, float* v) {
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = to_f(raw.e[REV ? V - 1 - j : j]);
}

// V elements of T from `at` (aligned to V elements, whole vector loads), in walk order.
template <int V, bool REV, typename T>
__device__ __forceinline__ void load_floats(float (&v)[V], const T* at) {
  run_floats<V, REV>(load_packed<V>(at), v);
}

// V floats to `at` as T (aligned to V elements, whole vector stores), given in walk order.
template <int V, bool REV, typename T>
__device__ __forceinline__ void store_floats(const float (&v)[V], T* at) {
  Packed<V, T> raw;
#pragma unroll
  for (int j = 0; j < V; ++j) raw.e[REV ? V - 1 - j : j] = from_f<T>(v[j]);
#pragma unroll
  for (int i = 0; i < Vec<V, T>::count; ++i)
    reinterpret_cast<typename Vec<V, T>::type*>(at)[i] = raw.vec[i];
}

// What a walk of route k over a line does (the forward):
//   kMap   from a zero state: the line's map (P, S) only;
//   kPlane from the entering state h: adds (`add`, else stores) C h + Dsum u into the thread's
//          row or column of `plane`;
//   kSum   the same, written with the plane to p.partial (the columns' last route);
//   kSplit from a zero state: as kPlane, adding (`add`) also what the route before carried
//          there (carried * h, h: that route's entering state), and stores this route's q C
//          in the same cells of `carried` (q: the product of the decays so far), since the
//          state entering the line, h_in, adds q C h_in to each y (on the next route or by
//          fix_line); and the map, as kMap.
enum LinePass { kMap, kPlane, kSum, kSplit };

// One route k over this thread's line, walked in the route's direction, as PASS says.  MIXED:
// B / C may be float32 beside a half x (p.bc_f32; else they are T, and the column loads are not
// issued both ways).
template <typename T, int V, bool TAIL, bool REV, bool COL, LinePass PASS, bool MIXED>
__device__ __forceinline__ float2 walk_line(const FusedParams& p, const Line<COL>& ln, int k,
                                            float h_given, float* plane, float* carried, bool add,
                                            float Dsum) {
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
  const bool bc_f32 = MIXED && p.bc_f32;
  float* sum = PASS == kSum ? partial_row(p, ln.b, ln.d) + ln.first : nullptr;
  const int pr = line_plane_row(p.W);
  // offsets of the walk's next element along the line: in the grid (elements) and in the plane
  const int grid_step = REV ? -static_cast<int>(ln.step) : static_cast<int>(ln.step);
  const int plane_step = REV ? -(COL ? pr : 1) : (COL ? pr : 1);
  int at = REV ? (ln.n - 1) * static_cast<int>(ln.step) : 0;
  int cell = ln.cell + (REV ? (ln.n - 1) * (COL ? pr : 1) : 0);
  float prod = 1.f, h = PASS == kPlane || PASS == kSum ? h_given : 0.f;
  // Column lines take V steps at a time too (loads in flight), one element each, stride W;
  // TAIL: the line's length is not a multiple of V (the last run's extra steps are skipped).
  for (int c = 0; c < ln.n; c += V) {
    float uv[V], dv[V], bv[V], cv[V];
    if constexpr (COL) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const int o = !TAIL || c + j < ln.n ? at + j * grid_step : 0;
        uv[j] = to_f(u[o]), dv[j] = to_f(dl[o]);
        bv[j] = bc_f32 ? Bf[o] : to_f(Bt[o]);
        if constexpr (PASS != kMap) cv[j] = bc_f32 ? Cf[o] : to_f(Ct[o]);
      }
    } else {  // whole aligned runs of V (the launch checks W % V == 0)
      const int i0 = REV ? ln.n - V - c : c;  // this run's first element along the line
      load_floats<V, REV>(uv, u + i0);
      load_floats<V, REV>(dv, dl + i0);
      if (bc_f32) {
        load_floats<V, REV>(bv, Bf + i0);
        if constexpr (PASS != kMap) load_floats<V, REV>(cv, Cf + i0);
      } else {
        load_floats<V, REV>(bv, Bt + i0);
        if constexpr (PASS != kMap) load_floats<V, REV>(cv, Ct + i0);
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (TAIL && c + j >= ln.n) break;
      const float raw = dv[j] + bias;
      const float dt = p.softplus ? softplus(raw) : raw;
      const float a = exp2_approx(dt * a2);
      h = fmaf(a, h, dt * uv[j] * bv[j]);
      if constexpr (PASS == kMap || PASS == kSplit) prod *= a;
      if constexpr (PASS != kMap) {
        const int o = cell + j * plane_step;
        const float y = fmaf(Dsum, uv[j], cv[j] * h);
        if constexpr (PASS == kSplit) {
          plane[o] = add ? fmaf(carried[o], h_given, plane[o]) + y : y;
          carried[o] = prod * cv[j];
        } else if constexpr (PASS == kSum) {
          sum[at + j * grid_step] = y + (add ? plane[o] : 0.f);
        } else {
          plane[o] = y + (add ? plane[o] : 0.f);
        }
      }
    }
    at += V * grid_step, cell += V * plane_step;
  }
  return make_float2(prod, h);
}

template <typename T, int V, bool TAIL, bool COL, LinePass PASS, bool MIXED>
__device__ __forceinline__ float2 walk_route(const FusedParams& p, const Line<COL>& ln, int k,
                                             float h, float* plane, float* carried, bool add,
                                             float Dsum) {
  return (p.reversed >> k) & 1
             ? walk_line<T, V, TAIL, true, COL, PASS, MIXED>(p, ln, k, h, plane, carried, add, Dsum)
             : walk_line<T, V, TAIL, false, COL, PASS, MIXED>(p, ln, k, h, plane, carried, add,
                                                               Dsum);
}

// kSplit's last route over the line: its entering state h_in adds carried * h_in to the line's
// cells of `plane` or, with `sum` (the columns: p.partial of the line's channel), is written
// with them to sum, in grid order.
template <bool COL>
__device__ __forceinline__ void fix_line(const FusedParams& p, const Line<COL>& ln,
                                         float* plane, const float* carried, float h_in,
                                         float* sum) {
  const int pr = line_plane_row(p.W), cell_step = COL ? pr : 1;
  const int grid_step = static_cast<int>(ln.step);
#pragma unroll 4
  for (int i = 0; i < ln.n; ++i) {
    const int o = ln.cell + i * cell_step;
    const float y = fmaf(carried[o], h_in, plane[o]);
    if (sum) sum[ln.first + i * grid_step] = y;
    else plane[o] = y;
  }
}

// put(c, pos, cell, fetched) for the pixels of `channels` planes of the block in position
// order, threadIdx.x first and blockDim.x apart (neighbouring threads: neighbouring positions):
// c the channel slot, pos the position in the grid, cell the offset in the channel's plane;
// fetched = fetch(c, pos) for U pixels at a time, all fetched before any is put, so U loads
// are in flight (the backward rows kernel's prologue, loading one at a time, spent 15% of its
// stall samples waiting: ncu).  The pixel's row and column are stepped, not divided.
template <int U, typename Fetch, typename Put>
__device__ __forceinline__ void each_pixel(const FusedParams& p, int channels, Fetch&& fetch,
                                           Put&& put) {
  const int pr = line_plane_row(p.W), threads = blockDim.x;
  const int dcol = threads % p.W, drow = threads / p.W % p.H, dc = threads / p.L;
  int c = threadIdx.x / p.L, row = threadIdx.x % p.L / p.W, col = threadIdx.x % p.W;
  while (c < channels) {
    int cs[U], cells[U], ps[U];
    float v[U];
#pragma unroll
    for (int i = 0; i < U; ++i) {
      cs[i] = c, ps[i] = row * p.W + col, cells[i] = row * pr + col;
      if (c < channels) v[i] = fetch(c, ps[i]);
      col += dcol;
      if (col >= p.W) col -= p.W, ++row;
      row += drow;
      if (row >= p.H) row -= p.H, ++c;
      c += dc;
    }
#pragma unroll
    for (int i = 0; i < U; ++i)
      if (cs[i] < channels) put(cs[i], ps[i], cells[i], v[i]);
  }
}

// put(c, pos, cell) for each pixel of `channels` planes, as above, nothing fetched.
template <typename Put>
__device__ __forceinline__ void each_pixel(const FusedParams& p, int channels, Put&& put) {
  each_pixel<1>(
      p, channels, [](int, int) { return 0.f; },
      [&](int c, int pos, int cell, float) { put(c, pos, cell); });
}

// A block's planes [cpb][H][line_plane_row(W)] (SPLIT: as many again for the carried q C of
// the route walked last) and its lines' maps [K][cpb][lines].  SPLIT: each route walks its
// lines once (kSplit), publishes their maps, and its carried terms are added once those are
// in; else each line's maps are walked first (kMap) and its routes again from their entering
// states (kPlane / kSum): twice the loads and exponentials, for half the shared memory
// (line_fwd_split).  Columns sum their routes in the plane and write the last into p.partial;
// rows sum theirs and sum_k D_k u in the plane, and the block writes y from the planes plus
// p.partial, coalesced (a row thread's own stores would each touch another row).
// (4 blocks of the most threads: at most 64 registers; 3, 80 registers, for columns in runs of
// 8, which spill at 64: VMamba's stage 1, whose 58 KiB blocks fit 3 an SM anyway.)
template <typename T, int V, bool TAIL, bool COL, bool MIXED, bool SPLIT>
__global__ void __launch_bounds__(kLineMaxThreads, COL && V == 8 ? 3 : 4)
    line_fwd_kernel(const FusedParams p) {
  extern __shared__ float4 line_smem_[];
  float* planes = reinterpret_cast<float*>(line_smem_);
  float2* maps = reinterpret_cast<float2*>(planes + line_maps_offset(p, SPLIT));
  const Line<COL> ln(p);
  const int plane_size = p.H * line_plane_row(p.W);
  float* plane = planes + ln.plane * plane_size;
  float* carried = SPLIT ? plane + p.cpb * plane_size : nullptr;
  float Dsum = 0.f;  // sum_k D_k u: added by the rows' first route
  if (!COL && p.D && ln.active(p))
    for (int k = 0; k < p.K; ++k) Dsum += p.D[k * p.dim + ln.d];
  const auto h_in = [&](int k) {  // the state entering this line on route k
    float h = 0.f;
    for (int s = ln.slot(p, k, k) - ln.rank(p, k); s < ln.slot(p, k, k); ++s)
      h = fmaf(maps[s].x, h, maps[s].y);
    return h;
  };
  bool add = false;  // the first route stores
  if constexpr (SPLIT) {
    float h = 0.f;  // the state entering the line on the route walked last
    for (int k = 0; k < p.K; ++k) {
      if (!ln.walks(p, k)) continue;  // (the same for every thread of the block)
      if (ln.active(p))
        maps[ln.slot(p, k, k)] =
            walk_route<T, V, TAIL, COL, kSplit, MIXED>(p, ln, k, h, plane, carried, add, Dsum);
      __syncthreads();  // every line's map of route k
      if (ln.active(p)) h = h_in(k);
      add = true, Dsum = 0.f;
    }
    if (ln.active(p) && add)
      fix_line(p, ln, plane, carried, h, COL ? partial_row(p, ln.b, ln.d) : nullptr);
  } else {
    if (ln.active(p))
      for (int k = 0; k < p.K; ++k)
        if (ln.walks(p, k))
          maps[ln.slot(p, k, k)] =
              walk_route<T, V, TAIL, COL, kMap, MIXED>(p, ln, k, 0.f, plane, carried, false, 0.f);
    __syncthreads();
    if (ln.active(p)) {
      int last = -1;
      for (int k = 0; k < p.K; ++k) last = ln.walks(p, k) ? k : last;
      for (int k = 0; k < p.K; ++k) {
        if (!ln.walks(p, k)) continue;
        if (COL && k == last)
          walk_route<T, V, TAIL, COL, kSum, MIXED>(p, ln, k, h_in(k), plane, carried, add, 0.f);
        else
          walk_route<T, V, TAIL, COL, kPlane, MIXED>(p, ln, k, h_in(k), plane, carried, add, Dsum);
        add = true, Dsum = 0.f;
      }
    }
  }
  if (COL) return;
  __syncthreads();
  const int b = blockIdx.x % p.batch, d0 = (blockIdx.x / p.batch) * p.cpb;
  const float* partial = p.partial ? partial_row(p, b, d0) : nullptr;
  each_pixel<8>(
      p, p.cpb, [&](int c, int pos) { return partial ? partial[c * p.L + pos] : 0.f; },
      [&](int c, int pos, int cell, float columns) {
        const float y = (planes[c * plane_size + cell] + columns) * p.y_scale;
        const int64_t o = b * p.sy_b + (d0 + c) * p.sy_d + pos;
        if (p.y_f32) static_cast<float*>(p.y)[o] = y;
        else static_cast<T*>(p.y)[o] = from_f<T>(y);
      });
}

// One launch of a line kernel over one orientation: a block per cpb channels of a batch.
template <typename Kernel>
void launch_lines(Kernel kernel, size_t smem, const FusedParams& p, bool col,
                  cudaStream_t stream) {
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  const int threads = (p.cpb * (col ? p.W : p.H) + 31) / 32 * 32;
  kernel<<<p.batch * (p.dim / p.cpb), threads, smem, stream>>>(p);
}

// rows(V) with V = p.vec, elements per row load: the widest that every row's alignment allows
// (ops.cpp), 8 for 2-byte types only (16 bytes).
template <typename T, typename Rows>
void with_row_vec(const FusedParams& p, Rows&& rows) {
  switch (p.vec) {
    case 8:
      if constexpr (sizeof(T) == 2) return rows(std::integral_constant<int, 8>{});
      [[fallthrough]];
    case 4: return rows(std::integral_constant<int, 4>{});
    case 2: return rows(std::integral_constant<int, 2>{});
    default: return rows(std::integral_constant<int, 1>{});
  }
}

template <typename T, int V, bool COL, bool TAIL = false>
void launch_line_orientation(const FusedParams& p, cudaStream_t stream) {
  const bool split = line_fwd_split(p, COL);
  auto kernel = split ? line_fwd_kernel<T, V, TAIL, COL, false, true>
                      : line_fwd_kernel<T, V, TAIL, COL, false, false>;
  if constexpr (sizeof(T) == 2) {
    if (p.bc_f32)
      kernel = split ? line_fwd_kernel<T, V, TAIL, COL, true, true>
                     : line_fwd_kernel<T, V, TAIL, COL, true, false>;
  }
  launch_lines(kernel, line_smem_bytes(p, COL), p, COL, stream);
}

// Columns (when any route walks them) into p.partial, then rows into y.
template <typename T>
void launch_line_fwd(const FusedParams& p, cudaStream_t stream) {
  if (p.transposed) {  // columns V steps at a time (loads in flight), 7 where that leaves no
                       // tail (VMamba's 14, 7)
    if (p.H % 8 == 0) launch_line_orientation<T, 8, true>(p, stream);
    else if (p.H % 4 == 0) launch_line_orientation<T, 4, true>(p, stream);
    else if (p.H % 7 == 0) launch_line_orientation<T, 7, true>(p, stream);
    else launch_line_orientation<T, 4, true, true>(p, stream);
  }
  with_row_vec<T>(p, [&](auto v) { launch_line_orientation<T, v(), false>(p, stream); });
}

// ---------------------------------------------------------------------------- the backward
// The adjoint g_t = dL/dh_t = C_t dy_t + a_{t+1} g_{t+1} runs against the route: what crosses
// from a line to the line walked before it is the carry a g of the line's first step, and a
// line maps the carry entering it to P carry + S', with S' = sum_j q_j C_j dy_j (q_j: the
// product of the decays up to step j).  So a thread walks its line once for (P, S, S') and the
// states (from zero) before each chunk of CH steps (line_chunk); folds the earlier lines' maps into
// its entering state and the later lines' into its entering carry; then walks its chunks last
// to first, recomputing each chunk's states in registers and stepping the adjoint back through
// them.  du sums its routes in the thread's own line of the block's planes (as the forward's
// y); dB / dC sum the block's channels in shared memory, added to the float32 outputs after
// each route, or go to those outputs by atomics as the walk goes (BcSum, csrc/scan.h).

// How a block sums its channels' dB / dC terms of a route into its pair of planes: each channel
// stores into a pair of its own, summed when the route is done (kBcOwn, where they fit); else,
// rows: a line's channels, in neighbouring lanes, sum theirs by shuffles and one lane stores
// each sum (kBcLanes; slower than kBcOwn at VMamba's stages 2-4); columns: a warp's halves
// take the same 16 columns of a pair of channels (kByPair: 32-byte runs of a row, where lanes
// by line would cut the coalesced loads to a few columns), sum the pair by one shuffle and add
// that into one pair of planes with shared float atomics (compare-and-swap loops, one a step
// and lane: kBcPairs; −3.5% / −5% of the backward at VMamba-T's stages 1 / 2 on an H100 against
// two atomics a lane and step, one for each plane).  kBcGlobal: the same sums, rows' and
// columns', added by the lanes that hold them to dB / dC themselves (global atomics without a
// result, which the L2 takes without a compare-and-swap: no plane pair, no pass a route adding
// it to the outputs; a block's channels each add their own, where the planes' pass added one
// sum of them).  bench/NOTES.md has the measurements.

// kBcLanes: db / dc of the same cell from the `channels` neighbouring lanes of a line (this
// one's slot: channel), summed; channel 0 stores dB's sum and channel 1 dC's.  WARP: every lane
// of the warp walks a line, so the shuffles name the whole warp (a mask of the lanes with lines
// costs a convergence check a shuffle, ~6 instructions).  The steps are unrolled, each taken
// where it is within `channels` (uniform: p.cpb), instead of a loop.
// (lanes_sum: the sum channel 0 holds of db, channel 1 of dc; channels > 1)
template <bool WARP>
__device__ __forceinline__ float lanes_sum(float db, float dc, int channel, int channels,
                                           unsigned lanes) {
  const unsigned mask = WARP ? ~0u : lanes;
#pragma unroll
  for (int o = 16; o > 1; o /= 2)
    if (o < channels) db += __shfl_xor_sync(mask, db, o), dc += __shfl_xor_sync(mask, dc, o);
  const bool odd = channel & 1;  // the last step swaps halves: each lane keeps one sum
  return (odd ? dc : db) + __shfl_xor_sync(mask, odd ? db : dc, 1);
}
template <bool WARP>
__device__ __forceinline__ void lanes_sum_bc(float* bc, int plane_size, int cell, float db,
                                             float dc, int channel, int channels,
                                             unsigned lanes) {
  if (channels == 1) {
    bc[cell] = db, bc[plane_size + cell] = dc;
    return;
  }
  const float sum = lanes_sum<WARP>(db, dc, channel, channels, lanes);
  if (channel < 2) bc[(channel & 1 ? plane_size : 0) + cell] = sum;
}

// kBcPairs: db / dc of the same cell from the two channels of a pair (lanes 16 apart) summed
// by one shuffle (a swap: each lane keeps one sum); the pair's first channel adds dB's sum and
// its second dC's, each into its own plane: bc is the caller's line of the dB plane for the
// first and of the dC plane for the second.  With one channel a block (channels 1), bc is the
// dB plane's line and the lane stores both terms, the dC plane plane_size after it.  WARP as
// kBcLanes.
// (pair_sum: the sum the pair's first channel holds of db, its second of dc)
template <bool WARP>
__device__ __forceinline__ float pair_sum(float db, float dc, unsigned lanes) {
  const bool second = pair_half();
  return (second ? dc : db) + __shfl_xor_sync(WARP ? ~0u : lanes, second ? db : dc, 16);
}
template <bool WARP>
__device__ __forceinline__ void pairs_sum_bc(float* bc, int plane_size, int cell, float db,
                                             float dc, int channels, unsigned lanes) {
  if (channels == 1) {
    bc[cell] = db, bc[plane_size + cell] = dc;
    return;
  }
  atomicAdd(bc + cell, pair_sum<WARP>(db, dc, lanes));
}

// kBcGlobal: the sums as kBcPairs (columns) or kBcLanes (rows) give them, added at `at` of row,
// route k's row of dB, or of dC for the lane holding dC's sum (p.cpb > 1).
template <bool WARP, bool COL>
__device__ __forceinline__ void global_sum_bc(const FusedParams& p, float* row, int at, float db,
                                              float dc, int channel, unsigned lanes) {
  if constexpr (COL) {
    atomicAdd(row + at, pair_sum<WARP>(db, dc, lanes));
  } else {
    const float sum = lanes_sum<WARP>(db, dc, channel, p.cpb, lanes);
    if (channel < 2) atomicAdd(row + at, sum);
  }
}

// Route k over this thread's line: its inputs, its ddelta and its parameters.  MIXED: B / C or
// dy may be float32 beside a half x (p.bc_f32, p.y_f32; else both are T, and the loads are
// not issued both ways).
template <typename T, bool COL, bool MIXED>
struct LineRoute {
  const T *u, *dl;
  const void *B, *C, *dy;
  T* ddelta;
  float a2, A, bias;
  __device__ LineRoute(const FusedParams& p, const Line<COL>& ln, int k) {
    const int row = k * p.dim + ln.d;
    const int64_t g = ln.d / (p.dim / p.G), dlo = k * p.sd_k + ln.b * p.sd_b + ln.d * p.sd_d;
    const size_t bc_size = MIXED && p.bc_f32 ? sizeof(float) : sizeof(T);
    A = p.A[row], a2 = A * kLog2e, bias = p.bias ? p.bias[row] : 0.f;
    u = static_cast<const T*>(p.u) + ln.b * p.su_b + ln.d * p.su_d + ln.first;
    dl = static_cast<const T*>(p.delta) + dlo + ln.first;
    ddelta = static_cast<T*>(p.ddelta) + dlo + ln.first;
    B = static_cast<const char*>(p.B) +
        (k * p.sB_k + ln.b * p.sB_b + g * p.sB_g + ln.first) * bc_size;
    C = static_cast<const char*>(p.C) +
        (k * p.sC_k + ln.b * p.sC_b + g * p.sC_g + ln.first) * bc_size;
    dy = static_cast<const char*>(p.dy) + (ln.b * p.sy_b + ln.d * p.sy_d + ln.first) *
                                              (MIXED && p.y_f32 ? sizeof(float) : sizeof(T));
  }
};

// Where run m of the chunk at step c starts (elements from the line's first): columns run one
// step each, rows whole aligned runs of V (the launch checks W % V == 0); TAIL: steps (runs)
// past the line's end read its first element (run), masked by the caller.
template <int V, bool TAIL, bool REV, bool COL>
__device__ __forceinline__ int line_run_at(const Line<COL>& ln, int c, int m) {
  if constexpr (COL) {
    const int i = c + m;
    return !TAIL || i < ln.n ? (REV ? ln.n - 1 - i : i) * static_cast<int>(ln.step) : 0;
  } else {
    return TAIL && c + (m + 1) * V > ln.n ? 0 : REV ? ln.n - c - (m + 1) * V : c + m * V;
  }
}

// The inputs of a chunk of CH steps as loaded, in runs of V elements in memory order (B, C and
// dy in T: the loads of a chunk can then be issued while the one before it is computed).
template <typename T, int V, int CH>
struct LineChunk {
  Packed<V, T> u[CH / V], dl[CH / V], b[CH / V], cc[CH / V], dy[CH / V];
};

template <typename T, int V, int CH, bool TAIL, bool REV, bool COL>
__device__ __forceinline__ void fetch_line_chunk(const Line<COL>& ln,
                                                 const LineRoute<T, COL, false>& r, int c,
                                                 LineChunk<T, V, CH>& raw) {
  const T *B = static_cast<const T*>(r.B), *C = static_cast<const T*>(r.C),
          *dy = static_cast<const T*>(r.dy);
#pragma unroll
  for (int m = 0; m < CH / V; ++m) {
    const int at = line_run_at<V, TAIL, REV, COL>(ln, c, m);
    raw.u[m] = load_packed<V>(r.u + at), raw.dl[m] = load_packed<V>(r.dl + at);
    raw.b[m] = load_packed<V>(B + at), raw.cc[m] = load_packed<V>(C + at);
    raw.dy[m] = load_packed<V>(dy + at);
  }
}

// A fetched chunk as floats in walk order (REV: each run's last element first), dy scaled by
// y_scale.
template <typename T, int V, int CH, bool REV>
__device__ __forceinline__ void convert_line_chunk(const FusedParams& p,
                                                   const LineChunk<T, V, CH>& raw, float (&u)[CH],
                                                   float (&dl)[CH], float (&b)[CH],
                                                   float (&cc)[CH], float (&dy)[CH]) {
#pragma unroll
  for (int m = 0; m < CH / V; ++m) {
    run_floats<V, REV>(raw.u[m], u + m * V), run_floats<V, REV>(raw.dl[m], dl + m * V);
    run_floats<V, REV>(raw.b[m], b + m * V), run_floats<V, REV>(raw.cc[m], cc + m * V);
    run_floats<V, REV>(raw.dy[m], dy + m * V);
  }
#pragma unroll
  for (int j = 0; j < CH; ++j) dy[j] *= p.y_scale;
}

// Steps c .. c + CH - 1 of the walk as floats: u, delta before its bias, B, C and dy (scaled by
// y_scale), at line_run_at's runs.  MIXED: B / C or dy may be float32 (p.bc_f32, p.y_f32).
template <typename T, int V, int CH, bool TAIL, bool REV, bool COL, bool MIXED>
__device__ __forceinline__ void load_line_chunk(const FusedParams& p, const Line<COL>& ln,
                                                const LineRoute<T, COL, MIXED>& r, int c,
                                                float (&u)[CH], float (&dl)[CH], float (&b)[CH],
                                                float (&cc)[CH], float (&dy)[CH]) {
  if constexpr (!MIXED) {
    LineChunk<T, V, CH> raw;
    fetch_line_chunk<T, V, CH, TAIL, REV>(ln, r, c, raw);
    return convert_line_chunk<T, V, CH, REV>(p, raw, u, dl, b, cc, dy);
  } else {
    const float *Bf = static_cast<const float*>(r.B), *Cf = static_cast<const float*>(r.C);
    const T *Bt = static_cast<const T*>(r.B), *Ct = static_cast<const T*>(r.C);
    const float* dyf = static_cast<const float*>(r.dy);
    const T* dyt = static_cast<const T*>(r.dy);
#pragma unroll
    for (int m = 0; m < CH / V; ++m) {
      const int at = line_run_at<V, TAIL, REV, COL>(ln, c, m);
      float(&uv)[V] = *reinterpret_cast<float(*)[V]>(u + m * V);
      float(&dv)[V] = *reinterpret_cast<float(*)[V]>(dl + m * V);
      float(&bv)[V] = *reinterpret_cast<float(*)[V]>(b + m * V);
      float(&cv)[V] = *reinterpret_cast<float(*)[V]>(cc + m * V);
      float(&yv)[V] = *reinterpret_cast<float(*)[V]>(dy + m * V);
      load_floats<V, REV>(uv, r.u + at);
      load_floats<V, REV>(dv, r.dl + at);
      if (p.bc_f32) load_floats<V, REV>(bv, Bf + at), load_floats<V, REV>(cv, Cf + at);
      else load_floats<V, REV>(bv, Bt + at), load_floats<V, REV>(cv, Ct + at);
      if (p.y_f32) load_floats<V, REV>(yv, dyf + at);
      else load_floats<V, REV>(yv, dyt + at);
    }
#pragma unroll
    for (int j = 0; j < CH; ++j) dy[j] *= p.y_scale;
  }
}

// dt = softplus(raw) (or raw) and its derivative, from one exponential
__device__ __forceinline__ float2 dt_and_slope(float raw, bool softplus) {
  if (!softplus) return make_float2(raw, 1.f);
  const float e = __expf(fminf(raw, 20.f));
  return raw > 20.f ? make_float2(raw, 1.f) : make_float2(__logf(1.f + e), __fdividef(e, 1.f + e));
}

// The first walk: the line's (P, S, S') and, at checkpoints[(i - 1) * stride], the (product of
// decays, state from zero) before chunk i > 0.
template <typename T, int V, int CH, bool TAIL, bool REV, bool COL, bool MIXED>
__device__ __forceinline__ float3 line_bwd_map(const FusedParams& p, const Line<COL>& ln,
                                               const LineRoute<T, COL, MIXED>& r,
                                               float2* checkpoints, int stride) {
  float P = 1.f, h = 0.f, S2 = 0.f;
  // the next chunk's loads in flight while this one is computed (ncu had put ~12% of the rows
  // kernel's stall samples on this walk's first use of its loads); MIXED loads each at its turn
  [[maybe_unused]] LineChunk<T, V, CH> next;
  if constexpr (!MIXED) fetch_line_chunk<T, V, CH, TAIL, REV>(ln, r, 0, next);
  for (int c = 0; c < ln.n; c += CH) {
    if (c) *checkpoints = make_float2(P, h), checkpoints += stride;
    float u[CH], dl[CH], b[CH], cc[CH], dy[CH];
    if constexpr (MIXED) {
      load_line_chunk<T, V, CH, TAIL, REV, COL>(p, ln, r, c, u, dl, b, cc, dy);
    } else {
      convert_line_chunk<T, V, CH, REV>(p, next, u, dl, b, cc, dy);
      if (c + CH < ln.n) fetch_line_chunk<T, V, CH, TAIL, REV>(ln, r, c + CH, next);
    }
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const bool in = !TAIL || c + j < ln.n;
      const float dt = in ? dt_and_slope(dl[j] + r.bias, p.softplus).x : 0.f;
      const float a = exp2_approx(dt * r.a2);
      h = fmaf(a, h, dt * u[j] * b[j]);
      P *= a;
      if (in) S2 = fmaf(P, cc[j] * dy[j], S2);
    }
  }
  return make_float3(P, h, S2);
}

// The second walk, chunks last to first, from the line's entering state h_in and carry.  mine:
// this thread's line in its channel's du plane, bc its line in the dB plane (its channel's own
// with kBcOwn; the dC plane follows at plane_size), summed as SUM says; kBcGlobal: into route
// k's row `out` of dB, or of dC where `dc` (a block-wide offset and a flag: a pointer of each
// thread's own, kept over the walk, cost the chunk-of-4 kernels 20-80 bytes of spills); sums:
// its channel's (dA, ddelta_bias) of route k, dD (with_dD: the first route over rows adds
// (sum_k D_k) dy to du and sums dy u for dD).  WARP: all but kBcOwn, in a warp whose every
// lane walks a line.
template <typename T, int V, int CH, bool TAIL, bool REV, bool COL, bool MIXED, BcSum SUM,
          bool WARP>
__device__ __forceinline__ void line_bwd_walk(const FusedParams& p, const Line<COL>& ln,
                                              const LineRoute<T, COL, MIXED>& r,
                                              const float2* checkpoints, int stride, float h_in,
                                              float carry, float* mine, float* bc, int plane_size,
                                              int64_t out, bool dc, float* sums, float* dD,
                                              float Dsum, bool with_dD) {
  const int cell_step = COL ? line_plane_row(p.W) : 1;
  float dA = 0.f, dbias = 0.f, dDu = 0.f;
  for (int ci = (ln.n - 1) / CH; ci >= 0; --ci) {
    const int c = ci * CH;
    const float2 ck = ci ? checkpoints[(ci - 1) * stride] : make_float2(1.f, 0.f);
    float u[CH], dl[CH], b[CH], cc[CH], dy[CH];
    load_line_chunk<T, V, CH, TAIL, REV, COL>(p, ln, r, c, u, dl, b, cc, dy);
    float dt[CH], slope[CH], a[CH], h[CH + 1], dd[CH];
    h[0] = fmaf(ck.x, h_in, ck.y);  // h[j]: the state before step j, h[j + 1] after it
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const float2 ds = dt_and_slope(dl[j] + r.bias, p.softplus);
      dt[j] = !TAIL || c + j < ln.n ? ds.x : 0.f, slope[j] = ds.y;
      a[j] = exp2_approx(dt[j] * r.a2);
      h[j + 1] = fmaf(a[j], h[j], dt[j] * u[j] * b[j]);
    }
#pragma unroll
    for (int j = CH - 1; j >= 0; --j) {
      if (TAIL && c + j >= ln.n) continue;
      const int i = REV ? ln.n - 1 - (c + j) : c + j;  // along the line
      const float g = fmaf(cc[j], dy[j], carry);
      const float dlog = g * a[j] * h[j];  // dL/d(dt A) at this step
      const float ddt = fmaf(dlog, r.A, g * b[j] * u[j]) * slope[j];
      dA = fmaf(dlog, dt[j], dA), dbias += ddt, dd[j] = ddt;
      if constexpr (COL) r.ddelta[i * ln.step] = from_f<T>(ddt);
      const int cell = i * cell_step;
      mine[cell] += fmaf(g * dt[j], b[j], Dsum * dy[j]);
      if constexpr (SUM == kBcOwn) {  // this thread's cells of its channel's planes: no other
        bc[cell] = g * dt[j] * u[j], bc[plane_size + cell] = dy[j] * h[j + 1];  // writes them
      } else if constexpr (SUM == kBcLanes) {
        lanes_sum_bc<WARP>(bc, plane_size, cell, g * dt[j] * u[j], dy[j] * h[j + 1], ln.plane,
                           p.cpb, ln.lanes(p));
      } else if constexpr (SUM == kBcPairs) {
        pairs_sum_bc<WARP>(bc, plane_size, cell, g * dt[j] * u[j], dy[j] * h[j + 1], p.cpb,
                           ln.lanes(p));
      } else {
        global_sum_bc<WARP, COL>(p, (dc ? p.dC : p.dB) + out,
                                 static_cast<int>(ln.first) + i * static_cast<int>(ln.step),
                                 g * dt[j] * u[j], dy[j] * h[j + 1], ln.plane, ln.lanes(p));
      }
      if (with_dD) dDu = fmaf(dy[j], u[j], dDu);
      carry = a[j] * g;
    }
    if constexpr (!COL) {  // rows: ddelta in whole runs (a thread's stores: one row)
#pragma unroll
      for (int m = 0; m < CH / V; ++m)
        if (!TAIL || c + (m + 1) * V <= ln.n)
          store_floats<V, REV>(*reinterpret_cast<const float(*)[V]>(dd + m * V),
                               r.ddelta + (REV ? ln.n - c - (m + 1) * V : c + m * V));
    }
  }
  atomicAdd(sums, dA);
  atomicAdd(sums + 1, dbias);
  if (with_dD) atomicAdd(dD, dDu);
}

template <typename T, int V, int CH, bool TAIL, bool COL, bool MIXED>
__device__ __forceinline__ float3 line_bwd_map_route(const FusedParams& p, const Line<COL>& ln,
                                                     int k, float2* checkpoints, int stride) {
  const LineRoute<T, COL, MIXED> r(p, ln, k);
  return (p.reversed >> k) & 1
             ? line_bwd_map<T, V, CH, TAIL, true, COL>(p, ln, r, checkpoints, stride)
             : line_bwd_map<T, V, CH, TAIL, false, COL>(p, ln, r, checkpoints, stride);
}

// One launch per orientation, as the forward: the columns' du into p.partial, then the rows'
// (added to it) into du.  (line_bwd_min_blocks(CH) blocks of the most threads an SM: the
// registers hold a chunk's states, decays and inputs.)
template <typename T, int V, int CH, bool TAIL, bool COL, bool MIXED, BcSum SUM>
__global__ void __launch_bounds__(kLineMaxThreads, line_bwd_min_blocks(CH))
line_bwd_kernel(const FusedParams p) {
  constexpr bool OWN = SUM == kBcOwn, GLOBAL = SUM == kBcGlobal;
  extern __shared__ float4 line_smem_[];
  const LineBwdLayout lay = line_bwd_layout(p, COL, SUM, CH);
  float* const smem = reinterpret_cast<float*>(line_smem_);
  float *planes = smem, *bc = smem + lay.bc, *sums = smem + lay.sums;
  float2* maps = reinterpret_cast<float2*>(smem + lay.maps);
  float* adjoint = smem + lay.adjoint;
  float2* checkpoints = reinterpret_cast<float2*>(smem + lay.checkpoints);
  const Line<COL> ln(p, OWN ? kByChannel : COL ? kByPair : kByLine);
  const int pr = line_plane_row(p.W), plane_size = line_bwd_plane(p, COL, SUM);
  const int threads = p.cpb * ln.nlines;
  const int chunks = (ln.n - 1) / CH;  // with a checkpoint
  const int b = blockIdx.x % p.batch, d0 = (blockIdx.x / p.batch) * p.cpb;
  {  // the du planes and the dB / dC planes after them, zeroed 16 bytes a store
    const int n = (p.cpb + line_bc_planes(p, SUM)) * plane_size;
    for (int i = threadIdx.x; i < n / 4; i += blockDim.x) line_smem_[i] = make_float4(0, 0, 0, 0);
    for (int i = n / 4 * 4 + threadIdx.x; i < n; i += blockDim.x) smem[i] = 0.f;
  }
  for (int i = threadIdx.x; i < p.cpb * (2 * p.K + 1); i += blockDim.x) sums[i] = 0.f;
  // this thread's line in its channel's own dB plane, or in the block's dB plane: the dC plane
  // (kBcGlobal: dC) for a pair's second channel, for a line's channel 1 (kBcGlobal rows)
  const bool dc_lane = COL ? !OWN && ln.paired(p) && pair_half() : GLOBAL && ln.plane == 1;
  float* const my_bc = bc + (OWN ? 2 * ln.plane : dc_lane) * plane_size + ln.cell;
  if (ln.active(p))
    for (int k = 0, o = 0; k < p.K; ++k)
      if (ln.walks(p, k)) {
        const float3 m = line_bwd_map_route<T, V, CH, TAIL, COL, MIXED>(
            p, ln, k, checkpoints + o * chunks * threads + ln.index(p), threads);
        maps[ln.slot(p, k, o)] = make_float2(m.x, m.y), adjoint[ln.slot(p, k, o)] = m.z;
        ++o;
      }
  __syncthreads();
  float Dsum = 0.f;  // sum_k D_k dy into du, by the rows' first route
  if (!COL && p.D && ln.active(p))
    for (int k = 0; k < p.K; ++k) Dsum += p.D[k * p.dim + ln.d];
  bool first = !COL;
  for (int k = 0, o = 0; k < p.K; ++k) {
    if (!ln.walks(p, k)) continue;  // (the same for every thread of the block)
    // route k's row of dB / dC (computed where used: kept over the walk, it costs registers)
    const auto out = [&] {
      return ((static_cast<int64_t>(k) * p.batch + b) * p.G + d0 / (p.dim / p.G)) * p.L;
    };
    if (ln.active(p)) {
      const int at = ln.slot(p, k, o), base = at - ln.rank(p, k);
      float h = 0.f, carry = 0.f;
      for (int s = base; s < at; ++s) h = fmaf(maps[s].x, h, maps[s].y);
      for (int s = base + ln.nlines - 1; s > at; --s) carry = fmaf(maps[s].x, carry, adjoint[s]);
      const LineRoute<T, COL, MIXED> r(p, ln, k);
      const float2* ck = checkpoints + o * chunks * threads + ln.index(p);
      float* mine = planes + ln.plane * plane_size + ln.cell;
      float* s = sums + (ln.plane * p.K + k) * 2;
      float* dD = sums + 2 * p.K * p.cpb + ln.plane;
      const auto walk = [&](auto rev, auto warp) {
        line_bwd_walk<T, V, CH, TAIL, decltype(rev)::value, COL, MIXED, SUM, decltype(warp)::value>(
            p, ln, r, ck, threads, h, carry, mine, my_bc, plane_size, GLOBAL ? out() : 0, dc_lane,
            s, dD, Dsum, first);
      };
      const auto by_warp = [&](auto rev) {
        if constexpr (!OWN) {
          if (ln.lanes(p) == ~0u) return walk(rev, std::true_type{});  // whole warps
        }
        walk(rev, std::false_type{});
      };
      if ((p.reversed >> k) & 1) by_warp(std::true_type{});
      else by_warp(std::false_type{});
    }
    first = false, Dsum = 0.f, ++o;
    if constexpr (GLOBAL) continue;  // (each thread's du: its own cells; no barrier a route)
    __syncthreads();  // route k's dB / dC, summed over the block's channels, to the outputs
    // (its row by a multiply-high, not each_pixel: that stepping state, hoisted out of the route
    // loop, stayed live through the walks and spilled 12-24 bytes.  A plane's rows are W + 1
    // apart where W is even, else W: the row is needed for even W only, where W >= 2 and
    // 2^32 / W rounded up gives pos / W exactly for pos < 2^32 / W, past any grid's L)
    const unsigned w_inv = 0xffffffffu / p.W + 1;
    float *const dB_row = p.dB + out(), *const dC_row = p.dC + out();
    for (int pos = threadIdx.x; pos < p.L; pos += blockDim.x) {
      const int cell = pos + (pr - p.W) * static_cast<int>(__umulhi(pos, w_inv));
      if constexpr (OWN) {
        float dB = 0.f, dC = 0.f;
        for (int c = 0; c < p.cpb; ++c)
          dB += bc[2 * c * plane_size + cell], dC += bc[(2 * c + 1) * plane_size + cell];
        atomicAdd(dB_row + pos, dB);
        atomicAdd(dC_row + pos, dC);
      } else {
        atomicAdd(dB_row + pos, bc[cell]);
        atomicAdd(dC_row + pos, bc[plane_size + cell]);
        if constexpr (SUM == kBcPairs) bc[cell] = bc[plane_size + cell] = 0.f;
      }
    }
    __syncthreads();
  }
  if constexpr (GLOBAL) __syncthreads();  // the sums and planes, read by every thread below
  for (int i = threadIdx.x; i < p.cpb * p.K; i += blockDim.x) {
    const int c = i / p.K, k = i - c * p.K, row = k * p.dim + d0 + c;
    if (((p.transposed >> k) & 1) == COL) {
      atomicAdd(p.dA + row, sums[2 * i]);
      if (p.dbias) atomicAdd(p.dbias + row, sums[2 * i + 1]);
    }
    if (!COL && p.dD) atomicAdd(p.dD + row, sums[2 * p.K * p.cpb + c]);
  }
  float* const partial = p.partial ? partial_row(p, b, d0) : nullptr;
  if (COL) {
    each_pixel(p, p.cpb, [&](int c, int pos, int cell) {
      partial[c * p.L + pos] = planes[c * plane_size + cell];
    });
  } else {  // du: the rows' sum in the planes plus the columns' in p.partial
    each_pixel<8>(
        p, p.cpb, [&](int c, int pos) { return partial ? partial[c * p.L + pos] : 0.f; },
        [&](int c, int pos, int cell, float columns) {
          static_cast<T*>(p.du)[b * p.su_b + (d0 + c) * p.su_d + pos] =
              from_f<T>(planes[c * plane_size + cell] + columns);
        });
  }
}

// Own dB / dC planes where line_bwd_min_blocks(CH) blocks with them still fit an SM (with one
// channel a block, its pair is the block's: always), else straight to dB / dC where
// SSOPS_LINE_BC_GLOBAL's bit for the orientation and chunk is set (1 / 2: columns / rows in
// chunks of kLineChunk, 4 / 8 in chunks of kLineShortChunk; for A/B runs), else one pair.
// Columns only by default: on an H100 (6e44179) the columns' straight sums took 4.5-5.7% off
// stages 1-2's backward, the rows' added 2-5% (a warp's REDs there touch 8 lines' sectors).
#ifndef SSOPS_LINE_BC_GLOBAL
#define SSOPS_LINE_BC_GLOBAL 5
#endif
template <typename T, int V, bool COL, bool TAIL, int CH>
void launch_line_bwd_orientation(const FusedParams& p, cudaStream_t stream) {
  constexpr BcSum kPlanes = COL ? kBcPairs : kBcLanes;
  constexpr int kBit = (COL ? 1 : 2) << (CH == kLineShortChunk ? 2 : 0);
  constexpr BcSum kShared = SSOPS_LINE_BC_GLOBAL & kBit ? kBcGlobal : kPlanes;
  BcSum sum = p.cpb == 1 || line_bwd_layout(p, COL, kBcOwn, CH).bytes <=
                                line_block_smem(line_bwd_min_blocks(CH))
                  ? kBcOwn
                  : kShared;
  auto kernel = sum == kBcOwn ? line_bwd_kernel<T, V, CH, TAIL, COL, false, kBcOwn>
                              : line_bwd_kernel<T, V, CH, TAIL, COL, false, kShared>;
  // float32 B / C or dy beside a half x: one pair of planes, chunks of kLineChunk (line_bwd_chunk)
  if constexpr (sizeof(T) == 2 && CH != kLineShortChunk) {
    if (p.bc_f32 || p.y_f32)
      sum = kPlanes, kernel = line_bwd_kernel<T, V, CH, TAIL, COL, true, kPlanes>;
  }
  launch_lines(kernel, line_bwd_layout(p, COL, sum, CH).bytes, p, COL, stream);
}

// Columns in chunks of CH steps (7 where H is a multiple of 7 but not of CH), one element a step.
template <typename T, int CH>
void launch_line_bwd_columns(const FusedParams& p, cudaStream_t stream) {
  if (line_chunk(p.H, true, CH) == 7) launch_line_bwd_orientation<T, 1, true, false, 7>(p, stream);
  else if (p.H % CH) launch_line_bwd_orientation<T, 1, true, true, CH>(p, stream);
  else launch_line_bwd_orientation<T, 1, true, false, CH>(p, stream);
}

// Rows in chunks of CH steps, loaded in runs of VEC elements (p.vec) or, if longer, of CH.
template <typename T, int VEC, int CH>
void launch_line_bwd_rows(const FusedParams& p, cudaStream_t stream) {
  constexpr int V = VEC < CH ? VEC : CH;
  if constexpr (V < CH) {
    if (p.W % CH) return launch_line_bwd_orientation<T, V, false, true, CH>(p, stream);
  }
  launch_line_bwd_orientation<T, V, false, false, CH>(p, stream);
}

// Columns (when any route walks them) into p.partial, then rows into du, each orientation in
// the chunks line_bwd_chunk gives it.
template <typename T>
void launch_line_bwd(const FusedParams& p, cudaStream_t stream) {
  if (p.transposed) {
    if (line_bwd_chunk(p, true) == kLineShortChunk)
      launch_line_bwd_columns<T, kLineShortChunk>(p, stream);
    else
      launch_line_bwd_columns<T, kLineChunk>(p, stream);
  }
  const bool short_rows = line_bwd_chunk(p, false) == kLineShortChunk;
  with_row_vec<T>(p, [&](auto v) {
    if (short_rows) return launch_line_bwd_rows<T, v(), kLineShortChunk>(p, stream);
    launch_line_bwd_rows<T, v(), kLineChunk>(p, stream);
  });
}

}  // namespace ssops
