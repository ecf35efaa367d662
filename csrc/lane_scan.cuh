// The selective scan with a channel's states on the lanes, forward and backward, for
// 1 <= N <= 16 along a row-major walk, forwards or backwards, with variable B / C of u's dtype
// (Mamba, Vim's two directions, VMamba's N = 1).  Included by scan_kernels.cuh.  The backward
// is below the forward, which also serves as its first pass (the state after each chunk).
//
// A warp holds 32 / NP channels; lane (c, n) keeps state n of channel c (NP >= N lanes per
// channel, spare lanes hold zeros) and walks the whole sequence, K steps (a chunk) at a time
// (the half-precision forward at 9-16 states: NP = 8 lanes of two states each, fwd_pairs).  A
// block's channels share one batch and B / C group.  Per chunk:
// - the block stages the chunk's B and C rows in shared memory, 16-byte units spread over its
//   threads (one global read per block instead of one per warp: reading them per lane kept the
//   L1 busy), double-buffered, with the next chunk's units loaded into registers meanwhile;
// - the NP lanes of a channel stage dt (after bias and softplus) and dt * u of its K steps in
//   shared memory, E = K / NP steps each, so each exp / log is computed once per step;
// - each lane steps h = exp(dt A_n) h + dt u B_n through the chunk in registers and keeps C_n h
//   per step;
// - a butterfly over the NP lanes sums C_n h over the states and leaves each lane the sums of the
//   E steps it staged: it finishes those outputs (D u, y_in, scale, the z gate), stores them.
// With one lane per channel (NP = 1, N = 1: 32 channels a warp) a lane keeps its chunk's dt and
// dt * u in registers, reads and writes its rows as 16- or 8-byte vectors (a chunk is 32 or 64
// bytes of a row) and has no gate (z: VMamba has none; its registers go to the 16-step rows).
// Every exponential of the recurrence is computed once; one block barrier per chunk.  A backward
// walk takes the same K-step blocks of positions, last block first, each from its last step.
#pragma once

#include <numeric>

