# Install rules, the CMake package and msiv2.pc (included at the end of CMakeLists.txt).
#
#   cmake --install build --prefix P
#
# installs the libraries, the public headers under P/include/msiv2/ (MSIV2_PUBLIC_HEADERS,
# tools/cmake/public_headers.cmake), msiv2-token and msiv2-sim, P/lib/cmake/msiv2/ (config,
# version, exported targets, FindCAF.cmake) and P/lib/pkgconfig/msiv2.pc. Every installed
# path is relative to P, so a copy moved elsewhere (dpkg -x) still works.
#
# The umbrella target msiv2::msiv2 is what an embedder links: it brings the folder libraries
# (msiv2::actors, msiv2::io, msiv2::platform, msiv2::messages) and their dependencies.

include(CMakePackageConfigHelpers)

add_library(msiv2 INTERFACE)
add_library(msiv2::msiv2 ALIAS msiv2)
target_link_libraries(msiv2 INTERFACE msiv2_actors msiv2_io msiv2_platform msiv2_messages)

set(msiv2_folder_libraries msiv2_actors msiv2_io msiv2_platform msiv2_messages)
foreach(lib ${msiv2_folder_libraries})
  string(REPLACE "msiv2_" "" export_name ${lib})
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${export_name})
endforeach()

install(TARGETS msiv2 ${msiv2_folder_libraries} EXPORT msiv2Targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET msiv2-sim)
  install(TARGETS msiv2-token msiv2-sim RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# Public headers: actors/msiv2.hpp becomes <msiv2/msiv2.hpp>, <folder>/<file>.hpp becomes
# <msiv2/<folder>/<file>.hpp>.
foreach(header ${MSIV2_PUBLIC_HEADERS})
  if(header STREQUAL "actors/msiv2.hpp")
    install(FILES ${PROJECT_SOURCE_DIR}/${header} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/msiv2)
  else()
    get_filename_component(folder ${header} DIRECTORY)
    install(FILES ${PROJECT_SOURCE_DIR}/${header}
            DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/msiv2/${folder})
  endif()
endforeach()

# The TPM access layer's pkg-config modules (platform/CMakeLists.txt).
set(MSIV2_TSS2_MODULES "tss2-esys tss2-tctildr tss2-mu tss2-rc tss2-sys")

set(msiv2_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/msiv2)
install(EXPORT msiv2Targets NAMESPACE msiv2:: DESTINATION ${msiv2_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/tools/cmake/msiv2Config.cmake.in
                              ${CMAKE_BINARY_DIR}/msiv2Config.cmake
                              INSTALL_DESTINATION ${msiv2_cmake_dir})
# 0.x: a consumer asking for 0.1 must not get 0.2.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/msiv2ConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/msiv2Config.cmake ${CMAKE_BINARY_DIR}/msiv2ConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/tools/cmake/FindCAF.cmake
        DESTINATION ${msiv2_cmake_dir})

# msiv2.pc. CAF has no .pc on Debian, so it is spelled out in Libs.
file(RELATIVE_PATH MSIV2_PC_PREFIX_FROM_PCDIR
     ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" MSIV2_PC_PREFIX_FROM_PCDIR "${MSIV2_PC_PREFIX_FROM_PCDIR}")
set(MSIV2_PC_REQUIRES "openssl >= 3.0 libcurl simdjson ${MSIV2_TSS2_MODULES}")
set(MSIV2_PC_LIBS "-lmsiv2_actors -lmsiv2_io -lmsiv2_platform -lmsiv2_messages -lcaf_core -pthread")
configure_file(${PROJECT_SOURCE_DIR}/tools/cmake/msiv2.pc.in ${CMAKE_BINARY_DIR}/msiv2.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/msiv2.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The Debian package (tools/package.sh runs cpack in the build directory): everything above
# under /usr, the executables stripped. Runtime libraries of msiv2-token and msiv2-sim come
# from dpkg-shlibdeps; the -dev packages are what a consumer's build needs (headers of CAF,
# OpenSSL, curl and simdjson, and the libraries the static archives link against).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME msiv2)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "msiv2 maintainers <msiv2@example.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Azure Managed Identity v2 (mTLS PoP) token runtime for C++ servers, and its simulator")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE amd64)
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libcaf-dev (>= 0.17.6), libssl-dev (>= 3.0), libcurl4-openssl-dev, libsimdjson-dev, libtss2-dev")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "cmake, pkg-config, g++")
set(CPACK_OUTPUT_FILE_PREFIX ${CMAKE_BINARY_DIR}/packages)
include(CPack)
