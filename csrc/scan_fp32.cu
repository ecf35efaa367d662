// The scan kernels instantiated for float inputs (one file per dtype:
// they compile in parallel).
#include "scan_kernels.cuh"

namespace ssops {
void launch_scan_fp32(const ScanParams& p, int ns, bool backward, cudaStream_t stream) {
  launch_scan_typed<float>(p, ns, backward, stream);
}
}  // namespace ssops
