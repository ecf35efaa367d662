// The fused multi-route kernels instantiated for float inputs (one file per dtype: they
// compile in parallel).
#include "fused.cuh"

namespace ssops {
void launch_fused_fp32(const FusedParams& p, bool backward, cudaStream_t stream) {
  launch_fused_typed<float>(p, backward, stream);
}
}  // namespace ssops
