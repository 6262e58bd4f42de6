// hip::runtime_status and hip::list_devices: the shared src/gpu/device_info.inl.
#include "gpu/device_info.inl"
