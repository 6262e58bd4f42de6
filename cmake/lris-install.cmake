# Install the headers, the compiled core and a CMake package: find_package(lris CONFIG REQUIRED).
include(CMakePackageConfigHelpers)
set(LRIS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/lris)

# Without lris::cuda, the lris/cuda headers would declare functions that no installed library
# defines; leave them out rather than let a consumer link-fail later.
if(LRIS_HAS_CUDA)
  install(DIRECTORY include/lris DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
else()
  install(DIRECTORY include/lris DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          REGEX "/include/lris/cuda$" EXCLUDE)
endif()
install(FILES ${PROJECT_BINARY_DIR}/include/lris/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/lris)
set(LRIS_EXPORTED_TARGETS lris_core)
if(TARGET lris_cuda)
  list(APPEND LRIS_EXPORTED_TARGETS lris_cuda)
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
