// Python bindings of the cuda backend.  ssops/_cuda_backend.py validates shapes and lays the
// tensors out (ssops.validation has already checked the public inputs); these functions check
// what the kernels rely on, fill the parameters and launch on the current stream.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <vector>

#include "scan.h"

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

int dtype_code(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    default: TORCH_CHECK(false, "ssops cuda: unsupported dtype ", t.scalar_type());
  }
}

void check_cuda(const char* op, const char* name, const Tensor& t, const Tensor& like) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), "ssops cuda ", op, ": ", name,
              " must be on ", like.device(), ", got ", t.device());
}

const float* f32_ptr(const char* op, const char* name, const OptTensor& t, const Tensor& like) {
  if (!t) return nullptr;
  check_cuda(op, name, *t, like);
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(), "ssops cuda ", op, ": ", name,
              " must be a contiguous float32 tensor");
  return t->data_ptr<float>();
}

// A float32 partial sum laid out like u (y_in, du_in).
const float* partial_ptr(const char* op, const char* name, const OptTensor& t, const Tensor& u) {
  if (!t) return nullptr;
  check_cuda(op, name, *t, u);
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->sizes() == u.sizes() &&
                  t->strides() == u.strides(),
              "ssops cuda ", op, ": ", name, " must be float32 with u's shape and strides");
  return t->data_ptr<float>();
}

void same_strides(const char* op, const char* name, const OptTensor& t, const Tensor& u) {
  if (!t) return;
  check_cuda(op, name, *t, u);
  TORCH_CHECK(t->sizes() == u.sizes() && t->strides() == u.strides(), "ssops cuda ", op, ": ",
              name, " must have u's shape and strides");
}

// B or C: (dim, N) constant, (batch, N, L) or (batch, G, N, L).
void set_bc(const Tensor& M, int dim, bool& constant, int& dpg, int64_t* s) {
  if (M.dim() == 2) {
    constant = true, dpg = 1;
    s[0] = 0, s[1] = M.stride(0), s[2] = M.stride(1), s[3] = 0;
  } else if (M.dim() == 3) {
    constant = false, dpg = dim;
    s[0] = M.stride(0), s[1] = 0, s[2] = M.stride(1), s[3] = M.stride(2);
  } else {
    constant = false, dpg = dim / static_cast<int>(M.size(1));
    for (int i = 0; i < 4; ++i) s[i] = M.stride(i);
  }
}

// split = (ns, lg, nseg, cpw, channel_fast, seg_len, ngroups), chosen by _cuda_backend._split.
ssops::ScanParams make_params(const char* op, const Tensor& u, const Tensor& delta,
                              const Tensor& A, const Tensor& B, const Tensor& C,
                              const OptTensor& D, const OptTensor& bias, bool softplus,
                              bool reverse, bool transpose, int64_t H, int64_t W,
                              const std::vector<int64_t>& split) {
  TORCH_CHECK(u.is_cuda() && u.dim() == 3, "ssops cuda ", op,
              ": u must be a (batch, dim, L) CUDA tensor");
  TORCH_CHECK(split.size() == 7, "ssops cuda ", op, ": bad work split");
  check_cuda(op, "delta", delta, u);
  check_cuda(op, "B", B, u);
  check_cuda(op, "C", C, u);
  TORCH_CHECK(delta.sizes() == u.sizes() && delta.scalar_type() == u.scalar_type(), "ssops cuda ",
              op, ": delta must match u");
  TORCH_CHECK(B.scalar_type() == C.scalar_type() &&
                  (B.scalar_type() == u.scalar_type() || B.scalar_type() == at::kFloat),
              "ssops cuda ", op, ": B and C must share u's dtype or be float32");
  ssops::ScanParams p{};
  p.batch = static_cast<int>(u.size(0)), p.dim = static_cast<int>(u.size(1));
  p.L = static_cast<int>(u.size(2)), p.N = static_cast<int>(A.size(1));
  p.H = static_cast<int>(H), p.W = static_cast<int>(W);
  TORCH_CHECK(!transpose || static_cast<int64_t>(p.H) * p.W == p.L, "ssops cuda ", op,
              ": a column-major walk needs H * W == L");
  p.lg = static_cast<int>(split[1]), p.nseg = static_cast<int>(split[2]);
  p.cpw = static_cast<int>(split[3]), p.c_fast = split[4] != 0;
  p.seg_len = static_cast<int>(split[5]), p.ngroups = static_cast<int>(split[6]);
  TORCH_CHECK(p.lg * p.nseg * p.cpw == 32 &&
                  static_cast<int64_t>(p.seg_len) * p.nseg * p.ngroups >= p.L &&
                  (!transpose || p.seg_len == p.H) &&
                  std::max<int64_t>(split[0], 1) * p.lg >= p.N,
              "ssops cuda ", op, ": inconsistent work split");
  p.reverse = reverse, p.transpose = transpose, p.softplus = softplus;
  p.bc_f32 = B.scalar_type() == at::kFloat && u.scalar_type() != at::kFloat;
  p.y_scale = 1.f;
  p.u = u.data_ptr(), p.delta = delta.data_ptr(), p.B = B.data_ptr(), p.C = C.data_ptr();
  p.A = f32_ptr(op, "A", A, u);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == p.dim, "ssops cuda ", op, ": A must be (dim, N)");
  p.D = f32_ptr(op, "D", D, u);
  p.bias = f32_ptr(op, "delta_bias", bias, u);
  p.su_b = u.stride(0), p.su_d = u.stride(1), p.su_l = u.stride(2);
  p.sd_b = delta.stride(0), p.sd_d = delta.stride(1), p.sd_l = delta.stride(2);
  int64_t s[4];
  set_bc(B, p.dim, p.b_const, p.dpg_b, s);
  p.sB_b = s[0], p.sB_g = s[1], p.sB_n = s[2], p.sB_l = s[3];
  set_bc(C, p.dim, p.c_const, p.dpg_c, s);
  p.sC_b = s[0], p.sC_g = s[1], p.sC_n = s[2], p.sC_l = s[3];
  return p;
}

