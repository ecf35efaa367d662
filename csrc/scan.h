// Parameters of one route of the selective scan, shared by the host launchers and the kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define SSOPS_HOST_DEVICE __host__ __device__
#else
#define SSOPS_HOST_DEVICE
#endif

namespace ssops {

// Steps per chunk, kept in registers: fewer when a lane keeps more states.  (Overridable
// with -DSSOPS_K1=... / -DSSOPS_K4=... for experiments: see SSOPS_NVCC_FLAGS.)
#ifndef SSOPS_K1
#define SSOPS_K1 8
#endif
#ifndef SSOPS_K4
#define SSOPS_K4 4
#endif
SSOPS_HOST_DEVICE constexpr int chunk_steps(int ns) {
  return ns == 1 ? SSOPS_K1 : ns <= 4 ? SSOPS_K4 : 2;
}
constexpr int kWarpsPerBlock = 4;

// Steps per chunk of the states-on-lanes kernels (csrc/lane_scan.cuh): the backward reads one
// state per channel, state and chunk that its forward pass stored (SSOPS_LANE_K: experiments).
#ifndef SSOPS_LANE_K
#define SSOPS_LANE_K 16
#endif
constexpr int kLaneSteps = SSOPS_LANE_K;

// Shared memory of the backward: per thread and chunk of a segment, NS states and a sum of dt.
inline size_t bwd_smem_bytes(int ns, int seg_len) {
  const int chunks = (seg_len + chunk_steps(ns) - 1) / chunk_steps(ns);
  return static_cast<size_t>(chunks) * (ns + 1) * kWarpsPerBlock * 32 * sizeof(float);
}

// One route of a scan: a (batch, dim, L) problem walked in some order over the positions.
// Work split (chosen in ssops/_cuda_backend.py):
//   a warp holds cpw channels x nseg segments x lg state lanes (= 32 lanes); each lane keeps NS
//   of the channel's N states.  A channel's steps are cut into segments of seg_len steps; the
//   warp scans nseg neighbouring segments side by side (a segment group), combining their
//   carries with a warp scan, and walks the ngroups groups one after another.
struct ScanParams {
  int batch, dim, L, N;
  int H, W;                  // grid of a column-major walk (transpose): seg_len == H
  int dpg_b, dpg_c;          // channels per B / C group (1 for a constant (dim, N) matrix)
  int lg, nseg, cpw, seg_len, ngroups;
  bool c_fast;               // lane order: channels next to each other (else segments)
  bool reverse, transpose, softplus, b_const, c_const;
  bool bc_f32, out_f32, dy_f32, du_f32;  // float32 where the input dtype is not
  bool contig;  // row-major walk over rows of whole aligned chunks: plain vector loads
  int row_align;  // states-on-lanes kernels: 16, 8, 4 or 0, the bytes every row of u's and
                  // delta's layouts (and the buffers laid out like them) is aligned to
  float y_scale;

  // inputs; u, z, dy, y_in, du_in share strides su_*, delta shares sd_* with ddelta
  const void *u, *delta, *z, *dy, *B, *C;  // B / C: the input dtype, or float32 (bc_f32)
  const float *A, *D, *bias, *y_in, *du_in, *dlast;
  int64_t su_b, su_d, su_l, sd_b, sd_d, sd_l;
  int64_t sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l;  // constant: (0, s_dim, s_n, 0)

  // outputs; y / du / dz share su_*, ddelta sd_*.  The gradient of a variable B / C is written
  // as float32 partial sums, one per warp of channels (batch, G, dpg / cpw, N, L), strides
  // sdB_* / sdC_*, summed by the caller; the other gradients are float32 (dim[, N]) sums over
  // the batch, added atomically.
  void *y, *du, *ddelta, *dz;
  float *last, *dA, *dB, *dC, *dD, *dbias;
  int64_t sdB_b, sdB_g, sdB_p, sdB_n, sdB_l, sdC_b, sdC_g, sdC_p, sdC_n, sdC_l;
  float *group_states;       // backward scratch: the state entering each segment group

  // states-on-lanes kernels (ns 0): the forward stores, where given, the state after each chunk
  // but the last ((chunk, batch, dim, N) float32) and its output before the gate (y_pre,
  // float32, u's strides); the backward reads them (y_pre for dz)
  float *chunk_states, *y_pre;
};

}  // namespace ssops

