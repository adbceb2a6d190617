# SPDX-License-Identifier: MIT
# Build helpers: warning flags, the sanitizer option, test registration.

function(tg_set_warnings)
  add_compile_options(-Wall -Wextra -Wformat=2 -Wshadow -Wno-unused-parameter
                      -Wno-missing-field-initializers)
  if(TG_WERROR)
    add_compile_options(-Werror)
  endif()
  if(TG_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                        -fno-sanitize-recover=undefined)
    add_link_options(-fsanitize=address,undefined)
  endif()
endfunction()

# tg_test(NAME <ctest name> SOURCES <files...> LIBS <targets...>
#         [LABELS <labels...>] [TIMEOUT <s>])
# Builds one test executable and registers it with CTest. Every test has a
# timeout (180 s unless given), as nng does.
function(tg_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 180)
  endif()
  string(REPLACE "." "_" exe "${T_NAME}")
  add_executable(${exe} ${T_SOURCES})
  target_link_libraries(${exe} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${T_NAME} COMMAND ${exe})
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}"
    ENVIRONMENT "TG_BUILD_DIR=${PROJECT_BINARY_DIR};TG_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()
