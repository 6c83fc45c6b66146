# skv_add_test(name SOURCES ... LIBS ... LABELS ... [ARGS ...] [TIMEOUT s] [ENV ...]):
# Tests run two at a time on small machines: OpenMP threads must sleep, not spin, at barriers
# (OMP_WAIT_POLICY=passive), or a busy core stalls every barrier of the other test.
# one test executable registered with ctest. Exit code 77 means SKIP (e.g. no GPU).
function(skv_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS;ARGS;ENV" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  skv_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${T_LIBS})
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" SKIP_RETURN_CODE 77
                       TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "SKV_SOURCE_DIR=${CMAKE_SOURCE_DIR};SKV_BINARY_DIR=${CMAKE_BINARY_DIR};OMP_WAIT_POLICY=passive;${T_ENV}")
endfunction()

# skv_add_script_test(name COMMAND ... LABELS ...): a test that runs a command (e.g. Python).
function(skv_add_script_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "COMMAND;LABELS;ENV" ${ARGN})
  add_test(NAME ${name} COMMAND ${T_COMMAND})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" SKIP_RETURN_CODE 77
                       TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "SKV_SOURCE_DIR=${CMAKE_SOURCE_DIR};SKV_BINARY_DIR=${CMAKE_BINARY_DIR};OMP_WAIT_POLICY=passive;${T_ENV}")
endfunction()
