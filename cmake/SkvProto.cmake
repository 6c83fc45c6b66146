# skv_proto_library(name PROTOS a.proto ... IMPORT_DIRS dir ...): runs protoc-c at build time
# and builds a static library of the generated code. Generated files live in the build tree
# only; never commit them.
function(skv_proto_library name)
  cmake_parse_arguments(P "" "" "PROTOS;IMPORT_DIRS" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/gen)
  file(MAKE_DIRECTORY ${out_dir})
  set(srcs)
  set(inc_args)
  foreach(d ${P_IMPORT_DIRS})
    list(APPEND inc_args -I${d})
  endforeach()
  foreach(p ${P_PROTOS})
    # p is relative to one of the import dirs; find it to build a dependency path.
    set(abs "")
    foreach(d ${P_IMPORT_DIRS})
      if(EXISTS ${d}/${p} AND abs STREQUAL "")
        set(abs ${d}/${p})
      endif()
    endforeach()
    if(abs STREQUAL "")
      message(FATAL_ERROR "skv_proto_library: ${p} not found in ${P_IMPORT_DIRS}")
    endif()
    string(REGEX REPLACE "\\.proto$" "" stem ${p})
    set(c ${out_dir}/${stem}.pb-c.c)
    set(h ${out_dir}/${stem}.pb-c.h)
    add_custom_command(OUTPUT ${c} ${h}
      COMMAND ${SKV_PROTOC_C} ${inc_args} --c_out=${out_dir} ${p}
      DEPENDS ${abs}
      COMMENT "protoc-c ${p}" VERBATIM)
    list(APPEND srcs ${c})
  endforeach()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${out_dir})
  target_link_libraries(${name} PUBLIC PkgConfig::SKV_PROTOBUF_C)
endfunction()
