// SPDX-License-Identifier: MIT
//
// Network namespaces for multi-host tests (root only): a private switch
// namespace holding a Linux bridge, and one namespace per "host", each
// linked to the bridge by a veth pair and given one address of a /24.
// Nothing is configured in the caller's own namespace: the hosts reach
// only each other. Built with iproute2's `ip` (run without a shell).
#ifndef TG_HARNESS_NETNS_H
#define TG_HARNESS_NETNS_H

#include <stddef.h>
#include <sys/types.h>

// Most hosts of one network.
#define TG_NET_HOSTS_MAX 16
// Longest host name (the namespace is "<prefix>-<name>", at most
// NAME_MAX; interface names are made from the host's index).
#define TG_NET_NAME_MAX 24

typedef struct tg_net tg_net;

/**
 * tg_net_available() is 0 when this process can build namespaces (root,
 * `ip` on PATH, a test namespace can be made and removed), else -1 with
 * the reason in why (n bytes).
 */
int tg_net_available(char *why, size_t n);

/**
 * tg_net_open() makes the switch namespace "<prefix>-sw" with a bridge;
 * hosts will get addresses subnet.<host> (subnet is "10.231.0"). Returns
 * NULL on failure (logged on stderr). Remove with tg_net_close().
 */
tg_net *tg_net_open(const char *prefix, const char *subnet);

/**
 * tg_net_host() adds host name with address subnet.host (/24) and
 * loopback up. Returns 0 or -1.
 */
int tg_net_host(tg_net *n, const char *name, int host);

/**
 * tg_net_addr() writes the host's address ("10.231.0.21") into out.
 * tg_net_ns() writes its namespace name. Both return out, or NULL for an
 * unknown host.
 */
char *tg_net_addr(const tg_net *n, const char *name, char *out, size_t len);
char *tg_net_ns(const tg_net *n, const char *name, char *out, size_t len);

/**
 * tg_net_enter() moves the calling thread into the host's namespace
 * (threads it creates afterwards start there too). Returns 0 or -1.
 */
int tg_net_enter(const tg_net *n, const char *name);

/**
 * tg_net_close() removes every namespace of n (their interfaces go with
 * them) and frees n. Processes still running in them keep them alive
 * until they exit. NULL allowed.
 */
void tg_net_close(tg_net *n);

/**
 * tg_run() runs argv (argv[0] looked up on PATH) without a shell, with
 * stdout and stderr going to out_path (appended; NULL = inherited), in
 * the namespace of host (NULL = the caller's), and waits for it. Returns
 * its exit status (0..255), or -1 when it could not run.
 */
int tg_run(const tg_net *n, const char *host, const char *const argv[],
    const char *out_path);

#endif // TG_HARNESS_NETNS_H
