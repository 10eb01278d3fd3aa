# Decides where Microsoft SEAL 4.1.2 comes from, in this order:
#   1. a source tree named by HEVIT_SEAL_SOURCE_DIR (CMake variable or environment variable);
#   2. an installed SEAL found by find_package(SEAL 4.1 CONFIG) (HEVIT_USE_SYSTEM_SEAL=ON, the
#      default; e.g. CMAKE_PREFIX_PATH=/opt/seal-4.1.2);
#   3. a download: the pyfhel 3.5.0 source distribution through pip's configured package index
#      (sha256-pinned, carries an unmodified SEAL 4.1.2 tree). There is deliberately no GitHub
#      fallback: we could not verify a release-tarball hash from a machine that reaches GitHub, and
#      an unverified download is worse than a clear error. Users with other sources use 1 or 2.
# A source tree is built static, PIC, without zstd/zlib/MSGSL/HEXL, so the extension depends on
# nothing but the C++ runtime. An installed SEAL must be that configuration too (version 4.1.2,
# the static library, the same options): anything else is refused unless
# HEVIT_ALLOW_UNPINNED_SEAL=ON (pip: -Ccmake.define.HEVIT_ALLOW_UNPINNED_SEAL=ON), and so is a
# source tree of another version. The result is the imported target hevit::seal and
#   HEVIT_SEAL_LINKAGE        how SEAL was obtained and linked (compiled into _core.SEAL_LINKAGE)
#   HEVIT_SEAL_LICENSE_FILES  SEAL's LICENSE and NOTICE, shipped in the wheel's .dist-info/licenses
#                             (an installed SEAL does not install them: a wheel takes those of the
#                             pinned source, or of the folder HEVIT_SEAL_LICENSE_DIR names)

option(HEVIT_USE_SYSTEM_SEAL "Use an installed SEAL 4.1.2 if find_package finds one" ON)
option(HEVIT_ALLOW_UNPINNED_SEAL
  "Accept a SEAL that is not the pinned static 4.1.2 configuration (recorded in _core.SEAL_LINKAGE)" OFF)
set(HEVIT_SEAL_SOURCE_DIR "$ENV{HEVIT_SEAL_SOURCE_DIR}" CACHE PATH "Path to a SEAL 4.1.2 source tree")
set(HEVIT_SEAL_LICENSE_DIR "$ENV{HEVIT_SEAL_LICENSE_DIR}" CACHE PATH
  "Folder holding SEAL's LICENSE and NOTICE, for a wheel built against an installed SEAL")
set(HEVIT_PINNED_SEAL_VERSION 4.1.2)

# A SEAL that is not the pinned configuration: an error unless HEVIT_ALLOW_UNPINNED_SEAL.
function(hevit_refuse_unpinned_seal what)
  if(HEVIT_ALLOW_UNPINNED_SEAL)
    message(WARNING "hevit: ${what}; accepted because HEVIT_ALLOW_UNPINNED_SEAL=ON")
  else()
    message(FATAL_ERROR
      "hevit: ${what}. hevit is built and tested against the pinned static SEAL "
      "${HEVIT_PINNED_SEAL_VERSION} only. Build the pinned source instead "
      "(-DHEVIT_USE_SYSTEM_SEAL=OFF, no HEVIT_SEAL_SOURCE_DIR), or accept this SEAL with "
      "-DHEVIT_ALLOW_UNPINNED_SEAL=ON (pip: -Ccmake.define.HEVIT_ALLOW_UNPINNED_SEAL=ON).")
  endif()
endfunction()

# SEAL's LICENSE and NOTICE in `dir`, or a fatal error for a wheel (an editable install is not
# redistributed: there a warning says the notice is missing).
function(hevit_seal_license_files dir)
  set(files "")
  foreach(name LICENSE NOTICE)
    if(dir AND EXISTS "${dir}/${name}")
      list(APPEND files "${dir}/${name}")
    endif()
  endforeach()
  list(LENGTH files count)
  if(NOT count EQUAL 2)
    if(dir)
      set(why "SEAL's LICENSE and NOTICE are not both in '${dir}'")
    else()
      set(why "an installed SEAL does not install its LICENSE and NOTICE")
    endif()
    set(why "${why}; set HEVIT_SEAL_LICENSE_DIR to a folder with both (e.g. a SEAL ${HEVIT_PINNED_SEAL_VERSION} source tree), or build the pinned source (-DHEVIT_USE_SYSTEM_SEAL=OFF)")
    if(SKBUILD_STATE STREQUAL "editable" OR NOT DEFINED SKBUILD_STATE)
      message(WARNING "hevit: ${why}; this build is not redistributable without them")
      set(files "")
    else()
      message(FATAL_ERROR "hevit: ${why}: the wheel links SEAL statically and must carry its notice")
    endif()
  endif()
  set(HEVIT_SEAL_LICENSE_FILES "${files}" PARENT_SCOPE)
endfunction()

# The pinned SEAL 4.1.2 tree, fetched once into the build tree; its path in `out_var`.
function(hevit_fetch_pinned_seal out_var)
  set(fetch_dir "${CMAKE_BINARY_DIR}/_deps/seal-src")
  if(NOT EXISTS "${fetch_dir}/SEAL/CMakeLists.txt")
    message(STATUS "hevit: fetching SEAL 4.1.2 source through pip's package index")
    execute_process(
      COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/fetch_seal_source.py"
              "${fetch_dir}"
      RESULT_VARIABLE fetch_rc
      OUTPUT_VARIABLE fetch_out
      ERROR_VARIABLE fetch_err
      OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT fetch_rc EQUAL 0)
      message(FATAL_ERROR
        "hevit: could not obtain the SEAL 4.1.2 source through pip's package index:\n"
        "${fetch_err}\n"
        "Install SEAL 4.1.2 where find_package can see it, or set HEVIT_SEAL_SOURCE_DIR to a "
        "SEAL 4.1.2 source tree.")
    endif()
  endif()
  set(${out_var} "${fetch_dir}/SEAL" PARENT_SCOPE)
