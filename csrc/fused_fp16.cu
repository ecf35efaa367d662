// The fused multi-route kernels instantiated for __half inputs (one file per dtype: they
// compile in parallel).
#include "fused.cuh"

namespace ssops {
void launch_fused_fp16(const FusedParams& p, bool backward, cudaStream_t stream) {
  launch_fused_typed<__half>(p, backward, stream);
}
}  // namespace ssops
