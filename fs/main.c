/*
 * main.c -- mount.deltafs STORE MOUNTPOINT [-f] [-d] [-o option,...]: arguments, start-up checks,
 * detaching, the mount's lifetime.
 *
 * It is also the mount(8) helper: `mount -t deltafs STORE MNT -o opts` (or an fstab line of type
 * deltafs) runs /sbin/mount.deltafs STORE MNT [-sfnv] [-N ns] -o opts. So the flags mount(8) adds
 * and the options only mount(8) and fstab understand (defaults, auto, noauto, user, users, nouser,
 * owner, group, _netdev, nofail, comment=, x-*) are accepted and ignored, as are rw and ro: the
 * mount is always read-only (the kernel then refuses writes with EROFS itself). One clash: mount(8)
 * passes -f for its "fake" mode, which here means "foreground".
 *
 * Failing before anything is mounted: the store is opened and every manifest loaded, and the
 * mountpoint checked (a directory, not already a mount point), before fuse_session_mount; each
 * failure prints one line and exits 1.
 *
 * Detaching: without -f the process forks first and the child does all of the above, so the store
 * is opened by the process that serves it (an LMDB environment must not cross a fork: its reader
 * slots and locks belong to the opening process). The child reports one status byte through a
 * pipe once the mount is live (or it failed, having printed why), and the parent exits with it:
 * `mount` returns only when the mount is usable or has failed. Then the child logs to syslog.
 *
 * Stopping: `fusermount3 -u`, `umount`, SIGTERM, SIGINT or SIGHUP end the session loop; the mount
 * is then removed (if still there), the threads stopped and the store closed, exit status 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../index/tier.h"
#include "log.h"
#include "mount.h"

#define FS_DEFAULT_CACHE_MIB 256
#define FS_DEFAULT_THREADS 8

struct cli {
	char *store, *mnt;
	unsigned cache_mib, threads, prefetch, read_ahead_kb;
	char *remote_cache; /* GiB (a decimal number): bound of a clone's blob cache (index/tier.h) */
	uint64_t remote_cache_bytes; /* the same in bytes, 0: the default */
	int foreground, debug, help, version;
};

enum { KEY_FG, KEY_DEBUG, KEY_HELP, KEY_VERSION };

#define CLI_OPT(t, f) {t, offsetof(struct cli, f), 0}

