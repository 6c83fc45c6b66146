# Compiler flags: warnings as errors on our own targets (skv_target_defaults), sanitizers for
# the whole build when SKV_SANITIZE is set. Third-party and generated code get no -Werror.

if(SKV_SANITIZE STREQUAL "address")
  set(_skv_san "-fsanitize=address,undefined;-fno-omit-frame-pointer;-fno-sanitize-recover=undefined")
elseif(SKV_SANITIZE STREQUAL "thread")
  set(_skv_san "-fsanitize=thread;-fno-omit-frame-pointer")
elseif(NOT SKV_SANITIZE STREQUAL "")
  message(FATAL_ERROR "SKV_SANITIZE must be '', 'address' or 'thread', not '${SKV_SANITIZE}'")
endif()
if(DEFINED _skv_san)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_skv_san}>")
  add_link_options(${_skv_san})
endif()

# skv_target_defaults(target): our warning policy and include root for one of our targets.
function(skv_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
                            -Wmissing-prototypes -Wno-unused-parameter>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>)
  target_include_directories(${target} PUBLIC ${CMAKE_SOURCE_DIR})
endfunction()
