# Third-party libraries LRIS uses, all from Debian packages. Included by the build and by the
# installed lris-config.cmake, so both see the same imported targets.
include_guard(GLOBAL)
include(CMakeFindDependencyMacro)

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
find_dependency(fmt CONFIG)
find_dependency(nlohmann_json CONFIG)
# DLPack (header only): the tensor exchange structs of lris/formats/dlpack.hpp.
find_dependency(dlpack CONFIG)

# LRIS_STATIC_DEPS prefers lib<name>.a so that binaries run on machines without these packages.
function(lris_import_library target header)
  cmake_parse_arguments(ARG "" "" "NAMES;INTERFACE_LIBS" ${ARGN})
  if(TARGET ${target})
    return()
  endif()
  set(names ${ARG_NAMES})
  if(LRIS_STATIC_DEPS)
    list(TRANSFORM names PREPEND "lib" OUTPUT_VARIABLE static_names)
    list(TRANSFORM static_names APPEND ".a")
    set(names ${static_names} ${names})
  endif()
  string(MAKE_C_IDENTIFIER "${target}" var)
  find_path(${var}_INCLUDE_DIR ${header})
  find_library(${var}_LIBRARY NAMES ${names})
  if(NOT ${var}_INCLUDE_DIR OR NOT ${var}_LIBRARY)
    message(FATAL_ERROR "lris needs ${header} and lib${ARG_NAMES}: on Debian, "
                        "apt-get install catch2 libfmt-dev libcli11-dev liburing-dev libnuma-dev "
                        "libhwloc-dev libxxhash-dev libssl-dev nlohmann-json3-dev libbenchmark-dev")
  endif()
  add_library(${target} UNKNOWN IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES
    IMPORTED_LOCATION "${${var}_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${${var}_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${ARG_INTERFACE_LIBS}")
endfunction()

lris_import_library(lris::dep_numa numa.h NAMES numa)
lris_import_library(lris::dep_uring liburing.h NAMES uring)
lris_import_library(lris::dep_xxhash xxhash.h NAMES xxhash)
# OpenSSL's libcrypto: SHA-256 of whole files. Its static library needs libdl and threads.
lris_import_library(lris::dep_crypto openssl/evp.h NAMES crypto INTERFACE_LIBS "${CMAKE_DL_LIBS};Threads::Threads")
if(LRIS_STATIC_DEPS)
  find_library(LRIS_UDEV_LIBRARY NAMES udev libudev.so.1 REQUIRED)
  lris_import_library(lris::dep_hwloc hwloc.h NAMES hwloc
                      INTERFACE_LIBS "lris::dep_numa;${LRIS_UDEV_LIBRARY};m")
else()
  lris_import_library(lris::dep_hwloc hwloc.h NAMES hwloc)
endif()

if(NOT TARGET lris::dep_fmt)
  add_library(lris::dep_fmt INTERFACE IMPORTED GLOBAL)
  if(LRIS_STATIC_DEPS)
    set_target_properties(lris::dep_fmt PROPERTIES INTERFACE_LINK_LIBRARIES fmt::fmt-header-only)
  else()
    set_target_properties(lris::dep_fmt PROPERTIES INTERFACE_LINK_LIBRARIES fmt::fmt)
  endif()
endif()
