/*
 * rados.c -- the remote backend over Ceph RADOS (librados), for URLs rados:POOL[/NAMESPACE].
 *
 * Connecting is lazy and guarded: the first operation connects (cluster from the ceph.conf that
 * CEPH_CONF or the configured path names, cephx client `id`); a failed connect is remembered for
 * RADOS_RETRY_S so that a mount whose cluster is gone answers its readers with EIO at once instead
 * of making each wait the full timeout again. Every operation is bounded by the librados timeouts
 * (rados_osd_op_timeout, rados_mon_op_timeout, client_mount_timeout) set to rb_timeout_s(): an op
 * against a dead OSD fails with -ETIMEDOUT, and one against an OSD that restarts within the timeout
 * is resent by librados itself and succeeds.
 *
 * The catalog is the omap of object RB_CATALOG: publish is one write op (create if absent + omap
 * set), which the OSD applies atomically, so two hosts publishing at once both keep their keys.
 */
#include "remote.h"

#include <errno.h>
#include <pthread.h>
#include <rados/librados.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RADOS_RETRY_S 5        /* after a failed connect, fail fast for this long */
#define RADOS_READ_MAX (4u << 20) /* bytes per rados_read call */
#define RADOS_FIRST_READ (1u << 20) /* bytes read with the stat, in the same op */
#define RADOS_OMAP_PAGE 1000   /* catalog entries per omap read */
#define RADOS_SCRATCH 32       /* idle first-read buffers kept (one per concurrent r_get) */

typedef struct rados_be {
	rb_backend base;
	char *pool, *ns, *id, *conf;
	pthread_mutex_t mu; /* guards connecting and the fields below */
	int connected;
	rados_t cl;
	rados_ioctx_t io;
	struct timespec failed_at; /* CLOCK_MONOTONIC of the last failed connect */
	int failed_rc;
	char failed_msg[sizeof(df_err)];
	int watching;              /* a watch on the catalog is registered (cookie) */
	int watch_lost;            /* ...but librados reported it broken */
	uint64_t cookie;
	void (*on_change)(void *ud);
	void *on_change_ud;
	char *scratch[RADOS_SCRATCH]; /* idle RADOS_FIRST_READ buffers (r_get) */
	int nscratch;
} rados_be;

static int rerr(rados_be *r, df_err *err, int rc, const char *what, const char *oid)
{
	if (rc >= 0)
		rc = -EIO;
	return df_errf(err, rc, "%s: %s%s%s: %s%s", r->base.url, what, oid ? " " : "", oid ? oid : "",
		       strerror(-rc), rc == -ETIMEDOUT ? " (the cluster did not answer in time)" : "");
}

static double since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static int do_connect(rados_be *r, df_err *err)
{
	char t[16];
	const char *stage = "cannot create a cluster handle";
	rados_t cl;
	int rc = rados_create(&cl, r->id);
	if (rc)
		return rerr(r, err, rc, stage, NULL);
	snprintf(t, sizeof t, "%u", rb_timeout_s());
	stage = "cannot read the Ceph configuration (set CEPH_CONF or --conf)";
	rc = rados_conf_read_file(cl, r->conf);
	if (!rc)
		rc = rados_conf_parse_env(cl, NULL);
	if (!rc) {
		stage = "cannot set timeouts";
		rc = rados_conf_set(cl, "rados_osd_op_timeout", t);
	}
	if (!rc)
		rc = rados_conf_set(cl, "rados_mon_op_timeout", t);
	if (!rc)
		rc = rados_conf_set(cl, "client_mount_timeout", t);
	if (!rc) {
		stage = "cannot connect to the cluster";
		rc = rados_connect(cl);
	}
	if (!rc) {
		stage = "cannot open the pool";
		rc = rados_ioctx_create(cl, r->pool, &r->io);
	}
	if (rc) {
		rados_shutdown(cl);
		return rerr(r, err, rc, stage, NULL);
	}
	rados_ioctx_set_namespace(r->io, r->ns);
	r->cl = cl;
	r->connected = 1;
	return 0;
}

