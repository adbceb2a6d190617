// SPDX-License-Identifier: MIT
//
// Network namespaces for multi-host tests (netns.h).
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/xalloc.h"
#include "tests/harness/netns.h"

typedef struct tg_host {
	char name[TG_NET_NAME_MAX];
	char ns[TG_NET_NAME_MAX + 32];
	char addr[32];
} tg_host;

struct tg_net {
	char    prefix[32];
	char    subnet[24];
	char    sw[64]; // the switch namespace
	tg_host hosts[TG_NET_HOSTS_MAX];
	int     nhosts;
};

// Moves the calling thread into namespace ns; 0 or -1.
static int
enter_ns(const char *ns)
{
	char path[128];
	int  fd;
	int  rv;

	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		return (-1);
	}
	rv = setns(fd, CLONE_NEWNET);
	close(fd);
	return (rv);
}

static const tg_host *
find(const tg_net *n, const char *name)
{
	for (int i = 0; n != NULL && i < n->nhosts; i++) {
		if (strcmp(n->hosts[i].name, name) == 0) {
			return (&n->hosts[i]);
		}
	}
	return (NULL);
}

// Runs argv in network namespace ns (NULL: this one), output to out_path
// (NULL: inherited); its exit status, or -1.
static int
run_in(const char *ns, const char *const argv[], const char *out_path)
{
	pid_t pid;
	int   st;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		return (-1);
	}
	if (pid == 0) {
		if (out_path != NULL) {
			int fd = open(out_path,
			    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

			if (fd >= 0) {
				dup2(fd, STDOUT_FILENO);
				dup2(fd, STDERR_FILENO);
			}
		}
		if (ns != NULL && enter_ns(ns) != 0) {
			_exit(126);
		}
		execvp(argv[0], (char *const *) argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			return (-1);
		}
	}
	return (WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int
tg_run(const tg_net *n, const char *host, const char *const argv[],
    const char *out_path)
{
	const tg_host *h = host != NULL ? find(n, host) : NULL;

	if (host != NULL && h == NULL) {
		return (-1);
	}
	return (run_in(h != NULL ? h->ns : NULL, argv, out_path));
}

// Runs `ip` with the given arguments (NULL-terminated); 0 on success.
// A leading "-n NS" is done by entering NS ourselves (setns) rather than
// by `ip -n`, which also remounts /sys in a new mount namespace and so
// fails where / is not a mount point (a chroot).
static int
ip(const char *a0, ...)
{
	const char *argv[24];
	const char *ns = NULL;
	int         n  = 0;
	va_list     ap;

	argv[n++] = "ip";
	va_start(ap, a0);
	if (strcmp(a0, "-n") == 0) {
		ns = va_arg(ap, const char *);
	} else {
		argv[n++] = a0;
	}
	while (n < 23 && (argv[n] = va_arg(ap, const char *)) != NULL) {
		n++;
	}
	va_end(ap);
	argv[n] = NULL;
	if (run_in(ns, argv, "/dev/null") != 0) {
		fprintf(stderr, "netns: failed:%s%s", ns != NULL ? " in " : "",
		    ns != NULL ? ns : "");
		for (int i = 0; i < n; i++) {
			fprintf(stderr, " %s", argv[i]);
		}
		fprintf(stderr, "\n");
		return (-1);
	}
	return (0);
}

int
tg_net_available(char *why, size_t n)
{
	char        ns[64];
	const char *rm[] = { "ip", "netns", "del", ns, NULL };
	const char *v[]  = { "ip", "-V", NULL };

	if (geteuid() != 0) {
		snprintf(why, n, "needs root (network namespaces)");
		return (-1);
	}
	if (tg_run(NULL, NULL, v, "/dev/null") != 0) {
		snprintf(why, n, "iproute2's ip is not installed");
		return (-1);
	}
	snprintf(ns, sizeof(ns), "tgprobe%d", (int) getpid());
	if (ip("netns", "add", ns, NULL) != 0) {
		snprintf(why, n, "cannot create a network namespace here");
		return (-1);
	}
	tg_run(NULL, NULL, rm, "/dev/null");
	return (0);
}

tg_net *
tg_net_open(const char *prefix, const char *subnet)
{
	tg_net *n = cm_xcalloc(1, sizeof(*n));

	snprintf(n->prefix, sizeof(n->prefix), "%s", prefix);
	snprintf(n->subnet, sizeof(n->subnet), "%s", subnet);
	snprintf(n->sw, sizeof(n->sw), "%s-sw", prefix);
	if (ip("netns", "add", n->sw, NULL) != 0 ||
	    ip("-n", n->sw, "link", "add", "br0", "type", "bridge", NULL) !=
	        0 ||
	    ip("-n", n->sw, "link", "set", "br0", "up", NULL) != 0) {
		tg_net_close(n);
		return (NULL);
	}
	return (n);
}

int
tg_net_host(tg_net *n, const char *name, int host)
{
	tg_host *h;
	tg_host  tmp;
	char     port[16];
	char     cidr[40];

	if (n->nhosts == TG_NET_HOSTS_MAX || strlen(name) >= TG_NET_NAME_MAX ||
	    host < 1 || host > 254) {
		return (-1);
	}
	// Built in a local first: GCC cannot tell h's fields from n's.
	memset(&tmp, 0, sizeof(tmp));
	snprintf(tmp.name, sizeof(tmp.name), "%s", name);
	snprintf(tmp.ns, sizeof(tmp.ns), "%s-%s", n->prefix, name);
	snprintf(tmp.addr, sizeof(tmp.addr), "%s.%d", n->subnet, host);
	h  = &n->hosts[n->nhosts];
	*h = tmp;
	snprintf(port, sizeof(port), "p%d", n->nhosts);
	snprintf(cidr, sizeof(cidr), "%s/24", h->addr);
	// The pair is made inside the switch namespace, its far end moved
	// into the host's as eth0: the caller's namespace never sees it.
	if (ip("netns", "add", h->ns, NULL) != 0) {
		return (-1);
	}
	n->nhosts++;
	if (ip("-n", n->sw, "link", "add", port, "type", "veth", "peer",
	        "name", "eth0", "netns", h->ns, NULL) != 0 ||
	    ip("-n", n->sw, "link", "set", port, "master", "br0", NULL) != 0 ||
	    ip("-n", n->sw, "link", "set", port, "up", NULL) != 0 ||
	    ip("-n", h->ns, "addr", "add", cidr, "dev", "eth0", NULL) != 0 ||
	    ip("-n", h->ns, "link", "set", "eth0", "up", NULL) != 0 ||
	    ip("-n", h->ns, "link", "set", "lo", "up", NULL) != 0) {
		return (-1);
	}
	return (0);
}

char *
tg_net_addr(const tg_net *n, const char *name, char *out, size_t len)
{
	const tg_host *h = find(n, name);

	if (h == NULL) {
		return (NULL);
	}
	snprintf(out, len, "%s", h->addr);
	return (out);
}

char *
tg_net_ns(const tg_net *n, const char *name, char *out, size_t len)
{
	const tg_host *h = find(n, name);

	if (h == NULL) {
		return (NULL);
	}
	snprintf(out, len, "%s", h->ns);
	return (out);
}

int
tg_net_enter(const tg_net *n, const char *name)
{
	const tg_host *h = find(n, name);

	return (h != NULL ? enter_ns(h->ns) : -1);
}

void
tg_net_close(tg_net *n)
{
	if (n == NULL) {
		return;
	}
	for (int i = 0; i < n->nhosts; i++) {
		ip("netns", "del", n->hosts[i].ns, NULL);
	}
	ip("netns", "del", n->sw, NULL);
	free(n);
}