// Whether every chunk of the walk is a whole, aligned block of K elements in every tensor it
// touches (then the kernels use plain vector loads): a row-major walk along unit-stride rows
// whose starts are multiples of K elements, in 16-byte aligned buffers, over whole chunks.
bool contiguous_chunks(const ssops::ScanParams& p, int ns,
                       std::initializer_list<const void*> buffers) {
  const int K = ssops::chunk_steps(ns);
  bool ok = !p.transpose && p.su_l == 1 && p.sd_l == 1 && p.L % K == 0 && p.seg_len % K == 0;
  for (int64_t s : {p.su_b, p.su_d, p.sd_b, p.sd_d}) ok = ok && s % K == 0;
  if (!p.b_const)
    for (int64_t s : {p.sB_b, p.sB_g, p.sB_n}) ok = ok && s % K == 0 && p.sB_l == 1;
  if (!p.c_const)
    for (int64_t s : {p.sC_b, p.sC_g, p.sC_n}) ok = ok && s % K == 0 && p.sC_l == 1;
  for (const void* b : buffers) ok = ok && reinterpret_cast<uintptr_t>(b) % 16 == 0;
  return ok;
}

// The states-on-lanes forward (ns 0; its variable, unit-stride B / C checked by the caller)
// reads B / C rows with 16-byte loads where each row starts on a 16-byte boundary, and u / delta
// element by element.
bool aligned_bc_rows(const ssops::ScanParams& p, int elem_bytes) {
  const int per16 = 16 / elem_bytes;
  bool ok = true;
  for (int64_t s : {p.sB_b, p.sB_g, p.sB_n, p.sC_b, p.sC_g, p.sC_n}) ok = ok && s % per16 == 0;
  for (const void* b : {p.B, p.C}) ok = ok && reinterpret_cast<uintptr_t>(b) % 16 == 0;
  return ok;
}

void launch(const char* op, const ssops::ScanParams& p, int dtype, int ns, bool backward) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  switch (dtype) {
    case 0: ssops::launch_scan_fp32(p, ns, backward, stream); break;
    case 1: ssops::launch_scan_fp16(p, ns, backward, stream); break;
    default: ssops::launch_scan_bf16(p, ns, backward, stream); break;
  }
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "ssops cuda ", op, " (batch=", p.batch, ", dim=", p.dim,
              ", L=", p.L, ", N=", p.N, "): ", cudaGetErrorString(err));
}