namespace ssops {

// Experiment knobs (SSOPS_NVCC_FLAGS, bench/lane_variants.sh): steps per chunk (scan.h), and
// the blocks per SM the registers must allow in half precision with 8+ lanes per channel (80
// registers: two waves at Mamba-LM's 6144 warps instead of three).  The other instances keep 4:
// they stage more steps per lane, or hold B / C as float32, and would spill.
#ifndef SSOPS_LANE_MINB
#define SSOPS_LANE_MINB 6
#endif
#ifndef SSOPS_LANE_NP1_MINB  // one lane per channel: 16-step rows of each input in registers
#define SSOPS_LANE_NP1_MINB 3
#endif
#ifndef SSOPS_LANE_LOOSE_BWD  // 0: the backward packs B / C units as loaded (BCUnits' LOOSE)
#define SSOPS_LANE_LOOSE_BWD 1
#endif
#ifndef SSOPS_LANE_PAIRS_MINB  // the forward's two states a lane (lane_scan_fwd_kernel's NS)
#define SSOPS_LANE_PAIRS_MINB 6
#endif
constexpr int kLaneWarps = 4;             // warps per block
constexpr int lane_min_blocks(int np, int elem_bytes, int ns = 1) {
  return np == 1              ? SSOPS_LANE_NP1_MINB
         : ns == 2            ? SSOPS_LANE_PAIRS_MINB
         : elem_bytes == 2 && np >= 8 ? SSOPS_LANE_MINB
                                      : 4;
}

// A lane's run of E consecutive elements of a row, as loaded: the 32-bit words its loads fill.
// Elements are unpacked where they are used: unpacked as they were loaded, a chunk's prefetch
// waited for its loads at once (ncu: a quarter of the N = 1 backward's stall samples).
template <typename V, int E>
constexpr int kRunWords = (E * static_cast<int>(sizeof(V)) + 3) / 4;

// Element i of a run of V held in words w, as float32.
template <typename V, int W>
__device__ __forceinline__ float run_elem(const uint32_t (&w)[W], int i) {
  if constexpr (sizeof(V) == 4) {
    return __uint_as_float(w[i]);
  } else {
    const uint32_t bits = w[i / 2] >> (16 * (i % 2)) & 0xffffu;
    if constexpr (std::is_same_v<V, __half>)
      return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
    else
      return __uint_as_float(bits << 16);  // bfloat16: the high half of a float32
  }
}

// SPLIT: a word per element, each loaded on its own, for half-precision rows too unaligned for
// word loads: two 2-byte loads packed into one word made the next chunk's prefetch wait for
// them where it was issued (ncu: a quarter of the two-state forward's stall samples).
template <typename V, int E, bool SPLIT = false>
struct Run {
  uint32_t w[SPLIT ? E : kRunWords<V, E>];
  __device__ __forceinline__ float operator[](int i) const {
    if constexpr (SPLIT) {
      const uint32_t one[1] = {w[i]};
      return run_elem<V>(one, 0);
    } else {
      return run_elem<V>(w, i);
    }
  }
};

// What a lane reads itself for one chunk: its E staged steps (forward and backward).
template <typename T, int E, bool SPLIT = false>
struct LaneInputs {
  Run<T, E, SPLIT> u, delta, z;
};

template <typename T, int E, bool SPLIT = false>
struct LaneSteps : LaneInputs<T, E, SPLIT> {
  Run<float, E> y_in;
};

// B and C are shared by the block's channels (one batch and group) and staged in shared memory
// per chunk, as 16-byte units: unit (m, q, n) holds steps [q * VE, (q + 1) * VE) of row n of
// B (m = 0) or C (m = 1), VE = 16 / sizeof(T).  Stored [m][q][n], a lane reading its row's unit
// q meets the other rows' units in consecutive banks.
//
// LOOSE (the backward in half precision, on rows whose units are read element by element: Vim's
// 197 steps): a word per element, each loaded on its own and packed into its unit when staged,
// a chunk later.  Packed as they were loaded, the loading warps waited for the loads there, just
// before the chunk's barrier (PRMT right after the loads in the SASS; bench/NOTES.md).
template <int VE>
struct LooseUnit {
  uint32_t e[VE];
};

template <typename T, int NP, bool LOOSE = false>
struct BCUnits {
  static constexpr int VE = 16 / sizeof(T), Q = kLaneSteps / VE, count = 2 * Q * NP;
  static constexpr int per_thread = (count + 31) / 32;  // at one warp per block
  static constexpr bool loose = LOOSE && sizeof(T) == 2;
  std::conditional_t<loose, LooseUnit<VE>, uint4> v[per_thread];
};

// Where a lane works: state n of channel c of its warp (lane = c * NP + n), the flat channel
// `flat` (batch b, channel d), and the rows it reads.  A block's channels share one batch and
// B / C group (the launcher sizes blocks so), whose rows are those of its first channel, d0.
struct LaneRows {
  int warp, c, n, b, d, d0;
  int64_t flat;
  int64_t u, delta, B, C;  // element offsets: the lane's u / delta rows, the block's B / C
  bool on;                 // a real state
};

template <int NP>
__device__ __forceinline__ LaneRows lane_rows(const ScanParams& p) {
  LaneRows r;
  const int lane = threadIdx.x & 31;
  r.warp = threadIdx.x >> 5, r.c = lane / NP, r.n = lane % NP;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * (blockDim.x / NP);
  r.flat = first + r.warp * (32 / NP) + r.c;
  r.b = static_cast<int>(r.flat / p.dim), r.d = static_cast<int>(r.flat % p.dim);
  r.d0 = static_cast<int>(first % p.dim);
  r.on = r.n < p.N;
  r.u = r.b * p.su_b + r.d * p.su_d;
  r.delta = r.b * p.sd_b + r.d * p.sd_d;
  r.B = r.b * p.sB_b + static_cast<int64_t>(r.d0 / p.dpg_b) * p.sB_g;
  r.C = r.b * p.sC_b + static_cast<int64_t>(r.d0 / p.dpg_c) * p.sC_g;
  return r;
}

// Loads / stores of a lane's run from pos0, a multiple of E (zeros past L): 16-, 8- or 4-byte
// vectors where the run fills them, every row of the launch starts that aligned
// (ScanParams::row_align) and the run lies inside the sequence (one lane per channel: a warp's
// load then touches each of its rows once, not once per element); else element by element.
template <typename V, int E, int W>
__device__ __forceinline__ void load_words(uint32_t (&w)[W], const V* row, int pos0,
                                           const ScanParams& p) {
  constexpr int n = kRunWords<V, E>;
  static_assert(n <= W, "the words hold the run");
  if constexpr (E * sizeof(V) % 8 == 0) {
    if (p.row_align >= 8 && pos0 + E <= p.L) {
      if (n % 4 == 0 && p.row_align == 16) {
#pragma unroll
        for (int q = 0; q < n / 4; ++q) {
          const uint4 x = reinterpret_cast<const uint4*>(row + pos0)[q];
          w[4 * q] = x.x, w[4 * q + 1] = x.y, w[4 * q + 2] = x.z, w[4 * q + 3] = x.w;
        }
      } else {
#pragma unroll
        for (int q = 0; q < n / 2; ++q) {
          const uint2 x = reinterpret_cast<const uint2*>(row + pos0)[q];
          w[2 * q] = x.x, w[2 * q + 1] = x.y;
        }
      }
      return;
    }
  }
  if constexpr (E == 2 && sizeof(V) == 2) {  // two half-precision steps a lane: 8 lanes a channel
    if (p.row_align >= 4 && pos0 + E <= p.L) {
      w[0] = *reinterpret_cast<const uint32_t*>(row + pos0);
      return;
    }
  }
  using Bits = std::conditional_t<sizeof(V) == 2, uint16_t, uint32_t>;
  const Bits* bits = reinterpret_cast<const Bits*>(row) + pos0;
  const auto at = [&](int i) -> uint32_t { return i < E && pos0 + i < p.L ? bits[i] : 0u; };
#pragma unroll
  for (int j = 0; j < n; ++j) w[j] = sizeof(V) == 4 ? at(j) : at(2 * j) | at(2 * j + 1) << 16;
}

template <typename V, int E, bool SPLIT>
__device__ __forceinline__ void load_run(Run<V, E, SPLIT>& v, const V* row, int pos0,
                                         const ScanParams& p) {
  if constexpr (SPLIT) {
    using Bits = std::conditional_t<sizeof(V) == 2, uint16_t, uint32_t>;
    const Bits* bits = reinterpret_cast<const Bits*>(row) + pos0;
#pragma unroll
    for (int i = 0; i < E; ++i) v.w[i] = pos0 + i < p.L ? bits[i] : 0u;
  } else {
    load_words<V, E>(v.w, row, pos0, p);
  }
}

template <typename V>
__device__ __forceinline__ uint32_t bits_of(float v) {
  if constexpr (sizeof(V) == 4) return __float_as_uint(v);
  else return static_cast<uint32_t>(__half_as_ushort(from_f<V>(v)));
}
template <>
__device__ __forceinline__ uint32_t bits_of<__nv_bfloat16>(float v) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(from_f<__nv_bfloat16>(v)));
}

