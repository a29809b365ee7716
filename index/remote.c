/*
 * remote.c -- choosing a remote backend by URL, and what all backends share.
 */
#include "remote.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef DELTAFS_RADOS
int rb_rados_open(const rb_config *cfg, rb_backend **out, df_err *err);
#endif
#ifdef DELTAFS_S3
int rb_s3_open(const rb_config *cfg, rb_backend **out, df_err *err);
#endif

int rb_open(const rb_config *cfg, rb_backend **out, df_err *err)
{
	*out = NULL;
	if (!strncmp(cfg->url, "rados:", 6)) {
#ifdef DELTAFS_RADOS
		return rb_rados_open(cfg, out, err);
#else
		return df_errf(err, -ENOTSUP, "%s: this deltafs was built without librados (install "
			       "librados-dev and rebuild)", cfg->url);
#endif
	}
	if (!strncmp(cfg->url, "s3://", 5)) {
#ifdef DELTAFS_S3
		return rb_s3_open(cfg, out, err);
#else
		return df_errf(err, -ENOTSUP, "%s: this deltafs was built without libcurl (install "
			       "libcurl4-openssl-dev and rebuild)", cfg->url);
#endif
	}
	return df_errf(err, -EINVAL, "%s: unknown remote (expected rados:POOL[/NAMESPACE] or "
		       "s3://BUCKET[/PREFIX])", cfg->url);
}

void rb_close(rb_backend *b)
{
	if (b)
		b->ops->close(b);
}

int rb_probe(rb_backend *b, df_err *err)
{
	return b->ops->probe(b, err);
}

void rb_entries_free(rb_entry *e, size_t n)
{
	for (size_t i = 0; i < n && e; i++) {
		free(e[i].name);
		free(e[i].oid);
	}
	free(e);
}

void rb_blob_oid(const uint8_t hash[16], char out[33])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[hash[i] >> 4];
		out[2 * i + 1] = hex[hash[i] & 15];
	}
	out[32] = 0;
}

unsigned rb_timeout_s(void)
{
	const char *e = getenv("DELTAFS_REMOTE_TIMEOUT");
	if (e && *e) {
		unsigned long v = strtoul(e, NULL, 10);
		if (v >= 1 && v <= 3600)
			return (unsigned)v;
	}
	return RB_TIMEOUT_S;
}