// The states-on-lanes kernels (split[0] == 0, csrc/lane_scan.cuh): what they rely on.  Called
// once every buffer is set, for row_align: the bytes (16, 8, 4 or 0) that every row of u's and
// delta's layouts, in every buffer laid out like them, starts on a multiple of.
void check_lanes(const char* op, ssops::ScanParams& p, const Tensor& u) {
  TORCH_CHECK(!p.transpose && p.su_l == 1 && p.sd_l == 1 && p.sB_l == 1 && p.sC_l == 1 &&
                  !p.b_const && !p.c_const && !p.bc_f32 && p.nseg == 1 && p.ngroups == 1 &&
                  (p.lg == 1 || p.lg == 4 || p.lg == 8 || p.lg == 16) &&
                  std::gcd(std::gcd(p.dim, p.dpg_b), p.dpg_c) % (32 / p.lg) == 0,
              "ssops cuda ", op, ": the states-on-lanes kernels need a row-major walk along "
              "unit-stride rows, variable B / C of u's dtype, 1, 4, 8 or 16 lanes, and a warp's "
              "channels in one B / C group");
  TORCH_CHECK(p.lg > 1 || !p.z, "ssops cuda ", op,
              ": the one-lane-per-channel kernels (N = 1) have no gate z");
  const int elem = static_cast<int>(u.element_size());
  p.contig = aligned_bc_rows(p, elem);
  // (float32 buffers laid out like u: at least as aligned as u's rows, in elements)
  auto aligned = [&](int bytes) {
    bool ok = true;
    for (int64_t s : {p.su_b, p.su_d, p.sd_b, p.sd_d}) ok = ok && s * elem % bytes == 0;
    for (const void* b : std::initializer_list<const void*>{p.u, p.delta, p.z, p.y, p.y_in,
                                                           p.y_pre, p.dy, p.du, p.ddelta, p.dz})
      ok = ok && reinterpret_cast<uintptr_t>(b) % bytes == 0;
    return ok;
  };
  p.row_align = aligned(16) ? 16 : aligned(8) ? 8 : aligned(4) ? 4 : 0;
}

// The states-on-lanes forward's chunk states for its backward: float32, one per chunk but the
// last, channel and state.
float* chunk_states_ptr(const char* op, const OptTensor& t, const ssops::ScanParams& p,
                        const Tensor& u) {
  if (!t) return nullptr;
  const int64_t chunks = (p.L + ssops::kLaneSteps - 1) / ssops::kLaneSteps;
  check_cuda(op, "chunk_states", *t, u);
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() &&
                  t->numel() == (chunks - 1) * p.batch * p.dim * p.N,
              "ssops cuda ", op, ": chunk_states must be a contiguous float32 tensor of ",
              (chunks - 1) * p.batch * p.dim * p.N, " elements");
  return t->data_ptr<float>();
}

// The states-on-lanes forward may leave y out, and may also store what its backward reads:
// chunk_states, y_pre (the output before the gate, float32).
void scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
              const Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& bias,
              const OptTensor& y_in, const OptTensor& y, const Tensor& last, bool softplus,
              bool reverse, bool transpose, int64_t H, int64_t W, double y_scale,
              const std::vector<int64_t>& split, const OptTensor& chunk_states,
              const OptTensor& y_pre) {
  const char* op = "selective scan forward";
  const c10::cuda::CUDAGuard guard(u.device());
  ssops::ScanParams p =
      make_params(op, u, delta, A, B, C, D, bias, softplus, reverse, transpose, H, W, split);
  same_strides(op, "z", z, u);
  same_strides(op, "y", y, u);
  const int ns = static_cast<int>(split[0]);
  TORCH_CHECK(y ? y->scalar_type() == u.scalar_type() || y->scalar_type() == at::kFloat
                : ns == 0,
              "ssops cuda ", op, ": y must have u's dtype or float32");
  TORCH_CHECK(last.is_contiguous() && last.scalar_type() == at::kFloat &&
                  last.numel() == static_cast<int64_t>(p.batch) * p.dim * p.N,
              "ssops cuda ", op, ": last must be a contiguous float32 (batch, dim, N) tensor");
  p.y_in = partial_ptr(op, "y_in", y_in, u);
  p.z = z ? z->data_ptr() : nullptr;
  p.y = y ? y->data_ptr() : nullptr;
  p.out_f32 = y && y->scalar_type() == at::kFloat && u.scalar_type() != at::kFloat;
  p.last = last.data_ptr<float>();
  p.y_scale = static_cast<float>(y_scale);
  TORCH_CHECK(ns == 0 || (!chunk_states && !y_pre), "ssops cuda ", op,
              ": only the states-on-lanes kernel stores chunk states and y before the gate");
  p.chunk_states = chunk_states_ptr(op, chunk_states, p, u);
  p.y_pre = const_cast<float*>(partial_ptr(op, "y_pre", y_pre, u));
  if (ns == 0)
    check_lanes(op, p, u);
  else
    p.contig = contiguous_chunks(p, ns, {p.u, p.delta, p.B, p.C, p.z, p.y, p.y_in});
  launch(op, p, dtype_code(u), ns, false);
}

