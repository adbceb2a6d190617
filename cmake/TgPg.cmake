# SPDX-License-Identifier: MIT
# PostgreSQL tests: a throwaway cluster (scripts/pg-test-cluster.sh) shared
# by every PostgreSQL test of one ctest run through a CTest fixture, and a
# fresh database per test, so tests stay independent and run in parallel.
#
# TG_PG_TESTS: AUTO registers the tests when PostgreSQL server binaries are
# installed (scripts/deps.sh --test installs them), ON requires them (make
# test passes ON, so CI cannot silently lose the tests), OFF never.
set(TG_PG_TESTS AUTO CACHE STRING
    "PostgreSQL tests: AUTO (when a server is installed), ON, OFF")
set_property(CACHE TG_PG_TESTS PROPERTY STRINGS AUTO ON OFF)

set(TG_PG_CLUSTER ${PROJECT_SOURCE_DIR}/scripts/pg-test-cluster.sh)
set(TG_PG_STATE ${PROJECT_BINARY_DIR}/pg-test)

# Server binaries: $TG_PG_BINDIR, else Debian's /usr/lib/postgresql/<v>/bin.
if(DEFINED ENV{TG_PG_BINDIR})
  set(_tg_pg_initdb $ENV{TG_PG_BINDIR}/initdb)
else()
  file(GLOB _tg_pg_initdb /usr/lib/postgresql/*/bin/initdb)
endif()
set(TG_PG_ENABLED OFF)
if(TG_WITH_PG AND NOT TG_PG_TESTS STREQUAL "OFF")
  if(_tg_pg_initdb)
    set(TG_PG_ENABLED ON)
  elseif(TG_PG_TESTS STREQUAL "ON")
    message(FATAL_ERROR "TG_PG_TESTS=ON but no PostgreSQL server binaries "
      "were found (install Debian's postgresql package: scripts/deps.sh --test)")
  else()
    message(STATUS "PostgreSQL server not installed: the pg tests are not "
      "registered (scripts/deps.sh --test installs it)")
  endif()
endif()

if(TG_PG_ENABLED)
  add_test(NAME pg.cluster.start
    COMMAND ${TG_PG_CLUSTER} start ${TG_PG_STATE})
  set_tests_properties(pg.cluster.start PROPERTIES
    FIXTURES_SETUP tg_pg LABELS pg TIMEOUT 180)
  add_test(NAME pg.cluster.stop
    COMMAND ${TG_PG_CLUSTER} stop ${TG_PG_STATE})
  set_tests_properties(pg.cluster.stop PROPERTIES
    FIXTURES_CLEANUP tg_pg LABELS pg TIMEOUT 180)
endif()

# tg_pg_test(NAME <ctest name> COMMAND <cmd...> [LABELS <labels...>]
#            [TIMEOUT <s>])
# Registers a test on the shared cluster: the command runs with
# TG_TEST_DB=pg and TG_PG_STATE (tests/harness tg_test_db() and the Node
# harness then make fresh databases with `pg-test-cluster.sh createdb`),
# and with TG_TEST_THREADS_DB set to one fresh database made for it
# (dropped afterwards). Labelled `pg` plus LABELS. Does nothing when
# TG_PG_ENABLED is OFF.
function(tg_pg_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT TG_PG_ENABLED)
    return()
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 180)
  endif()
  add_test(NAME ${T_NAME}
    COMMAND ${TG_PG_CLUSTER} run ${TG_PG_STATE} -- ${T_COMMAND}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT}
    LABELS "pg;${T_LABELS}" FIXTURES_REQUIRED tg_pg
    ENVIRONMENT "TG_BUILD_DIR=${PROJECT_BINARY_DIR};TG_SOURCE_DIR=${PROJECT_SOURCE_DIR};TG_TEST_DB=pg;TG_PG_STATE=${TG_PG_STATE}")
endfunction()