namespace ssops {

// Between images and VMamba's routes over them.  The image side is x, the merged output or
// per-route images (batch, Ki, C, L) in natural (row-major) positions, addressed through strides
// (Ki = 1 or K: route stride sx_k, 0 where the routes share one image); the route side is
// contiguous (batch, K, C, L), each route's steps in its scan order.  Modes:
//   kCrossScan     route[b, k, c, s] = image[b, k, c, pos_k(s)]       (cross_scan, to_routes)
//   kCrossMerge    image[b, c, p]    = sum_k route[b, k, c, step_k(p)] (its adjoint)
//   kCrossUnroute  image[b, k, c, p] = route[b, k, c, step_k(p)]       (from_routes)
enum CrossMode { kCrossScan = 0, kCrossMerge = 1, kCrossUnroute = 2 };
struct CrossParams {
  int batch, C, L, H, W, K, mode;
  unsigned reversed, transposed;  // bit k: route k walks backwards / column-major
  bool channel_fast;              // gathers: channels next to each other in the image
  int64_t sx_b, sx_k, sx_c, sx_l;
  const void* src;
  void* dst;
};

// Every route of whole sequences in one block (bidirectional_scan, the SS2D core): csrc/fused.cuh.
// Tensors indexed by route k, batch b, channel d (and state n), unit stride along L:
//   u (k stride 0 when the routes share x), delta / ddelta (K, batch, dim, L); z, y, dy
//   (batch, dim, L); B / C (K, batch, G, N, L); A (K, dim, N), D / delta_bias (K, dim), float32.
// Gradients: du like u, ddelta like delta, dz like z; dA, dD, dbias and dB / dC (contiguous
// (K, batch, G, N, L)) are float32 sums, zeroed by the caller and added to atomically.
// A block holds cpb channels of one batch and B / C group, 32 * wpc threads per channel, each
// thread `items` consecutive steps of a route.
//
// lines: the SS2D core at N = 1 on csrc/line_scan.cuh instead (one thread per grid line of
// cpb channels; items and wpc unused), vec elements per row load, partial: float32
// (batch, dim, L) scratch for the routes over columns (their y, or their du).
struct FusedParams {
  int batch, dim, L, N, H, W, K, G;
  unsigned reversed, transposed;  // bit k: route k walks backwards / column-major
  int items, wpc, cpb;
  bool preload;                   // every route's inputs loaded up front (short sequences)
  bool lines;
  int vec;
  float* partial;
  bool softplus, bc_f32, y_f32;   // B / C float32; y / dy float32 where the inputs are not
  float y_scale;                  // y = (sum over routes) * y_scale, then * silu(z)
  const void *u, *delta, *z, *B, *C, *dy;
  const float *A, *D, *bias;
  int64_t su_k, su_b, su_d, sd_k, sd_b, sd_d, sz_b, sz_d, sy_b, sy_d;
  int64_t sB_k, sB_b, sB_g, sB_n, sC_k, sC_b, sC_g, sC_n;
  void *y, *du, *ddelta, *dz;
  float *dA, *dB, *dC, *dD, *dbias;
};

// Shared memory of a fused block.  Sequences are stored in the order their routes walk them
// (row- or column-major: routes over columns get a transposed copy of x, y and their gradients),
// each row padded by one word per 32 so that threads reading every ITEMS-th step hit distinct
// banks.  Two sets of per-warp aggregates, the float32 rows (forward: y and B, C; backward:
// g = dL/dy, du, B, C, dB, dC, per-channel sums), then u and delta in the input dtype.
SSOPS_HOST_DEVICE constexpr int fused_row(int L) { return L + (L >> 5) + 1; }
// ks: route slots of the routes' own inputs (K when every route's are loaded up front, else 1);
// own_u: the routes have their own u (bidirectional_scan) rather than sharing x.
SSOPS_HOST_DEVICE inline size_t fused_smem_bytes(int L, int N, int cpb, int wpc, bool backward,
                                                 int elem_bytes, int copies, int ks, bool own_u) {
  const size_t row = fused_row(L), cr = static_cast<size_t>(copies) * cpb * row;
  const size_t nr = static_cast<size_t>(N) * row, kr = static_cast<size_t>(ks) * cpb * row;
  const size_t f32 = (backward ? 2 * cr + 2 * nr + static_cast<size_t>(cpb) * (N + 2) : cr) +
                     2 * ks * nr;
  return 2 * sizeof(float2) * cpb * wpc + sizeof(float) * f32 +
         elem_bytes * ((own_u ? kr : cr) + kr);
}

// The line kernels (csrc/line_scan.cuh): threads and shared memory of a block of one
// orientation (columns: COL).
constexpr int kLineMaxThreads = 256;

// Row stride of a plane in shared memory: odd, so that row threads (one row each) and column
// threads (neighbouring columns) both hit distinct banks.
SSOPS_HOST_DEVICE constexpr int line_plane_row(int W) { return W | 1; }
SSOPS_HOST_DEVICE inline int line_threads(const FusedParams& p, bool col) {
  return p.cpb * (col ? p.W : p.H);
}
// The forward's planes (y; split: then the carried q C, two a channel), then the lines' maps
// [K][cpb][lines] (float2: an even offset).
SSOPS_HOST_DEVICE inline int line_maps_offset(const FusedParams& p, bool split) {
  return ((split ? 2 : 1) * p.cpb * p.H * line_plane_row(p.W) + 1) & ~1;
}
SSOPS_HOST_DEVICE inline size_t line_fwd_bytes(const FusedParams& p, bool col, bool split) {
  return sizeof(float) * line_maps_offset(p, split) +
         sizeof(float2) * line_threads(p, col) * p.K;
}

// The backward's blocks (offsets in floats): the du planes [cpb][H][line_plane_row(W)], the
// dB and dC planes of the route being walked (one pair the block's channels add into, or, OWN,
// a pair per channel [cpb][2], summed when the route is done), the lines' maps of the
// orientation's routes only [route][cpb][lines] (float2: P, S), the adjoint's S' of each, the
// states before each chunk of line_chunk steps but the first [route][chunk - 1][Line::index]
// (float2), then the channels' sums of dA and ddelta_bias [cpb][K][2] and of dD [cpb].  (At
// VMamba-T's first stage, 4 channels of 56 x 56 in chunks of 8, two blocks an SM: 101 KiB,
// 103,632 bytes for rows, 104,208 for columns.)
//
// Its threads hold a chunk's states, decays and inputs in registers: chunks of kLineChunk steps
// take 128 registers (two blocks of 256 threads an SM), of kLineShortChunk 80 (three).  A launch
// takes the short chunks where three of its blocks fit an SM's shared memory too (line_bwd_chunk:
// VMamba-T's stages 2-4, 3-6% faster there than two blocks of chunks of 8; bench/NOTES.md).
constexpr int kLineChunk = 8, kLineShortChunk = 4;
SSOPS_HOST_DEVICE constexpr int line_bwd_min_blocks(int ch) {
  return ch <= kLineShortChunk ? 3 : 2;
}
// The shared memory a block may take where `blocks` of them share an SM (228 KiB on sm_90, of
// which 1 KiB a block is the system's).
SSOPS_HOST_DEVICE constexpr size_t line_block_smem(int blocks) {
  return (228 / blocks - 1) * 1024;
}
// The forward walks each route once (csrc/line_scan.cuh, SPLIT) where its two planes a channel
// still fit three blocks an SM: VMamba-T's stages 2-4, 11-18% faster than walking twice on an
// H100.  Stage 1's 4 channels of 56 x 56 would take 107 KiB, two blocks an SM: 5% slower than
// walking twice in three (bench/NOTES.md).
SSOPS_HOST_DEVICE inline bool line_fwd_split(const FusedParams& p, bool col) {
  return line_fwd_bytes(p, col, true) <= line_block_smem(3);
}
SSOPS_HOST_DEVICE inline size_t line_smem_bytes(const FusedParams& p, bool col) {
  return line_fwd_bytes(p, col, line_fwd_split(p, col));
}
// The steps between checkpoints on lines of n, in chunks of ch: ch, or 7 for columns of a
// multiple of 7 but not of ch (VMamba's 28 at ch 8, 14, 7: no masked steps past the end).  Rows
// keep ch: they load runs of at most p.vec elements, which divide it.
SSOPS_HOST_DEVICE inline int line_chunk(int n, bool col, int ch) {
  return col && n % ch && n % 7 == 0 ? 7 : ch;
}
// Where the line backward sums its channels' dB / dC terms of a route (csrc/line_scan.cuh has
// how): a pair of planes per channel, summed when the route is done (kBcOwn); one pair the
// block's channels add into, by pairs of channels (columns: kBcPairs) or by a line's lanes (rows:
// kBcLanes); or, summed as those, straight into dB / dC in global memory (kBcGlobal: no planes).
enum BcSum { kBcPairs, kBcOwn, kBcLanes, kBcGlobal };
SSOPS_HOST_DEVICE constexpr int line_bc_planes(const FusedParams& p, BcSum sum) {
  return sum == kBcOwn ? 2 * p.cpb : sum == kBcGlobal ? 0 : 2;
}
// The du and dB / dC planes' stride: columns by pairs of channels (lanes 16 apart: all but
// kBcOwn) put their planes 16 banks apart, so that a warp's halves, the same cells of two
// planes, do not conflict.
SSOPS_HOST_DEVICE inline int line_bwd_plane(const FusedParams& p, bool col, BcSum sum) {
  const int cells = p.H * line_plane_row(p.W);
  return col && sum != kBcOwn ? (cells | 31) + 17 : cells;  // (the next multiple of 32, + 16)
}
// The routes walking an orientation (a bit count: a loop over p.K cost the kernels registers).
SSOPS_HOST_DEVICE inline int line_routes(const FusedParams& p, bool col) {
  const unsigned mine = col ? p.transposed : ~p.transposed & ((1u << p.K) - 1);
#ifdef __CUDA_ARCH__
  return __popc(mine);
#else
  return __builtin_popcount(mine);
#endif
}
struct LineBwdLayout {
  int bc, maps, adjoint, checkpoints, sums;
  size_t bytes;
};
SSOPS_HOST_DEVICE inline LineBwdLayout line_bwd_layout(const FusedParams& p, bool col, BcSum sum,
                                                        int ch) {
  const int plane = line_bwd_plane(p, col, sum), lines = col ? p.W : p.H;
  const int n = col ? p.H : p.W, chunks = (n + line_chunk(n, col, ch) - 1) / line_chunk(n, col, ch);
  const int routes = line_routes(p, col);
  LineBwdLayout s;
  s.bc = p.cpb * plane;
  s.maps = (s.bc + line_bc_planes(p, sum) * plane + 1) & ~1;
  s.adjoint = s.maps + 2 * routes * p.cpb * lines;
  s.checkpoints = (s.adjoint + routes * p.cpb * lines + 1) & ~1;
  s.sums = s.checkpoints + 2 * routes * (chunks - 1) * p.cpb * lines;
  s.bytes = sizeof(float) * (s.sums + p.cpb * (2 * p.K + 1));
  return s;
}
// An orientation's chunks: kLineShortChunk where three blocks with one dB / dC plane pair fit an
// SM, else kLineChunk (and always for float32 B / C or dy beside a half x: rare, one instance).
#ifndef SSOPS_LINE_SHORT_CHUNKS  // (0: chunks of kLineChunk everywhere, for A/B runs)
#define SSOPS_LINE_SHORT_CHUNKS 1
#endif
SSOPS_HOST_DEVICE inline int line_bwd_chunk(const FusedParams& p, bool col) {
  const bool fits = line_bwd_layout(p, col, kBcPairs, kLineShortChunk).bytes <=
                    line_block_smem(line_bwd_min_blocks(kLineShortChunk));
  return SSOPS_LINE_SHORT_CHUNKS && fits && !p.bc_f32 && !p.y_f32 ? kLineShortChunk : kLineChunk;
}

void launch_fused_fp32(const FusedParams& p, bool backward, cudaStream_t stream);
void launch_fused_fp16(const FusedParams& p, bool backward, cudaStream_t stream);
void launch_fused_bf16(const FusedParams& p, bool backward, cudaStream_t stream);

// One launcher per input dtype (one .cu file each, compiled in parallel); ns in {1, 4, 16}
// states per lane, or 0: the forward with one state per lane, lg = 4 / 8 / 16 lanes per channel
// (csrc/lane_scan.cuh; contig then means 16-byte aligned B / C rows).
void launch_scan_fp32(const ScanParams& p, int ns, bool backward, cudaStream_t stream);
void launch_scan_fp16(const ScanParams& p, int ns, bool backward, cudaStream_t stream);
void launch_scan_bf16(const ScanParams& p, int ns, bool backward, cudaStream_t stream);
// dtype: 0 float32, 1 float16, 2 bfloat16 (of the source and of the destination)
void launch_cross(const CrossParams& p, int src_dtype, int dst_dtype, cudaStream_t stream);

}  // namespace ssops