template <typename V, int E>
__device__ __forceinline__ void store_run(V* row, int pos0, const float (&v)[E],
                                          const ScanParams& p) {
  constexpr int n = kRunWords<V, E>;
  if constexpr (E * sizeof(V) % 8 == 0) {
    if (p.row_align >= 8 && pos0 + E <= p.L) {
      uint32_t w[n];
#pragma unroll
      for (int j = 0; j < n; ++j)
        w[j] = sizeof(V) == 4 ? bits_of<V>(v[j])
                              : bits_of<V>(v[2 * j]) | bits_of<V>(v[2 * j + 1]) << 16;
      if (n % 4 == 0 && p.row_align == 16) {
        uint4* dst = reinterpret_cast<uint4*>(row + pos0);
#pragma unroll
        for (int q = 0; q < n / 4; ++q)
          dst[q] = make_uint4(w[4 * q], w[4 * q + 1], w[4 * q + 2], w[4 * q + 3]);
      } else {
        uint2* dst = reinterpret_cast<uint2*>(row + pos0);
#pragma unroll
        for (int q = 0; q < n / 2; ++q) dst[q] = make_uint2(w[2 * q], w[2 * q + 1]);
      }
      return;
    }
  }
  if constexpr (E == 2 && sizeof(V) == 2) {
    if (p.row_align >= 4 && pos0 + E <= p.L) {
      *reinterpret_cast<uint32_t*>(row + pos0) = bits_of<V>(v[0]) | bits_of<V>(v[1]) << 16;
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < E; ++i)
    if (pos0 + i < p.L) row[pos0 + i] = from_f<V>(v[i]);
}

// u, delta (and z, where GATE) of the E steps from pos0.
template <typename T, int E, bool GATE, bool SPLIT>
__device__ __forceinline__ void load_inputs(LaneInputs<T, E, SPLIT>& c, const ScanParams& p,
                                            const LaneRows& r, int pos0) {
  load_run(c.u, static_cast<const T*>(p.u) + r.u, pos0, p);
  load_run(c.delta, static_cast<const T*>(p.delta) + r.delta, pos0, p);
  if (GATE && p.z) load_run(c.z, static_cast<const T*>(p.z) + r.u, pos0, p);
}

template <typename T, int E, bool GATE, bool SPLIT>
__device__ __forceinline__ void load_steps(LaneSteps<T, E, SPLIT>& c, const ScanParams& p,
                                           const LaneRows& r, int pos0) {
  load_inputs<T, E, GATE>(c, p, r, pos0);
  if (p.y_in) {
    load_run(c.y_in, p.y_in + r.u, pos0, p);
  } else {
#pragma unroll
    for (int j = 0; j < E; ++j) c.y_in.w[j] = 0u;
  }
}

// Steps 4q .. 4q + 3 of a chunk's dt, dt * u or dy: the lane's own where it stages the whole
// chunk (NP = 1), else from its channel's shared row.
template <int NP>
__device__ __forceinline__ void quad(float* v, const float* own, const float4* row, int q) {
  if constexpr (NP == 1) {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = own[4 * q + j];
  } else {
    const float4 a = row[q];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  }
}

// This thread's units of the chunk at p0 into registers: 16-byte loads where the rows are
// aligned (ScanParams::contig) and the unit lies inside the sequence; element by element (0 past
// L) otherwise; zeros for states past N.
template <typename T, int NP, bool LOOSE>
__device__ __forceinline__ void load_units(BCUnits<T, NP, LOOSE>& u, const ScanParams& p,
                                           const LaneRows& r, int p0) {
  using U = BCUnits<T, NP, LOOSE>;
#pragma unroll
  for (int j = 0; j < U::per_thread; ++j) {
    const int idx = threadIdx.x + j * blockDim.x;
    const int n = idx % NP, q = idx / NP % U::Q, m = idx / (NP * U::Q);
    const int pos = p0 + q * U::VE;
    u.v[j] = {};
    if (idx >= U::count || n >= p.N) continue;
    const T* row = static_cast<const T*>(m ? p.C : p.B) +
                   (m ? r.C + n * p.sC_n : r.B + n * p.sB_n) + pos;
    if constexpr (U::loose) {
      const auto* bits = reinterpret_cast<const unsigned short*>(row);
#pragma unroll
      for (int k = 0; k < U::VE; ++k)
        if (pos + k < p.L) u.v[j].e[k] = bits[k];
    } else if (p.contig && pos + U::VE <= p.L) {
      u.v[j] = *reinterpret_cast<const uint4*>(row);
    } else {
      Packed<U::VE, T> e;
#pragma unroll
      for (int k = 0; k < U::VE; ++k) e.e[k] = pos + k < p.L ? row[k] : from_f<T>(0.f);
      u.v[j] = e.vec[0];
    }
  }
}

// Staged B / C: [m][q][n] units as loaded (each lane converts its own row's values when it
// reads them: converting once at staging, to float32, doubled the shared-memory traffic and was
// slower; bench/NOTES.md).
template <typename T, int NP>
struct StagedBC {
  uint4 v[BCUnits<T, NP>::count];
};

template <typename T, int NP, bool LOOSE>
__device__ __forceinline__ void store_units(const BCUnits<T, NP, LOOSE>& u,
                                            StagedBC<T, NP>& buf) {
  using U = BCUnits<T, NP, LOOSE>;
#pragma unroll
  for (int j = 0; j < U::per_thread; ++j) {
    const int idx = threadIdx.x + j * blockDim.x;
    if (idx >= U::count) continue;
    if constexpr (U::loose) {
      const uint32_t* e = u.v[j].e;
      buf.v[idx] = uint4{e[0] | e[1] << 16, e[2] | e[3] << 16, e[4] | e[5] << 16,
                         e[6] | e[7] << 16};
    } else {
      buf.v[idx] = u.v[j];
    }
  }
}

// The start of the B / C pipeline: the units of the walk's first chunk (at position start(0))
// staged in buf, those of its second, where there is one, loaded into registers.
template <typename T, int NP, bool LOOSE, typename Start>
__device__ __forceinline__ void start_units(BCUnits<T, NP, LOOSE>& units, StagedBC<T, NP>& buf,
                                            const ScanParams& p, const LaneRows& r,
                                            const Start& start, int nchunks) {
  load_units(units, p, r, start(0));
  store_units(units, buf);
  if (nchunks > 1) load_units(units, p, r, start(1));
}

// This lane's state over the chunk: B / C at each step, as float32.
template <typename T, int NP>
__device__ __forceinline__ void read_staged(const StagedBC<T, NP>& buf, int n,
                                            float (&B)[kLaneSteps], float (&C)[kLaneSteps]) {
  using U = BCUnits<T, NP>;
  Packed<kLaneSteps, T> b, c;
#pragma unroll
  for (int q = 0; q < U::Q; ++q) {
    b.vec[q] = buf.v[q * NP + n];
    c.vec[q] = buf.v[(U::Q + q) * NP + n];
  }
#pragma unroll
  for (int k = 0; k < kLaneSteps; ++k) B[k] = to_f(b.e[k]), C[k] = to_f(c.e[k]);
}

// This lane's rows of state n over the chunk as staged, in T's words, converted where they are
// used (the forward at one state a lane: half float32 rows' registers, and in bfloat16 one
// instruction an element where read_staged's conversion takes two for the high halves).
template <typename T, int NP>
__device__ __forceinline__ void read_staged_words(const StagedBC<T, NP>& buf, int n,
                                                  Run<T, kLaneSteps>& B, Run<T, kLaneSteps>& C) {
  using U = BCUnits<T, NP>;
  static_assert(4 * U::Q == kRunWords<T, kLaneSteps>, "a row's units fill its words");
#pragma unroll
  for (int q = 0; q < U::Q; ++q) {
    const uint4 b = buf.v[q * NP + n], c = buf.v[(U::Q + q) * NP + n];
    B.w[4 * q] = b.x, B.w[4 * q + 1] = b.y, B.w[4 * q + 2] = b.z, B.w[4 * q + 3] = b.w;
    C.w[4 * q] = c.x, C.w[4 * q + 1] = c.y, C.w[4 * q + 2] = c.z, C.w[4 * q + 3] = c.w;
  }
}

// Steps 4q .. 4q + 3 of B (m = 0) or C (m = 1) for state n as float32: from the row read_staged
// (or read_staged_words) filled, or, where STAGED, straight from the staged units: NP = 1 (every
// lane reads the same row, a broadcast, and registers are short) and the forward's two states a
// lane (held rows would spill).
template <typename T, int NP, typename Row, bool STAGED = NP == 1>
__device__ __forceinline__ void bc_quad(float (&v)[4], const Row& row, const StagedBC<T, NP>& buf,
                                        int m, int n, int q) {
  if constexpr (STAGED) {
    using U = BCUnits<T, NP>;
    using V = typename Vec<4, T>::type;  // the quad's 8 or 16 bytes
    const T* unit = reinterpret_cast<const T*>(&buf.v[(m * U::Q + 4 * q / U::VE) * NP + n]);
    union {
      V vec;
      uint32_t w[kRunWords<T, 4>];
    } e;
    e.vec = *reinterpret_cast<const V*>(unit + 4 * q % U::VE);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = run_elem<T>(e.w, j);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = row[4 * q + j];
  }
}

// Sums v over the NP lanes of a channel (n: the lane's index among them); lane n is left with
// the sums of v[n * E + i] in v[i], i < E = K / NP.  Each round a lane keeps the half of its
// values that its partner lane (n ^ o) does not, and adds the partner's copy of that half.
template <int NP, int K, int O = NP / 2>
__device__ __forceinline__ void sum_over_states(float (&v)[K], int n) {
  if constexpr (O >= 1) {
    constexpr int m = K / NP * O;  // values kept this round
    const bool upper = n & O;
#pragma unroll
    for (int i = 0; i < m; ++i) {
      const float give = upper ? v[i] : v[i + m];
      const float keep = upper ? v[i + m] : v[i];
      v[i] = keep + __shfl_xor_sync(kFull, give, O);
    }
    sum_over_states<NP, K, O / 2>(v, n);
  }
}

// Rows of a chunk's per-step values, one row a thread (or lane), stored 4 steps at a time
// (16 bytes) so that the 8 lanes of each store phase hit distinct banks: each row padded by 16
// bytes (PAD), or its quads swizzled, quad q of row r in slot q ^ (r / 2 % (K / 4)), which
// takes a fifth less shared memory.
template <int K, bool PAD>
__device__ __forceinline__ int quad_slot(int row, int q) {
  static_assert(PAD || (K / 4 & (K / 4 - 1)) == 0, "the swizzle needs K / 4 a power of two");
  return PAD ? q : q ^ (row >> 1 & (K / 4 - 1));
}

// What sum_over_states leaves, through shared memory: steps[k][lane] holds each lane's value of
// step k (written a step at a time); v[i] gets step s0 + i summed over channel c's NP lanes,
// read as NP / 4 float4 (rows padded by 4 words: the lanes reading at once meet other banks).
constexpr int kSumRow = 32 + 4;
template <int NP, int K>
__device__ __forceinline__ void sum_steps(const float (&steps)[K][kSumRow], int c, int s0,
                                          float (&v)[K]) {
  static_assert(NP % 4 == 0, "a channel's lanes read in float4");
#pragma unroll
  for (int i = 0; i < K / NP; ++i) {
    const float4* src = reinterpret_cast<const float4*>(&steps[s0 + i][c * NP]);
    float sum = 0.f;
#pragma unroll
    for (int t = 0; t < NP / 4; ++t) {
      const float4 a = src[t];
      sum += (a.x + a.y) + (a.z + a.w);
    }
    v[i] = sum;
  }
}

// NS states a lane (NS = 2: lane n of a channel keeps states n and n + NP), so that the
// per-chunk work that does not grow with the states (staging, loads, the butterfly's rounds,
// the epilogue) is shared by more of them.  SPLIT (rows under 4-byte alignment): u / delta / z
// a word per step (Run).  Its B / C units stay packed as loaded: held loose, the 8 more
// registers spilled at 80 and the forward was 5% slower (bench/NOTES.md).
template <typename T, int NP, bool REV, int NS = 1, bool SPLIT = false>
__global__ void __launch_bounds__(kLaneWarps * 32, lane_min_blocks(NP, sizeof(T), NS))
    lane_scan_fwd_kernel(const ScanParams p) {
  constexpr int K = kLaneSteps, CPW = 32 / NP, E = K / NP, NPS = NP * NS;
  constexpr bool GATE = NP > 1;
  static_assert(NP <= K && K % 4 == 0, "a lane stages at least one step");
  static_assert(NS == 1 || NP > 1, "one lane per channel keeps one state");
  __shared__ StagedBC<T, NPS> bc[2];  // double-buffered
  // per channel: dt, dt * u, each row padded by a float4 so that the quads that a warp's
  // channels read at once sit in different banks
  __shared__ float4 staged[kLaneWarps][NP > 1 ? CPW : 1][2][K / 4 + 1];
  const LaneRows r = lane_rows<NP>(p);
  const int warp = r.warp, c = NP > 1 ? r.c : 0, n = r.n, d = r.d;
  const int64_t flat = r.flat;
  float a2[NS], h[NS];  // state n + s * NP: A log2(e), and the state
#pragma unroll
  for (int s = 0; s < NS; ++s) {
    const int j = n + s * NP;
    a2[s] = j < p.N ? p.A[static_cast<int64_t>(d) * p.N + j] * kLog2e : 0.f;
    h[s] = 0.f;
  }
  const float Dd = p.D ? p.D[d] : 0.f;
  const float bias = p.bias ? p.bias[d] : 0.f;
  float* dt_s = reinterpret_cast<float*>(staged[warp][c][0]);
  float* dtu_s = reinterpret_cast<float*>(staged[warp][c][1]);
  const int s0 = n * E;  // the steps of the chunk this lane stages

  const int nchunks = (p.L + K - 1) / K;
  const auto start = [&](int ci) { return (REV ? nchunks - 1 - ci : ci) * K; };  // position
  // the states after chunk ci (the backward's checkpoints), or after the walk
  const auto store_states = [&](float* dst, int64_t row) {
#pragma unroll
    for (int s = 0; s < NS; ++s)
      if (n + s * NP < p.N) dst[row * p.N + n + s * NP] = h[s];
  };
  LaneSteps<T, E, SPLIT> cur;
  BCUnits<T, NPS> units;
  load_steps<T, E, GATE>(cur, p, r, start(0) + s0);
  start_units(units, bc[0], p, r, start, nchunks);
  __syncthreads();
  for (int ci = 0; ci < nchunks; ++ci) {
    const int p0 = start(ci);
    LaneSteps<T, E, SPLIT> next;
    if (ci + 1 < nchunks) load_steps<T, E, GATE>(next, p, r, start(ci + 1) + s0);

    float u[E], dtv[E], dtuv[E];
#pragma unroll
    for (int i = 0; i < E; ++i) {
      u[i] = cur.u[i];
      const float pre = cur.delta[i] + bias;
      dtv[i] = p0 + s0 + i < p.L ? (p.softplus ? softplus(pre) : pre) : 0.f;
      dtuv[i] = dtv[i] * u[i];
      if constexpr (NP > 1) dt_s[s0 + i] = dtv[i], dtu_s[s0 + i] = dtuv[i];
    }
    // NS = 1: the lane's rows in registers; NS = 2 reads them quad by quad where used (held,
    // they spill at 80 registers)
    constexpr bool HOLD = NP > 1 && NS == 1;
    Run<T, HOLD ? K : 1> B[NS], C[NS];
    if constexpr (HOLD) read_staged_words<T, NPS>(bc[ci & 1], n, B[0], C[0]);
    __syncwarp();
    float yp[K];  // by position in the chunk: sum of C h over the lane's states
#pragma unroll
    for (int w = 0; w < K / 4; ++w) {  // walk order
      const int q = REV ? K / 4 - 1 - w : w;
      float dt[4], dtu[4], Bq[NS][4], Cq[NS][4];
      quad<NP>(dt, dtv, staged[warp][c][0], q);
      quad<NP>(dtu, dtuv, staged[warp][c][1], q);
#pragma unroll
      for (int s = 0; s < NS; ++s) {
        bc_quad<T, NPS, Run<T, HOLD ? K : 1>, !HOLD>(Bq[s], B[s], bc[ci & 1], 0, n + s * NP, q);
        bc_quad<T, NPS, Run<T, HOLD ? K : 1>, !HOLD>(Cq[s], C[s], bc[ci & 1], 1, n + s * NP, q);
      }
#pragma unroll
      for (int jw = 0; jw < 4; ++jw) {
        const int j = REV ? 3 - jw : jw;
#pragma unroll
        for (int s = 0; s < NS; ++s) {
          h[s] = exp2_approx(dt[j] * a2[s]) * h[s] + dtu[j] * Bq[s][j];
          yp[4 * q + j] = s ? fmaf(Cq[s][j], h[s], yp[4 * q + j]) : Cq[s][j] * h[s];
        }
      }
    }
    if (p.y || p.y_pre) {  // (a pass for the chunk states alone writes neither)
      sum_over_states<NP, K>(yp, n);
      float y[E];
#pragma unroll
      for (int i = 0; i < E; ++i) y[i] = (yp[i] + Dd * u[i] + cur.y_in[i]) * p.y_scale;
      if (p.y_pre) store_run(p.y_pre + r.u, p0 + s0, y, p);
      if (p.y) {
        if (GATE && p.z) {
#pragma unroll
          for (int i = 0; i < E; ++i) {
            const float zf = cur.z[i];
            y[i] *= zf * sigmoid(zf);
          }
        }
        if (p.out_f32)
          store_run(static_cast<float*>(p.y) + r.u, p0 + s0, y, p);
        else
          store_run(static_cast<T*>(p.y) + r.u, p0 + s0, y, p);
      }
    }
    if (p.chunk_states && ci + 1 < nchunks)
      store_states(p.chunk_states, static_cast<int64_t>(ci) * p.batch * p.dim + flat);
    // The next chunk's units into the other buffer (its readers, chunk ci - 1, passed the
    // last barrier), then the one after into registers; the barrier also orders this chunk's
    // staged-step reads before the next chunk's writes.
    if (ci + 1 < nchunks) {
      store_units(units, bc[(ci + 1) & 1]);
      if (ci + 2 < nchunks) load_units(units, p, r, start(ci + 2));
      cur = next;
    }
    __syncthreads();
  }
  store_states(p.last, flat);
}

// ------------------------------------------------------------------------------ backward
// The same layout walked back: lane (c, n) runs the adjoint of state n,
//   g_t = C_t dy_t + exp(dt_{t+1} A_n) g_{t+1}     (dy: the gradient of the scan's y,
//                                                   through the gate and y_scale),
// chunk by chunk from the end of the walk.  Each chunk's states are recomputed in registers
// from the state entering it, which the forward stored (ScanParams::chunk_states), so the
// exponentials of a chunk are computed once here and reused by the adjoint.  Per step and lane:
//   dB_t += g_t dt_t u_t,  dC_t += dy_t h_t          (summed over the block's channels, then
//                                                     added to the float32 dB / dC atomically),
//   w = g_t exp(dt_t A) h_{t-1},  dA += w dt_t,
// and over the states (sum_steps, through the warp's shared rows: ~35 instructions a lane and
// chunk a sum, where the forward's butterfly takes ~60): S1 = sum g_t B_t, S2 = sum A w, giving
//   du = dt S1 + D dy,  d(dt) = u S1 + S2.
// The block's per-step dB / dC terms go through shared memory, double-buffered, so they are
// summed after the chunk's one barrier, while the next chunk is computed, and added to dB / dC
// 4 steps at a time (one 16-byte reduction: a float at a time, the atomics took a tenth of the
// Mamba-LM backward; bench/NOTES.md).

// The backward's: the incoming gradient as loaded (u's dtype, or float32 where dy_f32), and,
// where GATE, the forward's y before the gate (for dz).  dy is converted where it is used, a
// chunk after its load: converted as it was loaded, every warp waited for the load there (ncu:
// a sixth of the stall samples; bench/NOTES.md).
template <typename T, int E>
struct LaneGradSteps : LaneInputs<T, E> {
  uint32_t dout[E];  // dy's run: of float32 where dy_f32 (or T is), else of T in the first words
  Run<float, E> y;
  __device__ __forceinline__ float dy(const ScanParams& p, int i) const {
    return sizeof(T) == 4 || p.dy_f32 ? run_elem<float>(dout, i) : run_elem<T>(dout, i);
  }
};

template <typename T, int E, bool GATE>
__device__ __forceinline__ void load_grad_steps(LaneGradSteps<T, E>& c, const ScanParams& p,
                                                const LaneRows& r, int pos0) {
  load_inputs<T, E, GATE>(c, p, r, pos0);
  if (sizeof(T) == 4 || p.dy_f32)
    load_words<float, E>(c.dout, static_cast<const float*>(p.dy) + r.u, pos0, p);
  else
    load_words<T, E>(c.dout, static_cast<const T*>(p.dy) + r.u, pos0, p);
  if (GATE && p.dz) load_run(c.y, p.y_pre + r.u, pos0, p);
}

// Per lane and step, a lane's dB (m = 0) and dC (m = 1) terms: [m][warp * 32 + lane][quad].
template <int K, bool PAD>
struct GradTerms {
  float4 v[2][kLaneWarps * 32][K / 4 + PAD];
  __device__ __forceinline__ float4& at(int m, int row, int q) {
    return v[m][row][quad_slot<K, PAD>(row, q)];
  }
  __device__ __forceinline__ const float4& at(int m, int row, int q) const {
    return v[m][row][quad_slot<K, PAD>(row, q)];
  }
};

#ifndef SSOPS_LANE_BWD_RED4  // 0: dB / dC added a float at a time
#define SSOPS_LANE_BWD_RED4 1
#endif
// The block's dB / dC terms of the chunk at p0 summed over its channels and added to dB / dC:
// one thread per (m, state, 4 steps), reading a float4 per channel.
template <int NP, int K, bool PAD>
__device__ __forceinline__ void add_bc_grads(const GradTerms<K, PAD>& t, const ScanParams& p,
                                             int64_t gB, int64_t gC, int p0) {
  constexpr int CPW = 32 / NP, Q = K / 4;
  const int warps = blockDim.x / 32;
  for (int idx = threadIdx.x; idx < 2 * NP * Q; idx += blockDim.x) {
    const int q = idx % Q, n = idx / Q % NP, m = idx / (Q * NP), pos = p0 + 4 * q;
    if (n >= p.N || pos >= p.L) continue;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < kLaneWarps; ++w) {
      if (w >= warps) break;
#pragma unroll
      for (int c = 0; c < CPW; ++c) {
        const float4 v = t.at(m, w * 32 + c * NP + n, q);
        s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
      }
    }
    float* dst = m ? p.dC + gC + n * p.sdC_n + pos : p.dB + gB + n * p.sdB_n + pos;
#if __CUDA_ARCH__ >= 900 && SSOPS_LANE_BWD_RED4  // one 16-byte reduction for the 4 steps
    if (pos + 4 <= p.L && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
      atomicAdd(reinterpret_cast<float4*>(dst), s);
      continue;
    }
#endif
    const float e[4] = {s.x, s.y, s.z, s.w};
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (pos + j < p.L) atomicAdd(dst + j, e[j]);
  }
}