static const struct fuse_opt cli_opts[] = {
	CLI_OPT("cache_size=%u", cache_mib),
	CLI_OPT("threads=%u", threads),
	CLI_OPT("prefetch=%u", prefetch),
	CLI_OPT("read_ahead_kb=%u", read_ahead_kb),
	CLI_OPT("remote_cache=%s", remote_cache),
	FUSE_OPT_KEY("-f", KEY_FG),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	/* mount(8)'s helper flags: sloppy, no mtab, verbose, namespace, type. */
	FUSE_OPT_KEY("-s", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("-n", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("-v", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("-N ", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("-t ", FUSE_OPT_KEY_DISCARD),
	/* fstab-only options, and the ones the mount fixes itself. */
	FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("owner", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("group", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("comment=", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("rw", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("ro", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("max_read=", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_END
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mount.deltafs STORE MOUNTPOINT [-f] [-d] [-o option[,option...]]\n"
		"Shows each checkpoint of the deltafs store STORE as a read-only directory\n"
		"MOUNTPOINT/NAME holding its files as they were added.\n"
		"\n"
		"  -f                 stay in the foreground, log to stderr (else: detach, syslog)\n"
		"  -d, -o debug       -f, and trace every FUSE request\n"
		"  -o cache_size=MiB  bound of the decoded-chunk cache (default %u)\n"
		"  -o threads=N       FUSE worker threads at most (default %u)\n"
		"  -o prefetch=N      threads decoding ahead of sequential readers (default: one\n"
		"                     per CPU, at least 8 on a store with a remote; 0: none)\n"
		"  -o read_ahead_kb=N the mount's readahead, set after mounting (default %u: the\n"
		"                     largest request; needs root; 0: the kernel's 128)\n"
		"  -o remote_cache=GiB a store with a remote (deltafs clone): bound of STORE/cache,\n"
		"                     the blobs fetched on demand (default %u)\n"
		"  -o allow_other     let other users read the mount (not root: needs\n"
		"                     user_allow_other in /etc/fuse.conf)\n"
		"Other -o options go to FUSE (fsname=, subtype=, ...). The options of mount(8) and\n"
		"fstab (defaults, noauto, user, _netdev, nofail, x-*, rw, ro, ...) are ignored: the\n"
		"mount is always read-only.\n"
		"Unmount with `fusermount3 -u MOUNTPOINT`, `umount MOUNTPOINT`, or SIGTERM.\n",
		FS_DEFAULT_CACHE_MIB, FS_DEFAULT_THREADS, FS_MAX_READ >> 10,
		(unsigned)(RT_CACHE_DEFAULT >> 30));
}

static int cli_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cli *c = data;
	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!c->store)
			return (c->store = strdup(arg)) ? 0 : -1;
		if (!c->mnt)
			return (c->mnt = strdup(arg)) ? 0 : -1;
		fprintf(stderr, "mount.deltafs: unexpected argument \"%s\"\n", arg);
		return -1;
	case FUSE_OPT_KEY_OPT:
		return strncmp(arg, "x-", 2) ? 1 : 0; /* x-systemd.* and the like: not ours */
	case KEY_FG:
		c->foreground = 1;
		return 0;
	case KEY_DEBUG:
		c->debug = c->foreground = 1;
		return 0;
	case KEY_HELP:
		c->help = 1;
		return 0;
	case KEY_VERSION:
		c->version = 1;
		return 0;
	}
	return 1;
}

/* mountinfo escapes ' ', '\t', '\n' and '\\' in paths as \ooo. */
static void unescape_octal(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

/* Whether abs is a mount point; if so and dev is not NULL, its "major:minor" into dev. */
static int mount_dev(const char *abs, char *dev, size_t devlen)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return 0;
	char *line = NULL;
	size_t cap = 0;
	int found = 0;
	while (!found && getline(&line, &cap, f) > 0) {
		/* id parent major:minor root MOUNTPOINT options ... */
		char *save = NULL, *tok = strtok_r(line, " ", &save), *majmin = NULL;
		for (int i = 0; tok && i < 4; i++) {
			tok = strtok_r(NULL, " ", &save);
			if (i == 1)
				majmin = tok;
		}
		if (tok) {
			unescape_octal(tok);
			found = !strcmp(tok, abs);
			if (found && dev && majmin)
				snprintf(dev, devlen, "%s", majmin);
		}
	}
	free(line);
	fclose(f);
	return found;
}

static int check_mountpoint(const char *mnt, char abs[PATH_MAX], df_err *err)
{
	struct stat st;
	if (stat(mnt, &st)) {
		int e = errno;
		if (e == ENOTCONN)
			return df_errf(err, -e, "%s: a dead FUSE mount is there (its daemon exited): "
				       "`fusermount3 -u %s` first", mnt, mnt);
		return df_errf(err, -e, "mountpoint %s: %s", mnt, strerror(e));
	}
	if (!S_ISDIR(st.st_mode))
		return df_errf(err, -ENOTDIR, "mountpoint %s: not a directory", mnt);
	if (!realpath(mnt, abs))
		return df_errf(err, -errno, "mountpoint %s: %s", mnt, strerror(errno));
	if (mount_dev(abs, NULL, 0))
		return df_errf(err, -EBUSY, "mountpoint %s is busy: something is already mounted "
			       "there (unmount it first, e.g. `fusermount3 -u %s`)", mnt, mnt);
	return 0;
}

/* Options every session gets, before the user's (which may override fsname/subtype). */
static int session_args(struct fuse_args *args, const char *store_abs, int debug)
{
	char *o = NULL;
	char fixed[128];
	snprintf(fixed, sizeof fixed, "ro,default_permissions,subtype=deltafs,max_read=%u",
		 FS_MAX_READ);
	char *fsname = malloc(strlen(store_abs) + 8);
	if (!fsname)
		return -1;
	sprintf(fsname, "fsname=%s", store_abs);
	int rc = fuse_opt_add_opt(&o, fixed) || fuse_opt_add_opt_escaped(&o, fsname) ||
		 fuse_opt_insert_arg(args, 1, "-o") || fuse_opt_insert_arg(args, 2, o) ||
		 (debug && fuse_opt_insert_arg(args, 1, "-d"));
	free(fsname);
	free(o);
	return rc ? -1 : 0;
}

/* Everything after detaching (or in the foreground). status_fd: where to report the start-up
 * outcome to the waiting parent, -1 in the foreground. Returns the exit status. */
static int serve(struct cli *c, struct fuse_args *args, int status_fd)
{
	df_err err = {""};
	store *st = NULL;
	rt_tier *tier = NULL;
	struct fuse_session *se = NULL;
	fs_mount m;
	int have_m = 0, mounted = 0, rc;
	char store_abs[PATH_MAX], mnt_abs[PATH_MAX];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	fs_opts o = {c->cache_mib, c->threads,
		     c->prefetch != UINT_MAX ? c->prefetch : ncpu > 0 ? (unsigned)ncpu : 1,
		     c->read_ahead_kb};

	if (!realpath(c->store, store_abs)) {
		df_errf(&err, -errno, "store %s: %s", c->store, strerror(errno));
		goto fail;
	}
	if ((rc = store_open(store_abs, STORE_RDONLY | STORE_RANDOM, &st, &err)))
		goto fail;
	if ((rc = rt_open(st, c->remote_cache_bytes, &tier, &err)))
		goto fail;
	/* An unreachable remote does not stop the mount: what is local or cached reads, the rest
	 * fails with EIO (after the remote's timeout, then at once for a few seconds). */
	/* Fetching ahead waits on the network more than on the CPU: more prefetch threads. */
	if (tier && c->prefetch == UINT_MAX && o.prefetchers < RT_THREADS)
		o.prefetchers = RT_THREADS;
	if (tier && rb_probe(rt_backend(tier), &err))
		fs_log(LOG_WARNING, "%s; serving what is cached, reading anything else fails with "
		       "EIO until it is reachable", err.msg);
	have_m = 1;
	if ((rc = fs_mount_init(&m, st, &o, &err)))
		goto fail;
	if ((rc = check_mountpoint(c->mnt, mnt_abs, &err)))
		goto fail;
	if (session_args(args, store_abs, c->debug)) {
		df_errf(&err, -ENOMEM, "out of memory");
		goto fail;
	}
	/* libfuse prints its own reason for these two failures. */
	if (!(se = fuse_session_new(args, &fs_ops, sizeof fs_ops, &m))) {
		df_errf(&err, -EINVAL, "cannot start a FUSE session (bad -o option?)");
		goto fail;
	}
	if (fuse_set_signal_handlers(se) || fuse_session_mount(se, mnt_abs)) {
		df_errf(&err, -EIO, "cannot mount on %s", c->mnt);
		goto fail;
	}
	mounted = 1;
	if (!mount_dev(mnt_abs, m.bdi, sizeof m.bdi))
		fs_log(LOG_WARNING, "%s is not in /proc/self/mountinfo after mounting", mnt_abs);
	if ((rc = fs_mount_start(&m, se, &err)))
		goto fail;

	if (status_fd >= 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			if (null > 2)
				close(null);
		}
		if (chdir("/"))
			fs_log(LOG_WARNING, "chdir /: %s", strerror(errno));
		fs_log_syslog(1);
		char ok = 0;
		if (write(status_fd, &ok, 1) != 1)
			fs_log(LOG_WARNING, "cannot report start-up to the parent");
		close(status_fd);
	}
	fs_log(LOG_INFO, "%s mounted on %s", store_abs, mnt_abs);

	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	if (!cfg) {
		rc = -ENOMEM;
	} else {
		fuse_loop_cfg_set_max_threads(cfg, c->threads);
		rc = fuse_session_loop_mt(se, cfg); /* > 0: the signal that ended it */
		fuse_loop_cfg_destroy(cfg);
	}
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fc_stats cs;
	fc_get_stats(m.cache, &cs);
	fs_log(LOG_INFO, "unmounted %s; chunk cache: %llu hits, %llu misses, %llu waits, "
	       "%llu evictions, %llu failed decodes", mnt_abs, (unsigned long long)cs.hits,
	       (unsigned long long)cs.misses, (unsigned long long)cs.waits,
	       (unsigned long long)cs.evictions, (unsigned long long)cs.failures);
	if (tier) {
		rt_stats ts;
		rt_get_stats(tier, &ts);
		fs_log(LOG_INFO, "remote: %llu fetches (%llu bytes, %llu ahead of their reader), %llu "
		       "shared with another reader, %llu cache hits, %llu evictions, %llu failed",
		       (unsigned long long)ts.fetches, (unsigned long long)ts.fetch_bytes,
		       (unsigned long long)ts.ahead, (unsigned long long)ts.shared,
		       (unsigned long long)ts.hits, (unsigned long long)ts.evictions,
		       (unsigned long long)ts.failures);
	}
	fs_mount_fini(&m);
	fuse_session_destroy(se);
	rt_close(tier);
	store_close(st);
	return rc < 0 ? 1 : 0;

fail:
	fs_log(LOG_ERR, "%s", err.msg);
	if (mounted)
		fuse_session_unmount(se);
	if (have_m)
		fs_mount_fini(&m); /* before the session: the poller may be using it */
	if (se) {
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
	}
	rt_close(tier);
	store_close(st);
	if (status_fd >= 0) {
		char bad = 1;
		if (write(status_fd, &bad, 1) != 1)
			return 1;
	}
	return 1;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cli c = {.cache_mib = FS_DEFAULT_CACHE_MIB, .threads = FS_DEFAULT_THREADS,
			.prefetch = UINT_MAX, .read_ahead_kb = FS_MAX_READ >> 10};
	int status_fd = -1, rc = 1;
	/* Chunk buffers (128 KiB-1 MiB) come and go with the cache. glibc's dynamic mmap threshold
	 * would soon move them onto per-thread heaps, where freed chunks stay resident: RssAnon
	 * reached 475 MiB under cache_size=256 (tests/bench/run.sh). A fixed threshold keeps
	 * each one its own mapping, returned to the kernel when the cache drops it. */
	mallopt(M_MMAP_THRESHOLD, 128 << 10);
	mallopt(M_ARENA_MAX, 4);
	if (fuse_opt_parse(&args, &c, cli_opts, cli_proc)) {
		usage(stderr);
		goto out;
	}
	if (c.help || c.version) {
		if (c.help)
			usage(stdout);
		else
			printf("mount.deltafs %s (libfuse %s)\n", DELTAFS_VERSION, fuse_pkgversion());
		rc = 0;
		goto out;
	}
	if (!c.store || !c.mnt) {
		usage(stderr);
		goto out;
	}
	if (!c.cache_mib || !c.threads) {
		fprintf(stderr, "mount.deltafs: cache_size and threads must be at least 1\n");
		goto out;
	}
	if (c.remote_cache) {
		char *end;
		double gib = strtod(c.remote_cache, &end);
		if (*end || end == c.remote_cache || !(gib > 0) || gib > 1e6) {
			fprintf(stderr, "mount.deltafs: remote_cache=%s: a size in GiB, such as 64 or "
				"0.5\n", c.remote_cache);
			goto out;
		}
		c.remote_cache_bytes = (uint64_t)(gib * (double)(1ull << 30));
	}
	fs_log_debug(c.debug);

	if (!c.foreground) {
		int p[2];
		pid_t pid = -1;
		if (pipe(p) || (pid = fork()) < 0) {
			perror("mount.deltafs: cannot detach");
			goto out;
		}
		if (pid > 0) {
			char st;
			close(p[1]);
			if (read(p[0], &st, 1) != 1)
				fprintf(stderr, "mount.deltafs: the daemon died while starting\n");
			else
				rc = st ? 1 : 0;
			goto out;
		}
		close(p[0]);
		status_fd = p[1];
		setsid();
	}
	rc = serve(&c, &args, status_fd);
out:
	fuse_opt_free_args(&args);
	free(c.store);
	free(c.mnt);
	free(c.remote_cache);
	return rc;
}