// Gradients: du, ddelta, dz written; dA, dB, dC, dD, dbias (float32, zeroed by the caller) added
// to.  A variable dB / dC has B / C's shape; a constant one is (dim, N).
void scan_bwd(const Tensor& dy, const OptTensor& dlast, const Tensor& u, const Tensor& delta,
              const Tensor& A, const Tensor& B, const Tensor& C, const OptTensor& D,
              const OptTensor& z, const OptTensor& bias, const OptTensor& du_in, const Tensor& du,
              const Tensor& ddelta, const OptTensor& dz, const Tensor& dA, const Tensor& dB,
              const Tensor& dC, const OptTensor& dD, const OptTensor& dbias, bool softplus,
              bool reverse, bool transpose, int64_t H, int64_t W, double y_scale,
              const std::vector<int64_t>& split, const OptTensor& chunk_states,
              const OptTensor& y_pre) {
  const char* op = "selective scan backward";
  const c10::cuda::CUDAGuard guard(u.device());
  ssops::ScanParams p =
      make_params(op, u, delta, A, B, C, D, bias, softplus, reverse, transpose, H, W, split);
  for (const auto& [name, t] : {std::pair<const char*, OptTensor>{"dy", dy}, {"z", z},
                                {"du", du}, {"dz", dz}})
    same_strides(op, name, t, u);
  auto u_or_f32 = [&](const Tensor& t) {
    return t.scalar_type() == u.scalar_type() || t.scalar_type() == at::kFloat;
  };
  TORCH_CHECK(u_or_f32(dy) && u_or_f32(du) && (!dz || dz->scalar_type() == u.scalar_type()),
              "ssops cuda ", op, ": dy and du must have u's dtype or float32, dz u's dtype");
  p.dy_f32 = dy.scalar_type() == at::kFloat && u.scalar_type() != at::kFloat;
  p.du_f32 = du.scalar_type() == at::kFloat && u.scalar_type() != at::kFloat;
  TORCH_CHECK(ddelta.sizes() == delta.sizes() && ddelta.strides() == delta.strides() &&
                  ddelta.scalar_type() == delta.scalar_type(),
              "ssops cuda ", op, ": ddelta must have delta's shape, strides and dtype");
  // (the states-on-lanes kernel can leave dz to another route: Vim's two directions)
  TORCH_CHECK(dz ? z.has_value() : !z || split[0] == 0, "ssops cuda ", op, ": dz goes with z");
  p.dy = dy.data_ptr(), p.z = z ? z->data_ptr() : nullptr;
  p.dlast = f32_ptr(op, "dlast_state", dlast, u);
  p.du_in = partial_ptr(op, "du_in", du_in, u);
  p.du = du.data_ptr(), p.ddelta = ddelta.data_ptr(), p.dz = dz ? dz->data_ptr() : nullptr;
  p.dA = const_cast<float*>(f32_ptr(op, "dA", dA, u));
  p.dB = const_cast<float*>(f32_ptr(op, "dB", dB, u));
  p.dC = const_cast<float*>(f32_ptr(op, "dC", dC, u));
  p.dD = const_cast<float*>(f32_ptr(op, "dD", dD, u));
  p.dbias = const_cast<float*>(f32_ptr(op, "ddelta_bias", dbias, u));
  TORCH_CHECK(!D == !dD && !bias == !dbias, "ssops cuda ", op, ": gradient buffers missing");
  const int ns = static_cast<int>(split[0]);
  // constant: (dim, N) like B / C; variable: partial sums (batch, G, dpg / cpw, N, L), or one
  // sum (batch, G, 1, N, L) from the states-on-lanes kernel
  auto grad_strides = [&](const Tensor& g, const Tensor& M, bool constant, int dpg,
                          int64_t* s) {
    const int64_t G = p.dim / dpg, batch = p.batch, N = p.N, L = p.L;
    const int64_t parts = ns == 0 ? 1 : dpg / p.cpw;
    const bool ok = constant ? g.sizes() == M.sizes()
                             : g.sizes() == at::IntArrayRef({batch, G, parts, N, L}) &&
                                   dpg % p.cpw == 0;
    TORCH_CHECK(ok && g.is_contiguous(), "ssops cuda ", op, ": bad gradient buffer of B or C");
    for (int i = 0; i < 5; ++i) s[i] = constant ? 0 : g.stride(i);
  };
  int64_t s[5];
  grad_strides(dB, B, p.b_const, p.dpg_b, s);
  p.sdB_b = s[0], p.sdB_g = s[1], p.sdB_p = s[2], p.sdB_n = s[3], p.sdB_l = s[4];
  grad_strides(dC, C, p.c_const, p.dpg_c, s);
  p.sdC_b = s[0], p.sdC_g = s[1], p.sdC_p = s[2], p.sdC_n = s[3], p.sdC_l = s[4];
  Tensor group_states;
  if (p.ngroups > 1) {
    group_states = at::empty({static_cast<int64_t>(p.batch) * p.dim * p.ngroups * p.N},
                             u.options().dtype(at::kFloat));
    p.group_states = group_states.data_ptr<float>();
  }
  TORCH_CHECK(ns == 0 || (!chunk_states && !y_pre), "ssops cuda ", op,
              ": chunk states are for the states-on-lanes kernel");
  if (ns == 0) {
    TORCH_CHECK(chunk_states && !p.du_in && dz.has_value() == y_pre.has_value(),
                "ssops cuda ", op, ": the states-on-lanes backward needs the forward's chunk "
                "states (and its y before the gate for dz), and no du_in");
    p.chunk_states = chunk_states_ptr(op, chunk_states, p, u);
    p.y_pre = const_cast<float*>(partial_ptr(op, "y_pre", y_pre, u));
    p.y_scale = static_cast<float>(y_scale);
    check_lanes(op, p, u);
  } else {
    p.contig = contiguous_chunks(p, ns, {p.u, p.delta, p.B, p.C, p.z, p.dy, p.du_in, p.du,
                                         p.ddelta, p.dz});
  }
  launch(op, p, dtype_code(u), ns, true);
}