/* The I/O context, connecting first if needed. */
static int ioctx(rados_be *r, rados_ioctx_t *io, df_err *err)
{
	int rc = 0;
	pthread_mutex_lock(&r->mu);
	if (!r->connected) {
		if (r->failed_rc && since(&r->failed_at) < RADOS_RETRY_S) {
			rc = df_errf(err, r->failed_rc, "%s", r->failed_msg);
		} else {
			df_err e;
			rc = do_connect(r, &e);
			r->failed_rc = rc;
			if (rc) {
				clock_gettime(CLOCK_MONOTONIC, &r->failed_at);
				snprintf(r->failed_msg, sizeof r->failed_msg, "%s", e.msg);
				df_errf(err, rc, "%s", e.msg);
			}
		}
	}
	*io = r->io;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int r_probe(rb_backend *b, df_err *err)
{
	rados_ioctx_t io;
	return ioctx((rados_be *)b, &io, err);
}

/* A RADOS_FIRST_READ buffer from the idle ones, else a new one (NULL: out of memory). Why kept:
 * a fresh 1 MiB malloc is an mmap, whose page faults, munmap and TLB shootdowns took ~20% of a
 * mount's CPU during a cold sequential read; a kept buffer's pages are mapped already. */
static char *scratch_take(rados_be *r)
{
	char *p = NULL;
	pthread_mutex_lock(&r->mu);
	if (r->nscratch)
		p = r->scratch[--r->nscratch];
	pthread_mutex_unlock(&r->mu);
	return p ? p : malloc(RADOS_FIRST_READ);
}

static void scratch_give(rados_be *r, char *p)
{
	pthread_mutex_lock(&r->mu);
	if (r->nscratch < RADOS_SCRATCH) {
		r->scratch[r->nscratch++] = p;
		p = NULL;
	}
	pthread_mutex_unlock(&r->mu);
	free(p);
}

static int r_get(rb_backend *b, const char *oid, void **p, size_t *n, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	uint64_t size = 0;
	size_t got = 0;
	char *buf = NULL;
	int rc = ioctx(r, &io, err), srv = 0, rrv = 0;
	if (rc)
		return rc;
	/* One round trip for what fits RADOS_FIRST_READ (every blob: chunks are at most a few
	 * hundred KiB): stat and read in one op, into a kept buffer; then the object's exact size is
	 * known, and a larger object (a manifest) reads the rest straight into its own buffer. */
	char *first = scratch_take(r);
	rados_read_op_t op = rados_create_read_op();
	if (!first || !op) {
		free(first);
		if (op)
			rados_release_read_op(op);
		return df_errf(err, -ENOMEM, "out of memory");
	}
	rados_read_op_stat(op, &size, NULL, &srv);
	rados_read_op_read(op, 0, RADOS_FIRST_READ, first, &got, &rrv);
	rc = rados_read_op_operate(op, io, oid, 0);
	rados_release_read_op(op);
	if (!rc)
		rc = srv ? srv : rrv;
	if (!rc && (got > size || size > SIZE_MAX))
		rc = -EIO;
	if (!rc && !(buf = malloc(size ? (size_t)size : 1)))
		rc = -ENOMEM;
	if (!rc)
		memcpy(buf, first, got);
	scratch_give(r, first);
	while (!rc && got < size) {
		size_t want = size - got < RADOS_READ_MAX ? (size_t)(size - got) : RADOS_READ_MAX;
		int k = rados_read(io, oid, buf + got, want, got);
		/* 0 before the end: the object shrank, which immutable objects never do. */
		rc = k < 0 ? k : k == 0 ? -EIO : 0;
		got += k > 0 ? (size_t)k : 0;
	}
	if (rc) {
		free(buf);
		if (rc == -ENOENT)
			return -ENOENT;
		return rc == -ENOMEM ? df_errf(err, rc, "out of memory") : rerr(r, err, rc, "cannot read", oid);
	}
	*p = buf;
	*n = got;
	return 0;
}

/* The I/O context and a new write op (the caller releases it). */
static int write_op(rados_be *r, rados_ioctx_t *io, rados_write_op_t *op, df_err *err)
{
	int rc = ioctx(r, io, err);
	if (rc)
		return rc;
	if (!(*op = rados_create_write_op()))
		return df_errf(err, -ENOMEM, "out of memory");
	return 0;
}

static int r_put(rb_backend *b, const char *oid, const void *p, size_t n, int create_only,
		 df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	rados_write_op_t op;
	int rc = write_op(r, &io, &op, err);
	if (rc)
		return rc;
	if (create_only)
		rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
	rados_write_op_write_full(op, p, n);
	rc = rados_write_op_operate(op, io, oid, NULL, 0);
	rados_release_write_op(op);
	if (rc == -EEXIST && create_only)
		return -EEXIST;
	return rc ? rerr(r, err, rc, "cannot write", oid) : 0;
}

static int r_stat(rb_backend *b, const char *oid, uint64_t *size, time_t *mtime, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	int rc = ioctx(r, &io, err);
	if (rc)
		return rc;
	rc = rados_stat(io, oid, size, mtime);
	if (rc == -ENOENT)
		return -ENOENT;
	return rc ? rerr(r, err, rc, "cannot stat", oid) : 0;
}

static int r_list(rb_backend *b, int (*fn)(void *ud, const char *oid), void *ud, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	rados_list_ctx_t ctx;
	int rc = ioctx(r, &io, err);
	if (rc)
		return rc;
	if ((rc = rados_nobjects_list_open(io, &ctx)))
		return rerr(r, err, rc, "cannot list objects", NULL);
	const char *oid;
	while (!(rc = rados_nobjects_list_next(ctx, &oid, NULL, NULL)))
		if ((rc = fn(ud, oid)))
			break;
	rados_nobjects_list_close(ctx);
	if (rc == -ENOENT) /* the end */
		return 0;
	return rc < 0 ? rerr(r, err, rc, "cannot list objects", NULL) : rc;
}

static int r_touch(rb_backend *b, const char *oid, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	rados_write_op_t op;
	char now[24];
	int rc = write_op(r, &io, &op, err);
	if (rc)
		return rc;
	/* Any write sets the object's mtime; an xattr write leaves its bytes alone. */
	snprintf(now, sizeof now, "%lld", (long long)time(NULL));
	rados_write_op_assert_exists(op);
	rados_write_op_setxattr(op, "deltafs.touched", now, strlen(now));
	rc = rados_write_op_operate(op, io, oid, NULL, 0);
	rados_release_write_op(op);
	if (rc == -ENOENT)
		return -ENOENT;
	return rc ? rerr(r, err, rc, "cannot touch", oid) : 0;
}

static int r_remove(rb_backend *b, const char *oid, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	int rc = ioctx(r, &io, err);
	if (rc)
		return rc;
	rc = rados_remove(io, oid);
	if (rc == -ENOENT)
		return -ENOENT;
	return rc ? rerr(r, err, rc, "cannot remove", oid) : 0;
}

static int r_catalog(rb_backend *b, rb_entry **out, size_t *nout, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	rb_entry *v = NULL;
	size_t n = 0, cap = 0;
	char *after = NULL;
	unsigned char more = 1;
	int rc = ioctx(r, &io, err);
	while (!rc && more) {
		rados_read_op_t op = rados_create_read_op();
		rados_omap_iter_t it;
		int prval = 0;
		if (!op) {
			rc = df_errf(err, -ENOMEM, "out of memory");
			break;
		}
		rados_read_op_omap_get_vals2(op, after ? after : "", "", RADOS_OMAP_PAGE, &it, &more,
					     &prval);
		rc = rados_read_op_operate(op, io, RB_CATALOG, 0);
		if (!rc)
			rc = prval;
		if (rc) {
			rados_omap_get_end(it); /* allocated with the op, whether it ran or not */
			rados_release_read_op(op);
			if (rc == -ENOENT) /* nothing published yet */
				rc = 0;
			else
				rerr(r, err, rc, "cannot read the catalog", RB_CATALOG);
			break;
		}
		char *key, *val;
		size_t klen, vlen, page0 = n;
		while (!rc && !rados_omap_get_next2(it, &key, &val, &klen, &vlen) && key) {
			if (n == cap) {
				rb_entry *nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof *v);
				if (!nv) {
					rc = df_errf(err, -ENOMEM, "out of memory");
					break;
				}
				v = nv;
			}
			v[n].name = strndup(key, klen);
			v[n].oid = strndup(val, vlen);
			if (!v[n].name || !v[n].oid) {
				free(v[n].name);
				free(v[n].oid);
				rc = df_errf(err, -ENOMEM, "out of memory");
				break;
			}
			n++;
		}
		rados_omap_get_end(it);
		rados_release_read_op(op);
		after = n ? v[n - 1].name : NULL;
		if (n == page0) /* an empty page: done, whatever "more" says */
			more = 0;
	}
	if (rc) {
		rb_entries_free(v, n);
		return rc;
	}
	*out = v;
	*nout = n;
	return 0;
}

