# SPDX-License-Identifier: MIT
# Build helpers: warning flags, the sanitizer option, test registration.

function(tg_set_warnings)
  add_compile_options(-Wall -Wextra -Wformat=2 -Wshadow -Wno-unused-parameter
                      -Wno-missing-field-initializers)
  if(TG_WERROR)
    add_compile_options(-Werror)
  endif()
  if((TG_SANITIZE AND TG_TSAN) OR (TG_FUZZ AND TG_TSAN))
    message(FATAL_ERROR "TG_TSAN cannot be combined with TG_SANITIZE or "
                        "TG_FUZZ (ThreadSanitizer excludes ASan)")
  endif()
  if(TG_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                        -fno-sanitize-recover=undefined)
    add_link_options(-fsanitize=address,undefined)
  endif()
  if(TG_TSAN)
    # -O1: TSan's own advice (fast enough, keeps frames readable).
    add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -O1 -g)
    add_link_options(-fsanitize=thread)
  endif()
  if(TG_FUZZ)
    if(NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
      message(FATAL_ERROR "TG_FUZZ needs clang (CC=clang-14): libFuzzer "
                          "ships with Debian's clang")
    endif()
    # Everything the fuzz targets link is instrumented for coverage and
    # checked with ASan+UBSan; only the fuzz executables get libFuzzer's
    # main (fuzz/CMakeLists.txt).
    add_compile_options(-fsanitize=fuzzer-no-link,address,undefined
                        -fno-omit-frame-pointer
                        -fno-sanitize-recover=undefined -g)
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
