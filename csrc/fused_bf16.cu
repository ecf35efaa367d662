// The fused multi-route kernels instantiated for __nv_bfloat16 inputs (one file per dtype: they
// compile in parallel).
#include "fused.cuh"

namespace ssops {
void launch_fused_bf16(const FusedParams& p, bool backward, cudaStream_t stream) {
  launch_fused_typed<__nv_bfloat16>(p, backward, stream);
}
}  // namespace ssops