#ifndef SSOPS_LANE_BWD_SMEM_SUMS  // 0: the backward sums over the states with butterflies
#define SSOPS_LANE_BWD_SMEM_SUMS 1
#endif
#ifndef SSOPS_LANE_BWD_MINB
#define SSOPS_LANE_BWD_MINB 3
#endif
#ifndef SSOPS_LANE_NP1_BWD_MINB  // one lane per channel: 16-step rows in registers (ptxas: ~250)
#define SSOPS_LANE_NP1_BWD_MINB 2
#endif

// LOOSE: the B / C units a word per element, where they are read element by element.
template <typename T, int NP, bool REV, bool LOOSE = false>
__global__ void __launch_bounds__(kLaneWarps * 32,
                                  NP == 1 ? SSOPS_LANE_NP1_BWD_MINB : SSOPS_LANE_BWD_MINB)
    lane_scan_bwd_kernel(const ScanParams p) {
  constexpr int K = kLaneSteps, CPW = 32 / NP, E = K / NP;
  constexpr bool GATE = NP > 1;
  __shared__ StagedBC<T, NP> bc[2];  // double-buffered
  __shared__ float4 staged[kLaneWarps][NP > 1 ? CPW : 1][3][K / 4];  // per channel: dt, dt u, dy
  // NP > 1 sums over the states through shared memory (SUMS: sum_steps' rows), for which the
  // terms trade their padding for the swizzle (static shared memory stops at 48 KiB)
  constexpr bool SUMS = NP > 1 && SSOPS_LANE_BWD_SMEM_SUMS, PAD = !SUMS;
  __shared__ GradTerms<K, PAD> terms[NP > 1 ? 2 : 1];  // double-buffered (NP = 1: summed at once)
  __shared__ float sums[SUMS ? kLaneWarps : 1][K][kSumRow];
  const LaneRows r = lane_rows<NP>(p);
  const int warp = r.warp, c = NP > 1 ? r.c : 0, n = r.n, d = r.d;
  const int64_t flat = r.flat;
  // the block's rows of dB / dC
  const int64_t gB = r.b * p.sdB_b + static_cast<int64_t>(r.d0 / p.dpg_b) * p.sdB_g;
  const int64_t gC = r.b * p.sdC_b + static_cast<int64_t>(r.d0 / p.dpg_c) * p.sdC_g;
  const float An = r.on ? p.A[static_cast<int64_t>(d) * p.N + n] : 0.f, a2 = An * kLog2e;
  const float Dd = p.D ? p.D[d] : 0.f;
  const float bias = p.bias ? p.bias[d] : 0.f;
  float* dt_s = reinterpret_cast<float*>(staged[warp][c][0]);
  float* dtu_s = reinterpret_cast<float*>(staged[warp][c][1]);
  float* dy_s = reinterpret_cast<float*>(staged[warp][c][2]);
  const int s0 = n * E;

  const int nchunks = (p.L + K - 1) / K;
  // iteration it takes the walk's chunk j = nchunks - 1 - it
  const auto start = [&](int it) { return (REV ? it : nchunks - 1 - it) * K; };  // position
  const auto state_in = [&](int it) {  // the state entering it (the forward's, after j - 1)
    const int j = nchunks - 1 - it;
    return j > 0 && r.on
               ? p.chunk_states[(static_cast<int64_t>(j - 1) * p.batch * p.dim + flat) * p.N + n]
               : 0.f;
  };
  float gp = p.dlast && r.on ? p.dlast[flat * p.N + n] : 0.f;  // exp(dt_{t+1} A) g_{t+1}
  float dA = 0.f, dD = 0.f, dbias = 0.f;
  LaneGradSteps<T, E> cur;
  BCUnits<T, NP, LOOSE> units;
  load_grad_steps<T, E, GATE>(cur, p, r, start(0) + s0);
  start_units(units, bc[0], p, r, start, nchunks);
  float h_next = state_in(0);
  __syncthreads();
  for (int it = 0; it < nchunks; ++it) {
    const int p0 = start(it);
    if constexpr (NP > 1)
      if (it > 0) add_bc_grads<NP>(terms[(it - 1) & 1], p, gB, gC, start(it - 1));
    LaneGradSteps<T, E> next;
    if (it + 1 < nchunks) load_grad_steps<T, E, GATE>(next, p, r, start(it + 1) + s0);
    float h = h_next;
    if (it + 1 < nchunks) h_next = state_in(it + 1);

    // dy through the gate and y_scale, of step i of the lane's E
    const auto dy_at = [&](int i) {
      float dy = cur.dy(p, i) * p.y_scale;
      if (GATE && p.z) {
        const float zf = cur.z[i];
        dy *= zf * sigmoid(zf);
      }
      return dy;
    };
    // the chunk's dt; with NP > 1 also dt u and dy, staged for the channel's lanes (NP = 1 works
    // them out again where used: keeping them took more registers than the kernel has)
    float dt_l[E], dy_l[NP > 1 ? E : 1];
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const float pre = cur.delta[i] + bias;
      dt_l[i] = p0 + s0 + i < p.L ? (p.softplus ? softplus(pre) : pre) : 0.f;
      if constexpr (NP > 1) {
        dy_l[i] = dy_at(i);
        dt_s[s0 + i] = dt_l[i], dtu_s[s0 + i] = dt_l[i] * cur.u[i], dy_s[s0 + i] = dy_l[i];
      }
    }
    // dt, dt u (and dy) of steps 4q .. 4q + 3
    const auto quads = [&](int q, float* dt, float* dtu, float* dy) {
      quad<NP>(dt, dt_l, staged[warp][c][0], q);
      if constexpr (NP == 1) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          dtu[j] = dt[j] * cur.u[4 * q + j];
          if (dy) dy[j] = dy_at(4 * q + j);
        }
      } else {
        quad<NP>(dtu, nullptr, staged[warp][c][1], q);
        if (dy) quad<NP>(dy, nullptr, staged[warp][c][2], q);
      }
    };
    float B[NP > 1 ? K : 1], C[NP > 1 ? K : 1];
    if constexpr (NP > 1) read_staged<T, NP>(bc[it & 1], n, B, C);
    __syncwarp();
    // the chunk's states in walk order: exp(dt_k A) h_{k-1} per step (exp(dt_k A) is computed
    // again by the adjoint: keeping it took 16 more registers a lane)
    float ah[K];
