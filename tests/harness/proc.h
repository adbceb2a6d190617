// SPDX-License-Identifier: MIT
//
// Test harness for the C contract and HTTP tests: start real service
// binaries as child processes in a temporary directory, wait until they
// are ready (bounded polling, never a blind sleep), stop them.
#ifndef TG_HARNESS_PROC_H
#define TG_HARNESS_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tg_proc tg_proc;

/**
 * tg_build_dir() is $TG_BUILD_DIR (set by CTest), else "build".
 * tg_source_dir() is $TG_SOURCE_DIR, else ".". Borrowed strings.
 */
const char *tg_build_dir(void);
const char *tg_source_dir(void);

/**
 * tg_tmpdir() makes a new private directory under $TMPDIR (or /tmp) named
 * after prefix and returns it (new string; free it). Aborts on failure.
 */
char *tg_tmpdir(const char *prefix);

/**
 * tg_proc_start() forks and execs argv[0] (an absolute path or one
 * relative to the cwd) with argv, the current environment plus env (a
 * NULL-terminated list of "NAME=value", may be NULL; these override), and
 * stdout+stderr appended to log_path. Returns 0 and *out, or -1.
 */
int tg_proc_start(const char *const argv[], const char *const env[],
    const char *log_path, tg_proc **out);

/**
 * tg_proc_start_ns() is tg_proc_start() with the child moved into the
 * network namespace named ns (/run/netns/<ns>; NULL = the caller's)
 * before it execs; such a child is also killed (SIGKILL) if the test
 * process dies first.
 */
int tg_proc_start_ns(const char *ns, const char *const argv[],
    const char *const env[], const char *log_path, tg_proc **out);

/**
 * tg_proc_stop() sends SIGTERM, waits up to 10 s, then SIGKILL; frees p.
 * Returns the exit status as from waitpid (WIFEXITED etc.), or -1 if it
 * had to be killed. NULL allowed (returns 0).
 */
int tg_proc_stop(tg_proc *p);

/** tg_proc_alive() is 1 while the child has not exited. */
int tg_proc_alive(tg_proc *p);

/** tg_proc_pid() is the child's pid. */
pid_t tg_proc_pid(tg_proc *p);

/**
 * tg_wait_port_file() polls (every 10 ms, up to timeout_ms) until path
 * holds a port number written by a server's --port-file option; returns
 * the port or -1 on timeout.
 */
int tg_wait_port_file(const char *path, int timeout_ms);

/**
 * tg_wait_http_ok() polls GET http://127.0.0.1:port<path> until any HTTP
 * answer arrives (up to timeout_ms). Returns 0 or -1.
 */
int tg_wait_http_ok(int port, const char *path, int timeout_ms);

/**
 * tg_read_file() returns the whole file as a new NUL-terminated string, or
 * NULL. Handy to show a service's log when a test fails.
 */
char *tg_read_file(const char *path);

/**
 * tg_test_db() writes into out (len bytes) the THREADS_DB target a test
 * should use for a new, empty thread-service database:
 *   - TG_TEST_DB=pg: a fresh database of the test PostgreSQL cluster,
 *     made by `scripts/pg-test-cluster.sh createdb`, which prints its
 *     connection URL on stdout (the cluster is started by the ctest
 *     fixture of the tests labelled pg);
 *   - otherwise: the sqlite file name in dir.
 * Returns 0, or -1 (with a message on stderr) when no database could be
 * made.
 */
int tg_test_db(const char *dir, const char *name, char *out, size_t len);

/** tg_test_db_is_pg() is 1 when TG_TEST_DB=pg. */
int tg_test_db_is_pg(void);

#endif // TG_HARNESS_PROC_H
