# Install the headers, the compiled core and a CMake package: find_package(lris CONFIG REQUIRED).
include(CMakePackageConfigHelpers)
set(LRIS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/lris)

# Without lris::cuda (lris::hip), the lris/cuda (lris/hip) headers would declare functions that
# no installed library defines; leave them out rather than let a consumer link-fail later.
set(excluded_headers)
if(NOT LRIS_HAS_CUDA)
  list(APPEND excluded_headers REGEX "/include/lris/cuda$" EXCLUDE)
endif()
if(NOT LRIS_HAS_HIP)
  list(APPEND excluded_headers REGEX "/include/lris/hip$" EXCLUDE)
endif()
install(DIRECTORY include/lris DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} ${excluded_headers})
install(FILES ${PROJECT_BINARY_DIR}/include/lris/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lris)
set(LRIS_EXPORTED_TARGETS lris_core)
if(TARGET lris_cuda)
  list(APPEND LRIS_EXPORTED_TARGETS lris_cuda)
endif()
if(TARGET lris_hip)
  list(APPEND LRIS_EXPORTED_TARGETS lris_hip)
endif()
install(TARGETS ${LRIS_EXPORTED_TARGETS} EXPORT lris-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT lris-targets NAMESPACE lris:: DESTINATION ${LRIS_CMAKE_DIR})
configure_package_config_file(cmake/lris-config.cmake.in
  ${PROJECT_BINARY_DIR}/lris-config.cmake INSTALL_DESTINATION ${LRIS_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/lris-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/lris-config.cmake ${PROJECT_BINARY_DIR}/lris-config-version.cmake
        cmake/lris-dependencies.cmake DESTINATION ${LRIS_CMAKE_DIR})
if(TARGET lris_tool)
  install(TARGETS lris_tool RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
