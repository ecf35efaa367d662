// The scan kernels instantiated for __nv_bfloat16 inputs (one file per dtype:
// they compile in parallel).
#include "scan_kernels.cuh"

namespace ssops {
void launch_scan_bf16(const ScanParams& p, int ns, bool backward, cudaStream_t stream) {
  launch_scan_typed<__nv_bfloat16>(p, ns, backward, stream);
}
}  // namespace ssops
