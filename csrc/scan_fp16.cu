// The scan kernels instantiated for __half inputs (one file per dtype:
// they compile in parallel).
#include "scan_kernels.cuh"

namespace ssops {
void launch_scan_fp16(const ScanParams& p, int ns, bool backward, cudaStream_t stream) {
  launch_scan_typed<__half>(p, ns, backward, stream);
}
}  // namespace ssops
