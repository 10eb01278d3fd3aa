# Decides where Microsoft SEAL 4.1 comes from, in this order:
#   1. an installed SEAL found by find_package(SEAL 4.1 CONFIG)   (HEVIT_USE_SYSTEM_SEAL=ON, default)
#   2. a source tree named by HEVIT_SEAL_SOURCE_DIR (CMake variable or environment variable)
#   3. a download: the pyfhel 3.5.0 source distribution through pip's configured package index
#      (sha256-pinned, carries an unmodified SEAL 4.1.2 tree). There is deliberately no GitHub
#      fallback: we could not verify a release-tarball hash from a machine that reaches GitHub, and
#      an unverified download is worse than a clear error. Users with other sources use 1 or 2.
# Whatever the source, SEAL is built static, PIC, without zstd/zlib/MSGSL/HEXL, so the extension
# depends on nothing but the C++ runtime. The result is the imported target hevit::seal.

option(HEVIT_USE_SYSTEM_SEAL "Use an installed SEAL 4.1 if one is found" ON)
set(HEVIT_SEAL_SOURCE_DIR "$ENV{HEVIT_SEAL_SOURCE_DIR}" CACHE PATH "Path to a SEAL 4.1 source tree")

if(HEVIT_USE_SYSTEM_SEAL AND NOT HEVIT_SEAL_SOURCE_DIR)
  find_package(SEAL 4.1 CONFIG QUIET)
endif()

if(SEAL_FOUND)
  message(STATUS "hevit: using installed SEAL ${SEAL_VERSION}")
  if(TARGET SEAL::seal)
    add_library(hevit::seal ALIAS SEAL::seal)
  else()
    add_library(hevit::seal ALIAS SEAL::seal_shared)
  endif()
  return()
endif()

if(NOT HEVIT_SEAL_SOURCE_DIR)
  set(_hevit_seal_fetch_dir "${CMAKE_BINARY_DIR}/_deps/seal-src")
  if(NOT EXISTS "${_hevit_seal_fetch_dir}/SEAL/CMakeLists.txt")
    message(STATUS "hevit: fetching SEAL 4.1.2 source through pip's package index")
    execute_process(
      COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/fetch_seal_source.py"
              "${_hevit_seal_fetch_dir}"
      RESULT_VARIABLE _hevit_fetch_rc
      OUTPUT_VARIABLE _hevit_fetch_out
      ERROR_VARIABLE _hevit_fetch_err
      OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT _hevit_fetch_rc EQUAL 0)
      message(FATAL_ERROR
        "hevit: could not obtain the SEAL 4.1.2 source through pip's package index:\n"
        "${_hevit_fetch_err}\n"
        "Install SEAL 4.1 where find_package can see it, or set HEVIT_SEAL_SOURCE_DIR to a "
        "SEAL 4.1 source tree.")
    endif()
  endif()
  set(HEVIT_SEAL_SOURCE_DIR "${_hevit_seal_fetch_dir}/SEAL")
endif()

if(NOT EXISTS "${HEVIT_SEAL_SOURCE_DIR}/CMakeLists.txt")
  message(FATAL_ERROR "hevit: HEVIT_SEAL_SOURCE_DIR='${HEVIT_SEAL_SOURCE_DIR}' is not a SEAL source tree")
endif()
message(STATUS "hevit: building SEAL from ${HEVIT_SEAL_SOURCE_DIR}")

set(SEAL_BUILD_DEPS OFF CACHE BOOL "" FORCE)
set(SEAL_USE_MSGSL OFF CACHE BOOL "" FORCE)
set(SEAL_USE_INTEL_HEXL OFF CACHE BOOL "" FORCE)
set(SEAL_USE_ZLIB OFF CACHE BOOL "" FORCE)
set(SEAL_USE_ZSTD OFF CACHE BOOL "" FORCE)
set(SEAL_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(SEAL_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(SEAL_BUILD_BENCH OFF CACHE BOOL "" FORCE)
set(SEAL_BUILD_SEAL_C OFF CACHE BOOL "" FORCE)
set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
set(SEAL_THROW_ON_TRANSPARENT_CIPHERTEXT ON CACHE BOOL "" FORCE)
add_subdirectory("${HEVIT_SEAL_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/_deps/seal-build" EXCLUDE_FROM_ALL)
add_library(hevit::seal ALIAS seal)