// image: the image side as a (batch, 1 or K, C, H * W) view (csrc/scan.h CrossParams); the
// route side is the contiguous (batch, K, C, H * W) src (mode kCrossScan: dst).
void cross(const Tensor& src, const Tensor& dst, const Tensor& image, int64_t H, int64_t W,
           int64_t reversed, int64_t transposed, int64_t K, int64_t mode) {
  const char* op = mode == ssops::kCrossScan ? "cross_scan" : "cross_merge";
  const c10::cuda::CUDAGuard guard(src.device());
  check_cuda(op, "output", dst, src);
  const Tensor& routed = mode == ssops::kCrossScan ? dst : src;
  TORCH_CHECK(image.dim() == 4 && (image.size(1) == 1 || image.size(1) == K) &&
                  routed.is_contiguous() && routed.dim() == 4 && routed.size(1) == K &&
                  routed.size(0) == image.size(0) && routed.size(2) == image.size(2) &&
                  routed.size(3) == image.size(3) && image.size(3) == H * W &&
                  (mode != ssops::kCrossUnroute || image.size(1) == K),
              "ssops cuda ", op, ": bad image / route views");
  TORCH_CHECK(src.scalar_type() == dst.scalar_type() || src.scalar_type() == at::kFloat ||
                  dst.scalar_type() == at::kFloat,
              "ssops cuda ", op, ": the source or the destination must be float32 where their "
              "dtypes differ");
  ssops::CrossParams p{};
  p.batch = static_cast<int>(image.size(0)), p.C = static_cast<int>(image.size(2));
  p.L = static_cast<int>(image.size(3)), p.H = static_cast<int>(H), p.W = static_cast<int>(W);
  p.K = static_cast<int>(K), p.mode = static_cast<int>(mode);
  p.reversed = static_cast<unsigned>(reversed), p.transposed = static_cast<unsigned>(transposed);
  p.sx_b = image.stride(0), p.sx_k = image.size(1) == 1 ? 0 : image.stride(1);
  p.sx_c = image.stride(2), p.sx_l = image.stride(3);
  p.channel_fast = p.sx_c == 1 && p.C > 1;
  p.src = src.data_ptr(), p.dst = dst.data_ptr();
  if (static_cast<int64_t>(p.batch) * p.C * p.L == 0) return;
  ssops::launch_cross(p, dtype_code(src), dtype_code(dst), c10::cuda::getCurrentCUDAStream());
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "ssops cuda ", op, " (batch=", p.batch, ", C=", p.C, ", H=", H,
              ", W=", W, "): ", cudaGetErrorString(err));
}