#pragma unroll
    for (int w = 0; w < K / 4; ++w) {
      const int q = REV ? K / 4 - 1 - w : w;
      float dt[4], dtu[4], Bq[4];
      quads(q, dt, dtu, nullptr);
      bc_quad<T, NP>(Bq, B, bc[it & 1], 0, n, q);
#pragma unroll
      for (int jw = 0; jw < 4; ++jw) {
        const int j = REV ? 3 - jw : jw, k = 4 * q + j;
        ah[k] = exp2_approx(dt[j] * a2) * h;
        h = fmaf(dtu[j], Bq[j], ah[k]);
      }
    }
    // du, d delta of a step from its sums over the states, S1 = sum g B and S2 = sum A w
    const auto finish = [&](float S1, float S2, float dt, float dy, int k, float& du,
                            float& ddelta) {
      const float u = cur.u[k], pre = cur.delta[k] + bias;
      ddelta = (u * S1 + S2) * (p.softplus ? sigmoid(pre) : 1.f);  // d dt / d delta
      du = fmaf(dt, S1, Dd * dy);
      if (p0 + s0 + k < p.L) dD = fmaf(dy, u, dD), dbias += ddelta;
    };
    // du of u's dtype, or float32 (routes summed afterwards: the SS2D core)
    const auto store_du = [&](const auto& du, int pos0) {
      if (p.du_f32)
        store_run(static_cast<float*>(p.du) + r.u, pos0, du, p);
      else
        store_run(static_cast<T*>(p.du) + r.u, pos0, du, p);
    };
    // the adjoint, walking back
    float s1[NP > 1 ? K : 4], s2[NP > 1 ? K : 4];  // (NP = 1: a quad's, finished at once)
    auto& tm = terms[NP > 1 ? it & 1 : 0];
