// cuda::runtime_status and cuda::list_devices: the shared src/gpu/device_info.inl.
#include "gpu/device_info.inl"
