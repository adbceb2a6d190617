// SPDX-License-Identifier: MIT
//
// Child-process harness for the C contract and HTTP tests (proc.h).
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "tests/harness/proc.h"

// Longest file tg_read_file() returns (service logs in tests are small).
#define HARNESS_FILE_MAX (8u * 1024u * 1024u)
// Most environment entries a child gets (parent's + extra).
#define HARNESS_ENV_MAX 1024
// Poll interval for readiness checks.
#define HARNESS_POLL_MS 10

struct tg_proc {
	pid_t pid;
	int   exited;
	int   status;
};

extern char **environ;

const char *
tg_build_dir(void)
{
	return (cm_env_str("TG_BUILD_DIR", "build"));
}

const char *
tg_source_dir(void)
{
	return (cm_env_str("TG_SOURCE_DIR", "."));
}

char *
tg_tmpdir(const char *prefix)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/tg-%s-XXXXXX",
	    cm_env_str("TMPDIR", "/tmp"), prefix != NULL ? prefix : "test");
	if (mkdtemp(path) == NULL) {
		perror("mkdtemp");
		abort();
	}
	return (cm_xstrdup(path));
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

// Builds the child's environment: parent's entries not overridden by
// extra, then extra. The strings are borrowed.
static char **
child_env(const char *const extra[])
{
	char **env = cm_xcalloc(HARNESS_ENV_MAX + 1, sizeof(char *));
	size_t n   = 0;

	for (char **e = environ; *e != NULL && n < HARNESS_ENV_MAX; e++) {
		const char *eq  = strchr(*e, '=');
		size_t      len = eq != NULL ? (size_t) (eq - *e) + 1 : 0;
		int         overridden = 0;

		for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
			if (len > 0 && strncmp(extra[i], *e, len) == 0) {
				overridden = 1;
				break;
			}
		}
		if (!overridden) {
			env[n++] = *e;
		}
	}
	for (size_t i = 0;
	     extra != NULL && extra[i] != NULL && n < HARNESS_ENV_MAX; i++) {
		env[n++] = (char *) extra[i];
	}
	env[n] = NULL;
	return (env);
}

int
tg_proc_start(const char *const argv[], const char *const env[],
    const char *log_path, tg_proc **out)
{
	return (tg_proc_start_ns(NULL, argv, env, log_path, out));
}

int
tg_proc_start_ns(const char *ns, const char *const argv[],
    const char *const env[], const char *log_path, tg_proc **out)
{
	char   **cenv = child_env(env);
	pid_t    pid;
	tg_proc *p;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		free(cenv);
		return (-1);
	}
	if (pid == 0) {
		int fd = open(log_path != NULL ? log_path : "/dev/null",
		    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0) {
			dup2(nul, STDIN_FILENO);
		}
		if (ns != NULL) {
			char path[256];
			int  nfd;

			// Dies with the test (a test killed by its timeout
			// must not leave services running in its namespaces).
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			snprintf(path, sizeof(path), "/run/netns/%s", ns);
			nfd = open(path, O_RDONLY | O_CLOEXEC);
			if (nfd < 0 || setns(nfd, CLONE_NEWNET) != 0) {
				fprintf(stderr, "setns %s: %s\n", ns,
				    strerror(errno));
				_exit(126);
			}
			close(nfd);
		}
		execve(argv[0], (char *const *) argv, cenv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	free(cenv);
	p      = cm_xcalloc(1, sizeof(*p));
	p->pid = pid;
	*out   = p;
	return (0);
}

int
tg_proc_alive(tg_proc *p)
{
	if (p->exited) {
		return (0);
	}
	if (waitpid(p->pid, &p->status, WNOHANG) == p->pid) {
		p->exited = 1;
		return (0);
	}
	return (1);
}

pid_t
tg_proc_pid(tg_proc *p)
{
	return (p->pid);
}

int
tg_proc_stop(tg_proc *p)
{
	int status = 0;

	if (p == NULL) {
		return (0);
	}
	if (!p->exited) {
		kill(p->pid, SIGTERM);
		for (int i = 0; i < 10000 / HARNESS_POLL_MS; i++) {
			if (!tg_proc_alive(p)) {
				break;
			}
			sleep_ms(HARNESS_POLL_MS);
		}
		if (!p->exited) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &p->status, 0);
			free(p);
			return (-1);
		}
	}
	status = p->status;
	free(p);
	return (status);
}

char *
tg_read_file(const char *path)
{
	FILE  *f = fopen(path, "rb");
	char  *buf;
	size_t n;

	if (f == NULL) {
		return (NULL);
	}
	buf = cm_xmalloc(HARNESS_FILE_MAX + 1);
	n   = fread(buf, 1, HARNESS_FILE_MAX, f);
	fclose(f);
	buf[n] = '\0';
	return (buf);
}

int
tg_wait_port_file(const char *path, int timeout_ms)
{
	int64_t end = cm_mono_ms() + timeout_ms;

	do {
		char   *s = tg_read_file(path);
		int64_t port;

		if (s != NULL) {
			s[strcspn(s, "\r\n")] = '\0';
			if (cm_parse_i64(s, 1, 65535, &port) == CM_OK) {
				free(s);
				return ((int) port);
			}
			free(s);
		}
		sleep_ms(HARNESS_POLL_MS);
	} while (cm_mono_ms() < end);
	return (-1);
}

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return (size * nmemb);
}

int
tg_wait_http_ok(int port, const char *path, int timeout_ms)
{
	int64_t end = cm_mono_ms() + timeout_ms;
	char    url[256];
	CURL   *h  = curl_easy_init();
	int     rv = -1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port,
	    path != NULL ? path : "/");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	do {
		if (curl_easy_perform(h) == CURLE_OK) {
			rv = 0;
			break;
		}
		sleep_ms(HARNESS_POLL_MS * 2);
	} while (cm_mono_ms() < end);
	curl_easy_cleanup(h);
	return (rv);
}

int
tg_test_db_is_pg(void)
{
	const char *v = getenv("TG_TEST_DB");

	return (v != NULL && strcmp(v, "pg") == 0);
}

int
tg_test_db(const char *dir, const char *name, char *out, size_t len)
{
	char   cmd[1024];
	FILE  *p;
	size_t n;
	int    rc;

	if (!tg_test_db_is_pg()) {
		rc = snprintf(out, len, "%s/%s", dir, name);
		return (rc > 0 && (size_t) rc < len ? 0 : -1);
	}
	snprintf(cmd, sizeof(cmd), "%s/scripts/pg-test-cluster.sh createdb",
	    tg_source_dir());
	p = popen(cmd, "r");
	if (p == NULL) {
		fprintf(stderr, "tg_test_db: cannot run %s\n", cmd);
		return (-1);
	}
	n      = fread(out, 1, len - 1, p);
	out[n] = '\0';
	rc     = pclose(p);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) {
		out[--n] = '\0';
	}
	if (rc != 0 || n == 0) {
		fprintf(
		    stderr, "tg_test_db: %s failed (status %d)\n", cmd, rc);
		return (-1);
	}
	return (0);
}