#pragma unroll
    for (int w = 0; w < K / 4; ++w) {
      const int q = REV ? w : K / 4 - 1 - w;
      float dt[4], dtu[4], dy[4], Bq[4], Cq[4];
      quads(q, dt, dtu, dy);
      bc_quad<T, NP>(Bq, B, bc[it & 1], 0, n, q);
      bc_quad<T, NP>(Cq, C, bc[it & 1], 1, n, q);
      float tB[4], tC[4];  // this lane's dB / dC terms of the 4 steps
#pragma unroll
      for (int jw = 0; jw < 4; ++jw) {
        const int j = REV ? jw : 3 - jw, k = 4 * q + j;
        const float g = fmaf(Cq[j], dy[j], gp);
        tB[j] = g * dtu[j];
        tC[j] = dy[j] * fmaf(dtu[j], Bq[j], ah[k]);
        const float wk = g * ah[k];
        dA = fmaf(wk, dt[j], dA);
        s1[NP > 1 ? k : j] = g * Bq[j];
        s2[NP > 1 ? k : j] = wk * An;
        gp = exp2_approx(dt[j] * a2) * g;
      }
      tm.at(0, threadIdx.x, q) = make_float4(tB[0], tB[1], tB[2], tB[3]);
      tm.at(1, threadIdx.x, q) = make_float4(tC[0], tC[1], tC[2], tC[3]);
      if constexpr (SUMS)  // S1's terms to shared memory at once (S2's wait in registers)
#pragma unroll
        for (int j = 0; j < 4; ++j) sums[warp][4 * q + j][threadIdx.x & 31] = s1[4 * q + j];
      if constexpr (NP == 1) {
        float du[4], ddelta[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) finish(s1[j], s2[j], dt[j], dy[j], 4 * q + j, du[j], ddelta[j]);
        store_du(du, p0 + 4 * q);
        store_run(static_cast<T*>(p.ddelta) + r.delta, p0 + 4 * q, ddelta, p);
      }
    }
    if constexpr (NP == 1) {  // the warp's channels share one B / C row: lane l sums term l
      __syncwarp();
      const int lane = threadIdx.x & 31, m = lane / K, k = lane % K, pos = p0 + k;
      static_assert(PAD, "the lanes' terms are read down a column of padded rows");
      const float* col = reinterpret_cast<const float*>(&tm.at(m, warp * 32, k / 4)) + k % 4;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 32; ++j) sum += col[j * 4 * (K / 4 + PAD)];
      if (pos < p.L) atomicAdd((m ? p.dC + gC : p.dB + gB) + pos, sum);
    }
    if constexpr (NP > 1) {
      if constexpr (SUMS) {
        __syncwarp();
        sum_steps<NP, K>(sums[warp], c, s0, s1);
        __syncwarp();
#pragma unroll
        for (int k = 0; k < K; ++k) sums[warp][k][threadIdx.x & 31] = s2[k];
        __syncwarp();
        sum_steps<NP, K>(sums[warp], c, s0, s2);
      } else {
        sum_over_states<NP, K>(s1, n);
        sum_over_states<NP, K>(s2, n);
      }
      float du[E], ddelta[E];
#pragma unroll
      for (int i = 0; i < E; ++i) {
        finish(s1[i], s2[i], dt_l[i], dy_l[i], i, du[i], ddelta[i]);
        const int pos = p0 + s0 + i;
        if (GATE && p.dz && pos < p.L) {
          const float zf = cur.z[i], sg = sigmoid(zf);
          static_cast<T*>(p.dz)[r.u + pos] =
              from_f<T>(cur.dy(p, i) * cur.y[i] * sg * (1.f + zf * (1.f - sg)));
        }
      }
      store_du(du, p0 + s0);
      store_run(static_cast<T*>(p.ddelta) + r.delta, p0 + s0, ddelta, p);
    }
    if (it + 1 < nchunks) {
      store_units(units, bc[(it + 1) & 1]);
      if (it + 2 < nchunks) load_units(units, p, r, start(it + 2));
      cur = next;
    }
    __syncthreads();
  }
  if constexpr (NP > 1)
    add_bc_grads<NP>(terms[(nchunks - 1) & 1], p, gB, gC, start(nchunks - 1));
  if (r.on) atomicAdd(p.dA + static_cast<int64_t>(d) * p.N + n, dA);
