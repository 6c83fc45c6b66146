# Finds the system libraries through pkg-config (gRPC's CMake config does not work on Debian 12,
# see GRPC_C.md). Each optional piece sets SKV_HAVE_<X>; CUDA is found with check_language.
find_package(PkgConfig)
find_package(Threads REQUIRED)

# jansson: from pkg-config (Debian), or from a folder with include/ and lib/libjansson.a given
# as SKV_JANSSON_ROOT (the lent GPU machine has no jansson; the static library travels there).
set(SKV_JANSSON_ROOT "" CACHE PATH "Folder with include/jansson.h and lib/libjansson.a")
if(SKV_JANSSON_ROOT)
  get_filename_component(_skv_jr ${SKV_JANSSON_ROOT} ABSOLUTE BASE_DIR ${CMAKE_SOURCE_DIR})
  add_library(PkgConfig::SKV_JANSSON STATIC IMPORTED GLOBAL)
  set_target_properties(PkgConfig::SKV_JANSSON PROPERTIES
    IMPORTED_LOCATION ${_skv_jr}/lib/libjansson.a
    INTERFACE_INCLUDE_DIRECTORIES ${_skv_jr}/include)
else()
  pkg_check_modules(SKV_JANSSON REQUIRED IMPORTED_TARGET jansson)
endif()
if(NOT PKG_CONFIG_FOUND)
  # No pkg-config at all (bare GPU image): every optional library below counts as absent.
  macro(pkg_check_modules prefix)
    set(${prefix}_FOUND OFF)
  endmacro()
endif()
# OpenBLAS built with OpenMP, so BLAS and our OpenMP loops share one thread pool (two
# spinning pools on the same cores, pthread OpenBLAS + libgomp, made decode 3x slower).
set(_skv_blas_pc /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp/pkgconfig)
if(EXISTS ${_skv_blas_pc})
  set(ENV{PKG_CONFIG_PATH} "${_skv_blas_pc}:$ENV{PKG_CONFIG_PATH}")
endif()
pkg_check_modules(SKV_OPENBLAS IMPORTED_TARGET openblas)
set(SKV_HAVE_BLAS ${SKV_OPENBLAS_FOUND})
pkg_check_modules(SKV_PCRE2 IMPORTED_TARGET libpcre2-8)
set(SKV_HAVE_PCRE2 ${SKV_PCRE2_FOUND})
pkg_check_modules(SKV_GRPC IMPORTED_TARGET grpc gpr)
pkg_check_modules(SKV_PROTOBUF_C IMPORTED_TARGET libprotobuf-c)
find_program(SKV_PROTOC protoc)
find_program(SKV_PROTOC_C protoc-c)
if(SKV_GRPC_FOUND AND SKV_PROTOBUF_C_FOUND AND SKV_PROTOC_C)
  set(SKV_HAVE_GRPC ON)
else()
  set(SKV_HAVE_GRPC OFF)
endif()
pkg_check_modules(SKV_CMOCKA IMPORTED_TARGET cmocka)
set(SKV_HAVE_CMOCKA ${SKV_CMOCKA_FOUND})