static int r_publish(rb_backend *b, const rb_entry *e, size_t n, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	int rc = ioctx(r, &io, err);
	if (rc)
		return rc;
	const char **keys = calloc(n ? n : 1, sizeof *keys), **vals = calloc(n ? n : 1, sizeof *vals);
	size_t *kl = calloc(n ? n : 1, sizeof *kl), *vl = calloc(n ? n : 1, sizeof *vl);
	rados_write_op_t op = rados_create_write_op();
	if (!keys || !vals || !kl || !vl || !op) {
		rc = df_errf(err, -ENOMEM, "out of memory");
	} else {
		for (size_t i = 0; i < n; i++) {
			keys[i] = e[i].name;
			vals[i] = e[i].oid;
			kl[i] = strlen(e[i].name);
			vl[i] = strlen(e[i].oid);
		}
		rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
		rados_write_op_omap_set2(op, keys, vals, kl, vl, n);
		rc = rados_write_op_operate(op, io, RB_CATALOG, NULL, 0);
		if (rc)
			rerr(r, err, rc, "cannot update the catalog", RB_CATALOG);
	}
	if (op)
		rados_release_write_op(op);
	free(keys);
	free(vals);
	free(kl);
	free(vl);
	return rc;
}

/* One write op: each key's value compared with the manifest seen (the OSD cancels the whole op
 * on a mismatch, or on a key gone meanwhile), then the keys removed. */