#pragma unroll
  for (int o = NP / 2; o >= 1; o /= 2) {  // over the channel's lanes
    dD += __shfl_xor_sync(kFull, dD, o);
    dbias += __shfl_xor_sync(kFull, dbias, o);
  }
  if (n == 0 && p.dD) atomicAdd(p.dD + d, dD);
  if (n == 0 && p.dbias) atomicAdd(p.dbias + d, dbias);
}

// The forward in half precision at 9-16 states (Mamba's 16) pairs a channel's states on 8
// lanes: 4 channels a warp, half the lanes, and the per-chunk work of two states done once
// (bench/NOTES.md).  The backward keeps one state a lane (its registers are full).  A warp's 4
// channels share a B / C group; groups of 2 take one state a lane.
// -DSSOPS_LANE_FWD_PAIRS=0: one state a lane throughout (experiments).
#ifndef SSOPS_LANE_FWD_PAIRS
#define SSOPS_LANE_FWD_PAIRS 1
#endif
#ifndef SSOPS_LANE_SPLIT_RUNS  // 0: rows under 4-byte alignment pack each lane's two steps
#define SSOPS_LANE_SPLIT_RUNS 1
#endif
template <typename T>
bool fwd_pairs(const ScanParams& p, bool backward, int group) {
  return SSOPS_LANE_FWD_PAIRS && !backward && sizeof(T) == 2 && p.lg == 16 && group % 4 == 0;
}