endfunction()

if(HEVIT_USE_SYSTEM_SEAL AND NOT HEVIT_SEAL_SOURCE_DIR)
  find_package(SEAL 4.1 CONFIG QUIET)
endif()

if(SEAL_FOUND)
  set(_hevit_seal_problems "")
  if(NOT SEAL_VERSION VERSION_EQUAL HEVIT_PINNED_SEAL_VERSION)
    list(APPEND _hevit_seal_problems "version ${SEAL_VERSION}")
  endif()
  if(TARGET SEAL::seal)
    set(_hevit_seal_kind static)
    add_library(hevit::seal ALIAS SEAL::seal)
  else()
    set(_hevit_seal_kind shared)
    list(APPEND _hevit_seal_problems "a shared library")
    add_library(hevit::seal ALIAS SEAL::seal_shared)
  endif()
  foreach(_hevit_option SEAL_USE_MSGSL SEAL_USE_ZLIB SEAL_USE_ZSTD SEAL_USE_INTEL_HEXL SEAL_DEBUG)
    if(${_hevit_option})
      list(APPEND _hevit_seal_problems "${_hevit_option}=ON")
    endif()
  endforeach()
  if(NOT SEAL_THROW_ON_TRANSPARENT_CIPHERTEXT)
    list(APPEND _hevit_seal_problems "SEAL_THROW_ON_TRANSPARENT_CIPHERTEXT=OFF")
  endif()
  if(_hevit_seal_problems)
    string(REPLACE ";" ", " _hevit_seal_problems "${_hevit_seal_problems}")
    hevit_refuse_unpinned_seal("the installed SEAL found by find_package (${SEAL_DIR}) is not the pinned configuration: ${_hevit_seal_problems}")
  endif()
  message(STATUS "hevit: using installed SEAL ${SEAL_VERSION} (${_hevit_seal_kind}) from ${SEAL_DIR}")
  set(HEVIT_SEAL_LINKAGE "${_hevit_seal_kind}, installed SEAL found by find_package (${SEAL_DIR})")
  set(_hevit_license_dir "${HEVIT_SEAL_LICENSE_DIR}")
  if(NOT _hevit_license_dir AND SKBUILD_STATE STREQUAL "wheel"
     AND SEAL_VERSION VERSION_EQUAL HEVIT_PINNED_SEAL_VERSION)
    # SEAL's install has no LICENSE/NOTICE; the wheel takes those of the same release from the
    # pinned source (a download of a few MB, nothing of it is compiled)
    message(STATUS "hevit: the installed SEAL carries no LICENSE/NOTICE; using SEAL 4.1.2's from the pinned source")
    hevit_fetch_pinned_seal(_hevit_license_dir)
  endif()
  hevit_seal_license_files("${_hevit_license_dir}")
  return()
endif()

if(NOT HEVIT_SEAL_SOURCE_DIR)
  hevit_fetch_pinned_seal(_hevit_fetched_seal)
  set(HEVIT_SEAL_SOURCE_DIR "${_hevit_fetched_seal}")
  set(HEVIT_SEAL_LINKAGE
    "static, built from source: the sha256-pinned pyfhel-3.5.0 sdist (its unmodified SEAL tree) fetched through pip's package index")
else()
  set(HEVIT_SEAL_LINKAGE "static, built from source: HEVIT_SEAL_SOURCE_DIR=${HEVIT_SEAL_SOURCE_DIR} (not hash-checked)")
endif()

if(NOT EXISTS "${HEVIT_SEAL_SOURCE_DIR}/CMakeLists.txt")
  message(FATAL_ERROR "hevit: HEVIT_SEAL_SOURCE_DIR='${HEVIT_SEAL_SOURCE_DIR}' is not a SEAL source tree")
endif()
file(STRINGS "${HEVIT_SEAL_SOURCE_DIR}/CMakeLists.txt" _hevit_seal_project REGEX "^project\\(SEAL VERSION ")
string(REGEX MATCH "VERSION ([0-9.]+)" _hevit_seal_project "${_hevit_seal_project}")
if(NOT CMAKE_MATCH_1 VERSION_EQUAL HEVIT_PINNED_SEAL_VERSION)
  hevit_refuse_unpinned_seal(
    "the SEAL source tree ${HEVIT_SEAL_SOURCE_DIR} is version '${CMAKE_MATCH_1}', not ${HEVIT_PINNED_SEAL_VERSION}")
endif()
message(STATUS "hevit: building SEAL ${CMAKE_MATCH_1} from ${HEVIT_SEAL_SOURCE_DIR}")
hevit_seal_license_files("${HEVIT_SEAL_SOURCE_DIR}")

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
# an installed SEAL that find_package rejected (say, one that needs zstd) leaves its settings as
# normal variables, which would shadow the cache values above inside SEAL's own CMakeLists
foreach(_hevit_option SEAL_BUILD_DEPS SEAL_USE_MSGSL SEAL_USE_INTEL_HEXL SEAL_USE_ZLIB SEAL_USE_ZSTD
        SEAL_THROW_ON_TRANSPARENT_CIPHERTEXT)
  unset(${_hevit_option})
endforeach()
add_subdirectory("${HEVIT_SEAL_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/_deps/seal-build" EXCLUDE_FROM_ALL)
add_library(hevit::seal ALIAS seal)