// ------------------------------------------------------------------------ fused multi-route
// Elements per row load of the line kernels: the most (up to 16 bytes) that divide W and that
// every row of u, delta, B, C and y / dy is aligned to.
int line_vec(const Tensor& u, const Tensor& delta, const Tensor& B, const Tensor& C,
             const Tensor& y, int W) {
  for (int v = 16 / static_cast<int>(u.element_size()); v > 1; v /= 2) {
    bool ok = W % v == 0;
    for (const Tensor* t : {&u, &delta, &B, &C, &y}) {
      ok = ok && reinterpret_cast<uintptr_t>(t->data_ptr()) % (v * t->element_size()) == 0;
      for (int i = 0; i + 1 < t->dim(); ++i) ok = ok && t->stride(i) % v == 0;
    }
    if (ok) return v;
  }
  return 1;
}

// Canonical views (ssops/_cuda_backend.py): u (1 or K, batch, dim, L), delta (K, batch, dim, L),
// B / C (K, batch, G, N, L), A (K, dim, N), D / delta_bias (K, dim), z and y / dy
// (batch, dim, L), all with unit stride along L.  split = (items, wpc, cpb, preload[, lines]).
ssops::FusedParams make_fused(const char* op, const Tensor& u, const Tensor& delta,
                              const Tensor& A, const Tensor& B, const Tensor& C,
                              const OptTensor& D, const OptTensor& bias, const OptTensor& z,
                              const Tensor& y, bool softplus, int64_t H, int64_t W,
                              int64_t reversed, int64_t transposed, double y_scale,
                              const std::vector<int64_t>& split) {
  TORCH_CHECK(u.is_cuda() && u.dim() == 4 && delta.dim() == 4 && B.dim() == 5 && C.dim() == 5,
              "ssops cuda ", op, ": bad fused views");
  for (const auto& [name, t] : {std::pair<const char*, Tensor>{"delta", delta}, {"B", B},
                                {"C", C}, {"y", y}})
    check_cuda(op, name, t, u);
  ssops::FusedParams p{};
  p.K = static_cast<int>(delta.size(0)), p.batch = static_cast<int>(delta.size(1));
  p.dim = static_cast<int>(delta.size(2)), p.L = static_cast<int>(delta.size(3));
  p.N = static_cast<int>(A.size(2)), p.G = static_cast<int>(B.size(2));
  p.H = static_cast<int>(H), p.W = static_cast<int>(W);
  p.reversed = static_cast<unsigned>(reversed), p.transposed = static_cast<unsigned>(transposed);
  p.items = static_cast<int>(split.at(0)), p.wpc = static_cast<int>(split.at(1));
  p.cpb = static_cast<int>(split.at(2)), p.preload = split.at(3) != 0;
  p.lines = split.size() > 4 && split[4] != 0;
  const int dpg = p.dim / p.G;
  TORCH_CHECK(static_cast<int64_t>(p.H) * p.W == p.L && (u.size(0) == 1 || u.size(0) == p.K) &&
                  u.size(1) == p.batch && u.size(2) == p.dim && u.size(3) == p.L &&
                  C.sizes() == B.sizes() && B.size(0) == p.K && B.size(1) == p.batch &&
                  B.size(3) == p.N && B.size(4) == p.L && p.dim % p.G == 0 &&
                  dpg % p.cpb == 0 && A.dim() == 3 && A.size(0) == p.K && A.size(1) == p.dim,
              "ssops cuda ", op, ": inconsistent shapes");
  if (p.lines) {  // (the rows' launch writes y / du: some route walks rows)
    TORCH_CHECK(p.N == 1 && !z && u.size(0) == 1 && p.cpb > 0 &&
                    p.transposed != (1u << p.K) - 1 &&
                    std::max(p.H, p.W) * p.cpb <= ssops::kLineMaxThreads &&
                    ssops::line_smem_bytes(p, p.W > p.H) <= 200 * 1024,
                "ssops cuda ", op, ": inconsistent work split (lines)");
  } else {
    TORCH_CHECK(static_cast<int64_t>(p.items) * 32 * p.wpc >= p.L &&
                    32 * p.wpc * p.cpb <= 512 && (p.items & (p.items - 1)) == 0 &&
                    p.items <= 16,
                "ssops cuda ", op, ": inconsistent work split");
  }
  for (const Tensor& t : {u, delta, B, C, y})
    TORCH_CHECK(t.stride(-1) == 1, "ssops cuda ", op, ": tensors need unit stride along L");
  TORCH_CHECK(delta.scalar_type() == u.scalar_type() && B.scalar_type() == C.scalar_type() &&
                  (B.scalar_type() == u.scalar_type() || B.scalar_type() == at::kFloat) &&
                  (y.scalar_type() == u.scalar_type() || y.scalar_type() == at::kFloat),
              "ssops cuda ", op, ": dtype mismatch");
  p.softplus = softplus, p.y_scale = static_cast<float>(y_scale);
  p.bc_f32 = B.scalar_type() == at::kFloat && u.scalar_type() != at::kFloat;
  p.y_f32 = y.scalar_type() == at::kFloat && u.scalar_type() != at::kFloat;
  p.u = u.data_ptr(), p.delta = delta.data_ptr(), p.B = B.data_ptr(), p.C = C.data_ptr();
  p.A = f32_ptr(op, "A", A, u), p.D = f32_ptr(op, "D", D, u);
  p.bias = f32_ptr(op, "delta_bias", bias, u);
  p.su_k = u.size(0) == 1 ? 0 : u.stride(0), p.su_b = u.stride(1), p.su_d = u.stride(2);
  p.sd_k = delta.stride(0), p.sd_b = delta.stride(1), p.sd_d = delta.stride(2);
  p.sB_k = B.stride(0), p.sB_b = B.stride(1), p.sB_g = B.stride(2), p.sB_n = B.stride(3);
  p.sC_k = C.stride(0), p.sC_b = C.stride(1), p.sC_g = C.stride(2), p.sC_n = C.stride(3);
  TORCH_CHECK(y.dim() == 3 && y.size(0) == p.batch && y.size(1) == p.dim && y.size(2) == p.L,
              "ssops cuda ", op, ": y / dy must be (batch, dim, L)");
  p.sy_b = y.stride(0), p.sy_d = y.stride(1);
  if (p.lines) p.vec = line_vec(u, delta, B, C, y, p.W);
  if (z) {
    check_cuda(op, "z", *z, u);
    TORCH_CHECK(z->sizes() == y.sizes() && z->stride(2) == 1 &&
                    z->scalar_type() == u.scalar_type(),
                "ssops cuda ", op, ": z must be (batch, dim, L) in u's dtype");
    p.z = z->data_ptr(), p.sz_b = z->stride(0), p.sz_d = z->stride(1);
  }
  return p;
}

