# GPU backends. AUTO turns a backend on when its compiler is found; ON requires it.
include(CheckLanguage)

set(LRIS_HAS_CUDA 0)
if(NOT LRIS_ENABLE_CUDA STREQUAL "OFF")
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(LRIS_HAS_CUDA 1)
  elseif(LRIS_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LRIS_ENABLE_CUDA=ON but no CUDA compiler was found")
  endif()
endif()

# The HIP backend needs hipcc (the kernels), the HIP headers and libamdhip64 (the host side,
# built by the C++ compiler). CMake's own HIP language is not used: it expects ROCm under
# <root>/lib/cmake, where Debian's multiarch layout does not put it.
set(LRIS_HAS_HIP 0)
if(NOT LRIS_ENABLE_HIP STREQUAL "OFF")
  find_program(LRIS_HIPCC hipcc)
  find_path(LRIS_HIP_INCLUDE_DIR hip/hip_runtime_api.h)
  find_library(LRIS_AMDHIP64 amdhip64)
  if(LRIS_HIPCC AND LRIS_HIP_INCLUDE_DIR AND LRIS_AMDHIP64)
    set(LRIS_HAS_HIP 1)
  elseif(LRIS_ENABLE_HIP STREQUAL "ON")
    message(FATAL_ERROR "LRIS_ENABLE_HIP=ON but hipcc (${LRIS_HIPCC}), the HIP headers "
                        "(${LRIS_HIP_INCLUDE_DIR}) or libamdhip64 (${LRIS_AMDHIP64}) are missing; "
                        "on Debian: apt install hipcc libamdhip64-dev")
  endif()
endif()

# lris::cuda: the part of LRIS that calls the CUDA runtime. It has no kernels yet, so it needs the
# toolkit's headers and libraries (find_package(CUDAToolkit)) but not enable_language(CUDA); that
# comes with the first .cu file. lris::lris never links CUDA: its consumers need no toolkit.
if(LRIS_HAS_CUDA)
  # check_language may have found nvcc through CUDACXX rather than PATH; without a hint
  # FindCUDAToolkit would search PATH again and could pick another toolkit than that nvcc's.
  if(NOT DEFINED CUDAToolkit_ROOT AND NOT DEFINED ENV{CUDAToolkit_ROOT})
    set(CUDAToolkit_NVCC_EXECUTABLE "${CMAKE_CUDA_COMPILER}" CACHE FILEPATH "nvcc of the toolkit")
  endif()
  find_package(CUDAToolkit)
  if(NOT CUDAToolkit_FOUND)
    if(LRIS_ENABLE_CUDA STREQUAL "ON")
      message(FATAL_ERROR "LRIS_ENABLE_CUDA=ON: nvcc was found but not the CUDA toolkit around it")
    endif()
    message(STATUS "lris: nvcc found but not the CUDA toolkit libraries; CUDA backend off")
    set(LRIS_HAS_CUDA 0)
  endif()
endif()

if(LRIS_HAS_CUDA)
  # Kernels: Ampere and Hopper by default; set CMAKE_CUDA_ARCHITECTURES for others.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  enable_language(CUDA)
  add_library(lris_cuda src/cuda/device_info.cpp src/cuda/cuda_backend.cpp
                        kernels/cuda/batched_copy.cu kernels/cuda/convert.cu
                        kernels/cuda/checksum.cu)
  # The code shared with HIP (src/gpu, kernels/common) is compiled here for CUDA.
  target_compile_definitions(lris_cuda PRIVATE LRIS_GPU_CUDA=1)
  target_include_directories(lris_cuda PRIVATE ${PROJECT_SOURCE_DIR}/src)
  set_target_properties(lris_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                             CUDA_EXTENSIONS OFF)
  add_library(lris::cuda ALIAS lris_cuda)
  set_target_properties(lris_cuda PROPERTIES EXPORT_NAME cuda OUTPUT_NAME lris_cuda
                        POSITION_INDEPENDENT_CODE ON)
  # The static runtime lets a binary run where only the driver (libcuda.so.1) is installed, and
  # keeps the Python module off the libcudart that torch (or anything else) loads.
  if(LRIS_STATIC_DEPS OR LRIS_BUILD_PYTHON)
    target_link_libraries(lris_cuda PUBLIC lris::lris CUDA::cudart_static)
  else()
    target_link_libraries(lris_cuda PUBLIC lris::lris CUDA::cudart)
  endif()
  # PUBLIC rather than INTERFACE: the library's own sources must see the same LRIS_HAS_CUDA()
  # as its consumers, or an inline function could differ between them (an ODR violation).
  target_compile_definitions(lris_cuda PUBLIC LRIS_WITH_CUDA=1)
  if(LRIS_TOP_LEVEL)
    target_compile_options(lris_cuda PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>)
  else()
    target_compile_options(lris_cuda PRIVATE -w)
  endif()
endif()
# lris::hip: the same backend and kernels for AMD GPUs. Host code by the C++ compiler, kernels
# by hipcc into objects of the library.
if(LRIS_HAS_HIP)
  # gfx90a (MI200) and gfx940 (MI300, first revision). gfx942 (MI300X/A as shipped) needs a
  # newer ROCm than Debian 12's 5.2: clang 15 rejects the target and the device libraries lack
  # it. Set LRIS_HIP_ARCHITECTURES with a newer hipcc.
  set(LRIS_HIP_ARCHITECTURES "gfx90a;gfx940" CACHE STRING "AMD GPU targets of the HIP kernels")
  set(arch_flags)
  foreach(arch IN LISTS LRIS_HIP_ARCHITECTURES)
    list(APPEND arch_flags --offload-arch=${arch})
  endforeach()
  set(hip_defines -DLRIS_GPU_HIP=1)
  if(LRIS_STATIC_DEPS)
    list(APPEND hip_defines -DFMT_HEADER_ONLY=1)  # as lris::dep_fmt is then
  endif()
  set(hip_objects)
  file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/kernels/hip)
  foreach(kernel batched_copy convert checksum)
    set(source ${PROJECT_SOURCE_DIR}/kernels/hip/${kernel}.hip)
    set(object ${PROJECT_BINARY_DIR}/kernels/hip/${kernel}.o)
    add_custom_command(
      OUTPUT ${object}
      COMMAND ${LRIS_HIPCC} ${arch_flags} -std=c++17 -O3 -fPIC ${hip_defines}
              "-I$<JOIN:$<TARGET_PROPERTY:lris_core,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
              -I${PROJECT_SOURCE_DIR}/src -c ${source} -o ${object}
      DEPENDS ${source} ${PROJECT_SOURCE_DIR}/kernels/common/${kernel}.cuh
              ${PROJECT_SOURCE_DIR}/src/gpu/runtime.hpp
      IMPLICIT_DEPENDS CXX ${source}
      COMMAND_EXPAND_LISTS
      COMMENT "hipcc ${kernel}.hip (${LRIS_HIP_ARCHITECTURES})")
    list(APPEND hip_objects ${object})
  endforeach()
  add_library(lris_hip src/hip/device_info.cpp src/hip/hip_backend.cpp ${hip_objects})
  set_source_files_properties(${hip_objects} PROPERTIES EXTERNAL_OBJECT ON GENERATED ON)
  add_library(lris::hip ALIAS lris_hip)
  set_target_properties(lris_hip PROPERTIES EXPORT_NAME hip OUTPUT_NAME lris_hip
                        POSITION_INDEPENDENT_CODE ON)
  target_compile_definitions(lris_hip PRIVATE LRIS_GPU_HIP=1 __HIP_PLATFORM_AMD__=1
                             PUBLIC LRIS_WITH_HIP=1)
  target_include_directories(lris_hip PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(lris_hip PUBLIC lris::lris ${LRIS_AMDHIP64})
  if(LRIS_TOP_LEVEL)
    target_compile_options(lris_hip PRIVATE -Wall -Wextra)
  else()
    target_compile_options(lris_hip PRIVATE -w)
  endif()
endif()
message(STATUS "lris: CUDA backend ${LRIS_HAS_CUDA}, HIP backend ${LRIS_HAS_HIP}")
