#pragma once
/// @file
/// @brief Everything in LRIS that needs no GPU toolkit: include this one header.

#include <lris/config.hpp>
#include <lris/error.hpp>
#include <lris/fwd.hpp>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/batch_backend.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/concepts/copy_item.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/concepts/memory_property.hpp>
#include <lris/concepts/pci_backend.hpp>
#include <lris/concepts/peer_backend.hpp>
#include <lris/concepts/stream_ordered_allocator.hpp>
#include <lris/concepts/stream_ordered_backend.hpp>

#include <lris/element/checksum.hpp>
#include <lris/element/convert.hpp>
#include <lris/element/dtype.hpp>

#include <lris/memory/allocator_ref.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/host_registration.hpp>
#include <lris/memory/huge_page_allocator.hpp>
#include <lris/memory/page_populator.hpp>
#include <lris/memory/process_mappings.hpp>
#include <lris/memory/memory_span.hpp>
#include <lris/memory/numa_allocator.hpp>
#include <lris/memory/page_aligned_allocator.hpp>
#include <lris/memory/pageable_allocator.hpp>
#include <lris/memory/pinned_allocator.hpp>
#include <lris/memory/registered_allocator.hpp>
#include <lris/concepts/memory_space.hpp>

#include <lris/backends/host_backend.hpp>

#include <lris/io/engine.hpp>
#include <lris/io/fault_queue.hpp>
#include <lris/io/file.hpp>

#include <lris/sched/bandwidth_monitor.hpp>
#include <lris/sched/bandwidth_semaphore.hpp>
#include <lris/sched/nvml_pcie.hpp>
#include <lris/sched/bandwidth_broker.hpp>
#include <lris/sched/shared_semaphore.hpp>
#include <lris/sched/throttle.hpp>

#include <lris/exec/context.hpp>
#include <lris/exec/cpu_budget.hpp>
#include <lris/exec/executor.hpp>
#include <lris/exec/file_io.hpp>
#include <lris/exec/plan.hpp>
#include <lris/exec/profile.hpp>
#include <lris/exec/sizing.hpp>
#include <lris/exec/stats.hpp>

#include <lris/transfer/auto_select.hpp>
#include <lris/transfer/copy.hpp>
#include <lris/transfer/direct.hpp>
#include <lris/transfer/pipeline.hpp>
#include <lris/transfer/plan.hpp>
#include <lris/transfer/plans.hpp>
#include <lris/transfer/staged.hpp>
#include <lris/transfer/traits.hpp>
#include <lris/transfer/transfer_policy.hpp>
#include <lris/transfer/transfer.hpp>

#include <lris/cache/belady.hpp>
#include <lris/cache/checkpoint_units.hpp>
#include <lris/cache/eviction_policy.hpp>
#include <lris/cache/lru.hpp>
#include <lris/cache/next_use.hpp>
#include <lris/cache/pool_units.hpp>
#include <lris/cache/range_allocator.hpp>
#include <lris/cache/residency_manager.hpp>
#include <lris/cache/score_policy.hpp>
#include <lris/cache/simulate.hpp>
#include <lris/cache/static_priority.hpp>
#include <lris/fanout/fan_out_load.hpp>
#include <lris/fanout/fan_out_pool.hpp>
#include <lris/fanout/fan_out_plan.hpp>
#include <lris/fanout/sharding.hpp>
#include <lris/pool/far_memory.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/pool/load_pool.hpp>
#include <lris/pool/pool_registration.hpp>
#include <lris/pool/populate.hpp>

#include <lris/system/format_bytes.hpp>
#include <lris/system/host_info.hpp>

#include <lris/formats/checkpoint.hpp>
#include <lris/formats/dlpack.hpp>
#include <lris/formats/load.hpp>
#include <lris/formats/safetensors.hpp>
#include <lris/formats/safetensors_writer.hpp>