// The line kernels' float32 sum of the routes over columns (y's, or du's), which the columns'
// launch writes and the rows' adds: allocated where some route walks columns (p.partial), and
// held by the caller until both are queued.
Tensor line_partial(ssops::FusedParams& p, const Tensor& u) {
  if (!p.lines || !p.transposed) return Tensor();
  Tensor partial = at::empty({p.batch, p.dim, p.L}, u.options().dtype(at::kFloat));
  p.partial = partial.data_ptr<float>();
  return partial;
}

void launch_fused(const char* op, const ssops::FusedParams& p, int dtype, bool backward) {
  if (static_cast<int64_t>(p.batch) * p.dim * p.L == 0) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  switch (dtype) {
    case 0: ssops::launch_fused_fp32(p, backward, stream); break;
    case 1: ssops::launch_fused_fp16(p, backward, stream); break;
    default: ssops::launch_fused_bf16(p, backward, stream); break;
  }
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "ssops cuda ", op, " (K=", p.K, ", batch=", p.batch,
              ", dim=", p.dim, ", L=", p.L, ", N=", p.N, "): ", cudaGetErrorString(err));
}

void fused_fwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
               const Tensor& C, const OptTensor& D, const OptTensor& bias, const OptTensor& z,
               const Tensor& y, bool softplus, int64_t H, int64_t W, int64_t reversed,
               int64_t transposed, double y_scale, const std::vector<int64_t>& split) {
  const char* op = "fused scan forward";
  const c10::cuda::CUDAGuard guard(u.device());
  ssops::FusedParams p = make_fused(op, u, delta, A, B, C, D, bias, z, y, softplus, H, W,
                                    reversed, transposed, y_scale, split);
  p.y = y.data_ptr();
  const Tensor partial = line_partial(p, u);
  launch_fused(op, p, dtype_code(u), false);
}