static int r_unpublish(rb_backend *b, const rb_entry *e, size_t n, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	rados_write_op_t op;
	const char **names = calloc(n ? n : 1, sizeof *names);
	int *cmp = calloc(n ? n : 1, sizeof *cmp);
	int rc = names && cmp ? write_op(r, &io, &op, err) : df_errf(err, -ENOMEM, "out of memory");
	if (rc) {
		free(names);
		free(cmp);
		return rc;
	}
	for (size_t i = 0; i < n; i++) {
		names[i] = e[i].name;
		rados_write_op_omap_cmp(op, e[i].name, LIBRADOS_CMPXATTR_OP_EQ, e[i].oid,
					strlen(e[i].oid), &cmp[i]);
	}
	rados_write_op_omap_rm_keys(op, names, n);
	rc = rados_write_op_operate(op, io, RB_CATALOG, NULL, 0);
	rados_release_write_op(op);
	free(names);
	free(cmp);
	if (rc == -ENOENT)
		return 0;
	if (rc == -ECANCELED)
		return df_errf(err, rc, "%s: the catalog changed meanwhile (published again by another "
			       "host?): nothing removed", r->base.url);
	return rc ? rerr(r, err, rc, "cannot update the catalog", RB_CATALOG) : 0;
}

#define RADOS_NOTIFY_MS 1000 /* how long a notify waits for the watchers' acknowledgements */

static void watch_cb(void *arg, uint64_t notify_id, uint64_t cookie, uint64_t notifier, void *data,
		     size_t len)
{
	rados_be *r = arg;
	(void)notifier;
	(void)data;
	(void)len;
	rados_notify_ack(r->io, RB_CATALOG, notify_id, cookie, NULL, 0);
	r->on_change(r->on_change_ud);
}

/* The watch is gone (the cluster lost us for longer than the watch timeout). Unregistering it is
 * left to the next r_watch, outside librados's callback thread. */