template <typename T, int NP, bool REV>
void launch_np(const ScanParams& p, bool backward, dim3 grid, dim3 block, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2 && NP > 1)
    if (backward && !p.contig && SSOPS_LANE_LOOSE_BWD)  // (B / C units element by element)
      return void(lane_scan_bwd_kernel<T, NP, REV, true><<<grid, block, 0, stream>>>(p));
  if (backward)
    lane_scan_bwd_kernel<T, NP, REV><<<grid, block, 0, stream>>>(p);
  else
    lane_scan_fwd_kernel<T, NP, REV><<<grid, block, 0, stream>>>(p);
}

template <typename T, bool REV>
void launch_lanes(const ScanParams& p, bool backward, bool pairs, dim3 grid, dim3 block,
                  cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    if (pairs && (p.row_align >= 4 || !SSOPS_LANE_SPLIT_RUNS))
      return void(lane_scan_fwd_kernel<T, 8, REV, 2><<<grid, block, 0, stream>>>(p));
    if (pairs)  // rows under 4-byte alignment (Vim's 197 steps): a word per step
      return void(lane_scan_fwd_kernel<T, 8, REV, 2, true><<<grid, block, 0, stream>>>(p));
  }
  switch (p.lg) {
    case 1: return launch_np<T, 1, REV>(p, backward, grid, block, stream);
    case 4: return launch_np<T, 4, REV>(p, backward, grid, block, stream);
    case 8: return launch_np<T, 8, REV>(p, backward, grid, block, stream);
    default: return launch_np<T, 16, REV>(p, backward, grid, block, stream);
  }
}

// Blocks of up to kLaneWarps warps whose channels share one batch and B / C group: the work
// split (ssops/_cuda_backend.py) makes 32 / lg channels divide the channels per group.
template <typename T>
void launch_lane_scan(const ScanParams& p, bool backward, cudaStream_t stream) {
  const int group = std::gcd(std::gcd(p.dim, p.dpg_b), p.dpg_c);
  const bool pairs = fwd_pairs<T>(p, backward, group);
  const int cpw = 32 / (pairs ? p.lg / 2 : p.lg);
  int warps = kLaneWarps;
  while (group % (warps * cpw)) warps /= 2;
  const int64_t blocks = static_cast<int64_t>(p.batch) * p.dim / (warps * cpw);
  const dim3 grid(static_cast<unsigned>(blocks)), block(warps * 32);
  if (p.reverse) return launch_lanes<T, true>(p, backward, pairs, grid, block, stream);
  launch_lanes<T, false>(p, backward, pairs, grid, block, stream);
}

}  // namespace ssops