// du (like u), ddelta (like delta), dz written; dA, dB, dC (contiguous like B), dD, dbias:
// float32, zeroed by the caller, added to.
void fused_bwd(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
               const Tensor& B, const Tensor& C, const OptTensor& D, const OptTensor& bias,
               const OptTensor& z, const Tensor& du, const Tensor& ddelta, const OptTensor& dz,
               const Tensor& dA, const Tensor& dB, const Tensor& dC, const OptTensor& dD,
               const OptTensor& dbias, bool softplus, int64_t H, int64_t W, int64_t reversed,
               int64_t transposed, double y_scale, const std::vector<int64_t>& split) {
  const char* op = "fused scan backward";
  const c10::cuda::CUDAGuard guard(u.device());
  ssops::FusedParams p = make_fused(op, u, delta, A, B, C, D, bias, z, dy, softplus, H, W,
                                    reversed, transposed, y_scale, split);
  same_strides(op, "du", du, u);
  same_strides(op, "ddelta", ddelta, delta);
  TORCH_CHECK(du.scalar_type() == u.scalar_type() && ddelta.scalar_type() == u.scalar_type(),
              "ssops cuda ", op, ": du / ddelta must have u's dtype");
  TORCH_CHECK(z.has_value() == dz.has_value(), "ssops cuda ", op, ": dz goes with z");
  if (dz) same_strides(op, "dz", dz, *z);
  TORCH_CHECK(dB.sizes() == B.sizes() && dC.sizes() == C.sizes() && dB.is_contiguous() &&
                  dC.is_contiguous() && dA.sizes() == A.sizes(),
              "ssops cuda ", op, ": bad gradient buffers");
  TORCH_CHECK(!D == !dD && !bias == !dbias, "ssops cuda ", op, ": gradient buffers missing");
  TORCH_CHECK(p.items <= 8, "ssops cuda ", op, ": at most 8 steps per thread");
  // (chunks of kLineChunk with a plane pair take the most: shorter ones fit a third)
  const auto most = [&](bool col) {
    return ssops::line_bwd_layout(p, col, ssops::kBcPairs, ssops::kLineChunk).bytes;
  };
  TORCH_CHECK(!p.lines || (most(false) <= 200 * 1024 && most(true) <= 200 * 1024),
              "ssops cuda ", op, ": inconsistent work split (lines)");
  const Tensor partial = line_partial(p, u);
  p.dy = dy.data_ptr(), p.du = du.data_ptr(), p.ddelta = ddelta.data_ptr();
  p.dz = dz ? dz->data_ptr() : nullptr;
  p.dA = const_cast<float*>(f32_ptr(op, "dA", dA, u));
  p.dB = const_cast<float*>(f32_ptr(op, "dB", dB, u));
  p.dC = const_cast<float*>(f32_ptr(op, "dC", dC, u));
  p.dD = const_cast<float*>(f32_ptr(op, "dD", dD, u));
  p.dbias = const_cast<float*>(f32_ptr(op, "ddelta_bias", dbias, u));
  launch_fused(op, p, dtype_code(u), true);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssops cuda backend kernels (csrc/)";
  m.def("scan_fwd", &scan_fwd, "one route of the selective scan, forward");
  m.def("scan_bwd", &scan_bwd, "one route of the selective scan, backward");
  m.def("fused_fwd", &fused_fwd, "every route of whole sequences in one block, forward");
  m.def("fused_bwd", &fused_bwd, "every route of whole sequences in one block, backward");
  m.def("cross", &cross, "between images and routes (csrc/scan.h CrossMode)");
}
