"""GPU hot paths. Each public function dispatches to a Triton kernel on CUDA and to its PyTorch twin elsewhere."""