static void watch_err(void *arg, uint64_t cookie, int err)
{
	rados_be *r = arg;
	(void)err;
	pthread_mutex_lock(&r->mu);
	if (r->watching && r->cookie == cookie)
		r->watch_lost = 1;
	pthread_mutex_unlock(&r->mu);
	r->on_change(r->on_change_ud); /* what happened meanwhile is unknown: look */
}

static int r_watch(rb_backend *b, void (*fn)(void *ud), void *ud, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	int rc = ioctx(r, &io, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&r->mu);
	r->on_change = fn;
	r->on_change_ud = ud;
	if (r->watching && r->watch_lost) {
		rados_unwatch2(io, r->cookie);
		r->watching = r->watch_lost = 0;
	}
	if (!r->watching) {
		rc = rados_watch3(io, RB_CATALOG, &r->cookie, watch_cb, watch_err, rb_timeout_s(), r);
		r->watching = !rc;
	}
	pthread_mutex_unlock(&r->mu);
	if (rc == -ENOENT)
		return -ENOENT;
	return rc ? rerr(r, err, rc, "cannot watch", RB_CATALOG) : 0;
}

static int r_notify(rb_backend *b, df_err *err)
{
	rados_be *r = (rados_be *)b;
	rados_ioctx_t io;
	char *reply = NULL;
	size_t len = 0;
	int rc = ioctx(r, &io, err);
	if (rc)
		return rc;
	rc = rados_notify2(io, RB_CATALOG, NULL, 0, RADOS_NOTIFY_MS, &reply, &len);
	rados_buffer_free(reply);
	/* -ETIMEDOUT: a watcher did not answer in time (gone); it polls anyway. */
	return rc && rc != -ETIMEDOUT ? rerr(r, err, rc, "cannot notify the watchers of", RB_CATALOG)
				      : 0;
}

static void r_close(rb_backend *b)
{
	rados_be *r = (rados_be *)b;
	if (r->watching) {
		rados_unwatch2(r->io, r->cookie);
		rados_watch_flush(r->cl);
	}
	if (r->connected) {
		rados_ioctx_destroy(r->io);
		rados_shutdown(r->cl);
	}
	pthread_mutex_destroy(&r->mu);
	for (int i = 0; i < r->nscratch; i++)
		free(r->scratch[i]);
	free(r->pool);
	free(r->ns);
	free(r->id);
	free(r->conf);
	free(r->base.url);
	free(r);
}

static const rb_ops rados_ops = {
	.probe = r_probe,
	.get = r_get,
	.put = r_put,
	.stat = r_stat,
	.list = r_list,
	.touch = r_touch,
	.remove = r_remove,
	.catalog = r_catalog,
	.publish = r_publish,
	.unpublish = r_unpublish,
	.watch = r_watch,
	.notify = r_notify,
	.close = r_close,
};

/* Called by rb_open for "rados:..." URLs. */
int rb_rados_open(const rb_config *cfg, rb_backend **out, df_err *err);
int rb_rados_open(const rb_config *cfg, rb_backend **out, df_err *err)
{
	const char *spec = cfg->url + strlen("rados:");
	const char *slash = strchr(spec, '/');
	size_t plen = slash ? (size_t)(slash - spec) : strlen(spec);
	if (!plen || (slash && (!slash[1] || strchr(slash + 1, '/'))))
		return df_errf(err, -EINVAL, "%s: not a RADOS remote (expected rados:POOL or "
			       "rados:POOL/NAMESPACE)", cfg->url);
	rados_be *r = calloc(1, sizeof *r);
	if (!r)
		return df_errf(err, -ENOMEM, "out of memory");
	r->base.ops = &rados_ops;
	r->base.url = strdup(cfg->url);
	r->pool = strndup(spec, plen);
	r->ns = strdup(slash ? slash + 1 : "");
	r->id = strdup(cfg->id && *cfg->id ? cfg->id : "admin");
	r->conf = cfg->conf && *cfg->conf ? strdup(cfg->conf) : NULL;
	pthread_mutex_init(&r->mu, NULL);
	if (!r->base.url || !r->pool || !r->ns || !r->id || (cfg->conf && *cfg->conf && !r->conf)) {
		r_close(&r->base);
		return df_errf(err, -ENOMEM, "out of memory");
	}
	*out = &r->base;
	return 0;
}
