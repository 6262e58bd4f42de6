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

# The HIP backend (target lris::hip) is not part of this version: AUTO leaves it off, and ON
# says so instead of building a library without it.
set(LRIS_HAS_HIP 0)
if(LRIS_ENABLE_HIP STREQUAL "ON")
  message(FATAL_ERROR "LRIS_ENABLE_HIP=ON: the HIP backend (lris::hip) is not part of lris "
                      "${PROJECT_VERSION} yet; configure with LRIS_ENABLE_HIP=AUTO or OFF")
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
  set_target_properties(lris_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                             CUDA_EXTENSIONS OFF)
  add_library(lris::cuda ALIAS lris_cuda)
  set_target_properties(lris_cuda PROPERTIES EXPORT_NAME cuda OUTPUT_NAME lris_cuda
                        POSITION_INDEPENDENT_CODE ON)
  # The static runtime lets a binary run where only the driver (libcuda.so.1) is installed.
  if(LRIS_STATIC_DEPS)
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
message(STATUS "lris: CUDA backend ${LRIS_HAS_CUDA}, HIP backend ${LRIS_HAS_HIP}")