set(SKV_HAVE_CUDA OFF)
if(SKV_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # sm_90a: H100/H200 (wgmma, TMA); sm_80 keeps the build loadable on older parts.
      set(CMAKE_CUDA_ARCHITECTURES "90a;80" CACHE STRING "" FORCE)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    find_library(SKV_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    set(SKV_HAVE_CUDA ON)
  else()
    message(STATUS "swiftkv-serve: no CUDA compiler found; CPU backend only")
  endif()
endif()

# UCX. A CUDA build takes the CUDA-capable UCX of the PyPI wheel libucx-cu13, which
# scripts/setup installs into .venv (SKV_UCX_WHEEL names another copy of its libucx folder):
# headers and libraries from the wheel's folder, linked by full path with that folder on the
# run path, so the binaries load it ahead of the system's UCX (Debian's has no CUDA
# transports). The wheel's pkg-config files name its build machine's prefix: not used.
# Otherwise pkg-config (Debian's UCX, host memory only), or SKV_UCX_ROOT (a folder with
# include/ucp, include/ucs, include/uct) plus the runtime libraries found on the system.
set(SKV_UCX_WHEEL "" CACHE PATH "The libucx folder of the libucx-cu13 wheel (CUDA builds)")
set(SKV_UCX_ROOT "" CACHE PATH "Folder with UCX headers (include/) when pkg-config has no ucx")
set(SKV_UCX_CUDA OFF)
if(SKV_HAVE_CUDA AND NOT SKV_UCX_ROOT AND NOT SKV_UCX_WHEEL)
  file(GLOB _skv_uw ${CMAKE_SOURCE_DIR}/.venv/lib/python3*/site-packages/libucx)
  if(_skv_uw)
    list(GET _skv_uw 0 _skv_uw)
    set(SKV_UCX_WHEEL ${_skv_uw} CACHE PATH "" FORCE)
  endif()
endif()
if(SKV_UCX_WHEEL AND EXISTS ${SKV_UCX_WHEEL}/include/ucp/api/ucp.h)
  set(_skv_uwl ${SKV_UCX_WHEEL}/lib)
  add_library(PkgConfig::SKV_UCX INTERFACE IMPORTED GLOBAL)
  set_target_properties(PkgConfig::SKV_UCX PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${SKV_UCX_WHEEL}/include
    INTERFACE_LINK_LIBRARIES
      "${_skv_uwl}/libucp.so.0;${_skv_uwl}/libuct.so.0;${_skv_uwl}/libucs.so.0;${_skv_uwl}/libucm.so.0"
    INTERFACE_LINK_OPTIONS "LINKER:--disable-new-dtags")
  # The run path (an RPATH, searched before LD_LIBRARY_PATH and the system folders, so a
  # system UCX never shadows the wheel's) of every binary of the build.
  list(APPEND CMAKE_BUILD_RPATH ${_skv_uwl})
  set(SKV_UCX_FOUND ON)
  set(SKV_UCX_CUDA ON)
  message(STATUS "UCX: the CUDA-capable wheel in ${SKV_UCX_WHEEL}")
elseif(SKV_UCX_ROOT)
  get_filename_component(_skv_ur ${SKV_UCX_ROOT} ABSOLUTE BASE_DIR ${CMAKE_SOURCE_DIR})
  find_library(SKV_UCP_LIB NAMES ucp libucp.so.0)
  find_library(SKV_UCS_LIB NAMES ucs libucs.so.0)
  if(SKV_UCP_LIB AND SKV_UCS_LIB AND EXISTS ${_skv_ur}/include/ucp/api/ucp.h)
    add_library(PkgConfig::SKV_UCX INTERFACE IMPORTED GLOBAL)
    set_target_properties(PkgConfig::SKV_UCX PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES ${_skv_ur}/include
      INTERFACE_LINK_LIBRARIES "${SKV_UCP_LIB};${SKV_UCS_LIB}")
    set(SKV_UCX_FOUND ON)
  else()
    message(STATUS "SKV_UCX_ROOT: headers or libucp/libucs not found")
    set(SKV_UCX_FOUND OFF)
  endif()
else()
  if(SKV_HAVE_CUDA)
    message(STATUS "UCX: no libucx-cu13 wheel in .venv (scripts/setup installs it): the system "
                   "UCX has no CUDA transports; device KV pools take data through host bounce "
                   "buffers")
  endif()
  pkg_check_modules(SKV_UCX IMPORTED_TARGET ucx)
endif()
set(SKV_HAVE_UCX ${SKV_UCX_FOUND})

# Python for script tests: the project's virtual environment made by scripts/setup.
if(EXISTS ${CMAKE_SOURCE_DIR}/.venv/bin/python)
  set(SKV_PYTHON ${CMAKE_SOURCE_DIR}/.venv/bin/python)
else()
  find_program(SKV_PYTHON python3)
endif()
