/*
 * s3.c -- the remote backend over S3 (radosgw, AWS, any S3-compatible service), for URLs
 * s3://BUCKET[/PREFIX], through libcurl and its built-in SigV4 signing (CURLOPT_AWS_SIGV4).
 *
 * Where things are (keys under the bucket; P = PREFIX/, or nothing):
 *   P<32 hex>, P m.<32 hex>       blobs and manifests, as in remote.h
 *   P catalog/<NAME>/<T>-<OID>    one empty object per catalog entry: NAME the checkpoint name
 *                                 percent-encoded (s3x_encode: no '/', no '%' left bare), T 16 hex
 *                                 digits of the publishing host's clock in ns, OID the manifest
 *                                 object name. Everything is in the key, so one paginated LIST of
 *                                 P catalog/ reads the whole catalog (1,000 entries per request),
 *                                 with no GET per entry.
 *
 * Publishing n entries costs one LIST of the catalog, then one PUT per entry whose published
 * version differs (in the order given: rt_push passes bases before fine-tunes, so no host sees a
 * fine-tune whose base entry is missing), then one DELETE per superseded key. There is no
 * read-modify-write of a shared object, so two hosts publishing at once never lose each other's
 * entries. Atomicity is per entry, not per batch: a reader may see some of a push's entries and not
 * yet others (never a fine-tune without its base), and a crash leaves the entries written so far.
 * A name with several keys (a crash between the PUT and the DELETEs, or two hosts publishing one
 * name at once) resolves the same way on every host: the largest T wins; a publisher takes T above
 * every T it saw for that name, so its entry wins over those whatever the clocks say.
 *
 * S3 has no portable create-only write (radosgw 16.2 ignores If-None-Match: *): put(create_only)
 * is a HEAD then a PUT. The race this leaves (two hosts both see "absent" and both PUT) is
 * harmless because every create-only object is content-addressed: the bytes under a name are the
 * same whoever writes them. S3 has no watch/notify either: watch and notify say -ENOTSUP, and
 * `deltafs pull --every S` (rt_wait_change) falls back to polling every S seconds.
 *
 * Requests: path-style URLs (ENDPOINT/BUCKET/KEY: radosgw and AWS both take them), signed by
 * libcurl. The payload hash in x-amz-content-sha256 is the real SHA-256 of a PUT's body (OpenSSL,
 * ~1.5 GB/s with SHA-NI), not UNSIGNED-PAYLOAD: the server then rejects a body damaged on the way
 * instead of storing it, and a damaged blob would otherwise only show as EIO on some later read.
 * Every request is bounded: connect within rb_timeout_s(), no byte moving for rb_timeout_s(), and
 * 10 x rb_timeout_s() for the whole transfer; a dead endpoint gives -ETIMEDOUT / -ECONNREFUSED, never
 * a hang. Transient failures (a connection refused or reset, HTTP 500/502/503/504) are retried
 * S3_TRIES times with exponential backoff; a connect that failed for good is remembered for
 * S3_RETRY_S so that a mount whose endpoint is gone answers its readers at once, as rados.c does.
 *
 * Threads: each request takes an easy handle from a small pool (created on demand, at most
 * S3_POOL kept idle), so 8+ mount threads run requests in parallel and reuse their connections;
 * curl_global_init runs once (pthread_once). Each answer is acknowledged at once (on_header): a
 * server that sends headers and body apart otherwise stalls every small GET by ~40 ms.
 *
 * Keys: from the 0600 file that --keys names (refused when group or others may read it), else
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN. They live in this struct only:
 * never in STORE/remote, never in a message, and curl's verbose output is never turned on.
 */
#include "remote.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3xml.h"

#define S3_TRIES 4          /* attempts of one request that fails transiently */
#define S3_BACKOFF_MS 100   /* first wait between attempts; doubles each time */
#define S3_RETRY_S 5        /* after a failed connect, fail fast for this long */
#define S3_POOL 16          /* idle easy handles kept (with their connections) */
#define S3_KEY_MAX 1024     /* S3's bound on a key's bytes */
#define S3_GET_MAX (1ull << 30) /* a larger answer is refused: no object of ours is near it */
#define S3_CATALOG "catalog/"
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct s3_be {
	rb_backend base;
	char *endpoint, *bucket, *prefix, *region; /* prefix: "" or ending in '/' */
	char sigv4[80];
	char *access, *secret, *token; /* secret: wiped at close, never printed */
	pthread_mutex_t mu;            /* guards the fields below */
	struct s3_conn *idle[S3_POOL];
	int nidle;
	struct timespec failed_at; /* CLOCK_MONOTONIC of the last failed connect */
	int failed_rc;
	char failed_msg[sizeof(df_err)];
} s3_be;

/* An easy handle and the socket of the connection it last opened (on_header). A handle talks to
 * one endpoint, so its requests run on that connection or on a new one, whose socket replaces
 * fd before the request goes out. */
typedef struct s3_conn {
	CURL *h;
	curl_socket_t fd;
} s3_conn;

/* One request and its answer. */
typedef struct s3_req {
	const char *method; /* GET, PUT, HEAD, DELETE */
	const char *key;    /* full key (prefix included); NULL: the bucket itself */
	const char *query;  /* sorted and encoded (SigV4's canonical form), or NULL */
	const void *body;   /* PUT */
	size_t n, off;
	const char *copy;   /* PUT: copy this key onto key, metadata replaced (touch) */
	long status;
	char *resp;         /* the answer's body (NUL-terminated when len > 0), malloc'd */
	size_t len, cap;
	curl_off_t size;    /* HEAD: Content-Length */
	time_t mtime;       /* HEAD: Last-Modified */
} s3_req;

static pthread_once_t s3_once = PTHREAD_ONCE_INIT;
static CURLcode s3_init_rc;

static void s3_global_init(void)
{
	s3_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static double since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* --- easy handles --------------------------------------------------------------------------- */

static s3_conn *take(s3_be *s)
{
	s3_conn *c = NULL;
	pthread_mutex_lock(&s->mu);
	if (s->nidle)
		c = s->idle[--s->nidle];
	pthread_mutex_unlock(&s->mu);
	if (c) {
		curl_easy_reset(c->h); /* options go; its connections and DNS cache stay */
		return c;
	}
	if (!(c = malloc(sizeof *c)))
		return NULL;
	c->fd = CURL_SOCKET_BAD;
	if (!(c->h = curl_easy_init())) {
		free(c);
		return NULL;
	}
	return c;
}

static void conn_free(s3_conn *c)
{
	curl_easy_cleanup(c->h);
	free(c);
}

static void give(s3_be *s, s3_conn *c)
{
	pthread_mutex_lock(&s->mu);
	if (s->nidle < S3_POOL) {
		s->idle[s->nidle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	if (c)
		conn_free(c);
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
	s3_req *r = ud;
	size_t n = size * nmemb;
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 64 << 10;
		while (cap < r->len + n + 1)
			cap *= 2;
		char *nr = cap <= S3_GET_MAX ? realloc(r->resp, cap) : NULL;
		if (!nr)
			return 0; /* curl stops with CURLE_WRITE_ERROR */
		r->resp = nr;
		r->cap = cap;
	}
	memcpy(r->resp + r->len, p, n);
	r->len += n;
	r->resp[r->len] = 0;
	return n;
}

static int on_socket(void *ud, curl_socket_t fd, curlsocktype purpose)
{
	(void)purpose;
	((s3_conn *)ud)->fd = fd;
	return CURL_SOCKOPT_OK;
}

/* radosgw (beast, as shipped) writes a small answer's headers and its body in two sends with
 * Nagle's algorithm on, so the body waits for our ACK of the headers, and on a kept-alive
 * connection Linux delays that ACK up to 40 ms (its "pingpong" mode): every small GET took ~45 ms
 * instead of ~1 (20 GETs of a 199-byte object on one connection: 0.84 s, 20 HEADs: 0.04 s, the
 * same GETs with TCP_QUICKACK set after each request: 0.02 s). TCP_QUICKACK sends the pending ACK
 * at once; the kernel drops it again by itself, so each answer's status line sets it anew (curl
 * 7.88 gives no socket during a transfer, hence on_socket). TCP_NODELAY on our side cannot help
 * (curl sets it already; the held segment is the server's), nor can a new connection per request
 * (a connect and, over https, a handshake each). Servers may instead set beast's tcp_nodelay=1. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
	size_t n = size * nmemb;
#ifdef TCP_QUICKACK
	const s3_conn *c = ud;
	int one = 1;
	if (n >= 5 && !memcmp(p, "HTTP/", 5) && c->fd != CURL_SOCKET_BAD)
		setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
#else
	(void)p;
	(void)ud;
#endif
	return n;
}

static size_t on_read(char *p, size_t size, size_t nmemb, void *ud)
{
	s3_req *r = ud;
	size_t n = size * nmemb;
	if (n > r->n - r->off)
		n = r->n - r->off;
	memcpy(p, (const char *)r->body + r->off, n);
	r->off += n;
	return n;
}

/* --- one request ---------------------------------------------------------------------------- */

/* ENDPOINT/BUCKET/KEY?QUERY, the key percent-encoded; malloc'd. */
static char *url_of(const s3_be *s, const char *key, const char *query)
{
	size_t kl = key ? strlen(key) : 0, cap = strlen(s->endpoint) + strlen(s->bucket) +
						 3 * kl + (query ? strlen(query) : 0) + 8;
	char *u = malloc(cap);
	if (!u)
		return NULL;
	int o = snprintf(u, cap, "%s/%s%s", s->endpoint, s->bucket, key ? "/" : "");
	int k = key ? s3x_encode(key, kl, 1, u + o, cap - (size_t)o) : 0;
	if (k < 0) {
		free(u);
		return NULL;
	}
	if (query)
		snprintf(u + o + k, cap - (size_t)(o + k), "?%s", query);
	return u;
}

static int transient(CURLcode cc, long status)
{
	return cc == CURLE_COULDNT_CONNECT || cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR ||
	       cc == CURLE_GOT_NOTHING || cc == CURLE_PARTIAL_FILE || cc == CURLE_HTTP2 ||
	       cc == CURLE_HTTP2_STREAM ||
	       (cc == CURLE_OK && (status == 500 || status == 502 || status == 503 || status == 504));
}

static struct curl_slist *add_header(struct curl_slist *l, const char *h, int *ok)
{
	struct curl_slist *n = curl_slist_append(l, h);
	if (!n) {
		*ok = 0;
		return l;
	}
	return n;
}

/* The headers of r: the payload hash (SigV4 signs it), the session token, the copy source. */
static struct curl_slist *headers_of(const s3_be *s, const s3_req *r, int *ok)
{
	char line[3 * S3_KEY_MAX + 256];
	struct curl_slist *l = NULL;
	*ok = 1;
	if (r->body) {
		unsigned char md[SHA256_DIGEST_LENGTH];
		static const char hex[] = "0123456789abcdef";
		int o = snprintf(line, sizeof line, "x-amz-content-sha256: ");
		SHA256(r->body, r->n, md);
		for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
			line[o++] = hex[md[i] >> 4];
			line[o++] = hex[md[i] & 15];
		}
		line[o] = 0;
		l = add_header(l, line, ok);
	} else {
		l = add_header(l, "x-amz-content-sha256: " S3_EMPTY_SHA256, ok);
	}
	/* No "Expect:" line to skip 100-continue: curl 7.88 signs it as an empty header it then
	 * does not send, and the signature no longer matches. radosgw answers 100 at once anyway. */
	if (s->token) {
		size_t tl = strlen(s->token);
		char *t = malloc(tl + 32);
		if (!t) {
			*ok = 0;
		} else {
			snprintf(t, tl + 32, "x-amz-security-token: %s", s->token);
			l = add_header(l, t, ok);
			explicit_bzero(t, tl + 32);
			free(t);
		}
	}
	if (r->copy) {
		int o = snprintf(line, sizeof line, "x-amz-copy-source: /%s/", s->bucket);
		if (s3x_encode(r->copy, strlen(r->copy), 1, line + o, sizeof line - (size_t)o) < 0)
			*ok = 0;
		l = add_header(l, line, ok);
		l = add_header(l, "x-amz-metadata-directive: REPLACE", ok);
	}
	return l;
}

/* The S3 error code of an answer (<Code>...</Code>), alphanumerics only, into out. */
static const char *code_of(const s3_req *r, char out[64])
{
	const char *pos = r->resp, *t;
	size_t n, o = 0;
	out[0] = 0;
	if (r->len && s3x_next(&pos, r->resp + r->len, "Code", &t, &n))
		for (size_t i = 0; i < n && o + 1 < 64; i++)
			if ((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ||
			    (t[i] >= '0' && t[i] <= '9'))
				out[o++] = t[i];
	out[o] = 0;
	return out;
}

/* Run r: 0 with r->status set (whatever it is), or a negative errno with a message when no HTTP
 * answer came (after the retries). r->resp is the caller's to free. */
static int perform(s3_be *s, s3_req *r, const char *what, df_err *err)
{
	unsigned t = rb_timeout_s();
	pthread_mutex_lock(&s->mu);
	if (s->failed_rc && since(&s->failed_at) < S3_RETRY_S) {
		int rc = df_errf(err, s->failed_rc, "%s", s->failed_msg);
		pthread_mutex_unlock(&s->mu);
		return rc;
	}
	pthread_mutex_unlock(&s->mu);
	int ok;
	char *url = url_of(s, r->key, r->query);
	struct curl_slist *hd = headers_of(s, r, &ok);
	if (!url || !ok) {
		free(url);
		curl_slist_free_all(hd);
		return df_errf(err, url ? -ENOMEM : -ENAMETOOLONG, url ? "out of memory"
			       : "%s: %s: key too long", s->base.url, what);
	}
	CURLcode cc = CURLE_OK;
	char eb[CURL_ERROR_SIZE];
	curl_off_t connect_us = 0;
	int tries = 0;
	for (; tries < S3_TRIES; tries++) {
		if (tries) {
			struct timespec ts = {0, (long)(S3_BACKOFF_MS << (tries - 1)) * 1000000L};
			while (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			nanosleep(&ts, NULL);
		}
		s3_conn *c = take(s);
		if (!c) {
			cc = CURLE_OUT_OF_MEMORY;
			break;
		}
		CURL *h = c->h;
		r->len = r->off = 0;
		r->status = 0;
		eb[0] = 0;
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
		curl_easy_setopt(h, CURLOPT_USERNAME, s->access);
		curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)t);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)t);
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L * (long)t);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, eb);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
		curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_socket);
		curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, c);
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
		if (!strcmp(r->method, "HEAD")) {
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
			curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
		} else if (!strcmp(r->method, "PUT")) {
			curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(h, CURLOPT_READDATA, r);
			curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->n);
		} else if (strcmp(r->method, "GET")) {
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
		}
		cc = curl_easy_perform(h);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
		curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
		if (cc == CURLE_OK && !strcmp(r->method, "HEAD")) {
			curl_off_t ft = -1;
			curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &r->size);
			curl_easy_getinfo(h, CURLINFO_FILETIME_T, &ft);
			r->mtime = (time_t)ft;
		}
		give(s, c);
		if (!transient(cc, r->status))
			break;
	}
	free(url);
	curl_slist_free_all(hd);
	if (cc == CURLE_OK)
		return 0;
	int rc = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
		 : cc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED
		 : cc == CURLE_COULDNT_RESOLVE_HOST ? -EHOSTUNREACH
		 : cc == CURLE_OUT_OF_MEMORY || cc == CURLE_WRITE_ERROR ? -ENOMEM : -EIO;
	/* eb holds curl's own words: host and port at most, never a key (they are not in the URL). */
	df_errf(err, rc, "%s: %s: %s (%s)", s->base.url, what, eb[0] ? eb : curl_easy_strerror(cc),
		rc == -ETIMEDOUT ? "no answer in time; DELTAFS_REMOTE_TIMEOUT sets the bound"
		: tries > 1 ? "after retries" : s->endpoint);
	if (rc == -ECONNREFUSED || rc == -EHOSTUNREACH || (rc == -ETIMEDOUT && !connect_us)) {
		pthread_mutex_lock(&s->mu);
		clock_gettime(CLOCK_MONOTONIC, &s->failed_at);
		s->failed_rc = rc;
		snprintf(s->failed_msg, sizeof s->failed_msg, "%s", err ? err->msg : "unreachable");
		pthread_mutex_unlock(&s->mu);
	} else {
		pthread_mutex_lock(&s->mu);
		s->failed_rc = 0;
		pthread_mutex_unlock(&s->mu);
	}
	return rc;
}

/* An HTTP answer that is not what the operation wanted, as an errno and a message a user can act
 * on. 404 on an object is -ENOENT without a message (callers decide what absent means). */
static int http_fail(s3_be *s, const s3_req *r, const char *what, const char *oid, df_err *err)
{
	char code[64];
	const char *c = code_of(r, code);
	const char *sp = oid ? " " : "", *o = oid ? oid : "";
	if (r->status == 404 && !strcmp(c, "NoSuchBucket"))
		return df_errf(err, -ENXIO, "%s: %s%s%s: no such bucket \"%s\" at %s (create it, e.g. "
			       "`aws --endpoint-url %s s3 mb s3://%s`)", s->base.url, what, sp, o,
			       s->bucket, s->endpoint, s->endpoint, s->bucket);
	if (r->status == 404)
		return -ENOENT;
	if (r->status == 403)
		return df_errf(err, -EACCES, "%s: %s%s%s: access denied%s%s%s: check the keys "
			       "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or --keys) and the bucket "
			       "policy%s", s->base.url, what, sp, o, *c ? " (" : "", c, *c ? ")" : "",
			       !strcmp(c, "RequestTimeTooSkewed") ? "; this host's clock is off" : "");
	if (r->status == 301 || r->status == 307 || !strcmp(c, "AuthorizationHeaderMalformed"))
		return df_errf(err, -EINVAL, "%s: %s%s%s: the bucket is in another region or at "
			       "another endpoint (HTTP %ld%s%s): set --region / --endpoint",
			       s->base.url, what, sp, o, r->status, *c ? ", " : "", c);
	if (r->status >= 500)
		return df_errf(err, -EIO, "%s: %s%s%s: server error HTTP %ld%s%s (after %d tries)",
			       s->base.url, what, sp, o, r->status, *c ? " " : "", c, S3_TRIES);
	return df_errf(err, r->status == 400 ? -EINVAL : -EIO, "%s: %s%s%s: HTTP %ld%s%s",
		       s->base.url, what, sp, o, r->status, *c ? " " : "", c);
}

/* PREFIX + oid into out; -ENAMETOOLONG past S3's bound. */
static int key_of(const s3_be *s, const char *oid, char out[S3_KEY_MAX + 1], df_err *err)
{
	if ((size_t)snprintf(out, S3_KEY_MAX + 1, "%s%s", s->prefix, oid) > S3_KEY_MAX)
		return df_errf(err, -ENAMETOOLONG, "%s: %s: name too long for an S3 key", s->base.url,
			       oid);
	return 0;
}

/* One request on the object oid (NULL: key given as is); the answer's status in r->status. */
static int object_req(s3_be *s, s3_req *r, const char *oid, const char *what, df_err *err)
{
	char key[S3_KEY_MAX + 1];
	int rc = oid ? key_of(s, oid, key, err) : 0;
	if (rc)
		return rc;
	if (oid)
		r->key = key;
	return perform(s, r, what, err);
}

/* --- the object operations ------------------------------------------------------------------ */

static int s_probe(rb_backend *b, df_err *err)
{
	s3_be *s = (s3_be *)b;
	/* A one-key LIST: checks endpoint, keys and bucket at once. */
	s3_req r = {.method = "GET", .query = "list-type=2&max-keys=1"};
	int rc = perform(s, &r, "cannot reach the bucket", err);
	if (!rc && r.status != 200)
		rc = http_fail(s, &r, "cannot reach the bucket", NULL, err);
	if (rc == -ENOENT)
		rc = df_errf(err, -ENXIO, "%s: no such bucket \"%s\" at %s", b->url, s->bucket,
			     s->endpoint);
	free(r.resp);
	return rc;
}

static int s_get(rb_backend *b, const char *oid, void **p, size_t *n, df_err *err)
{
	s3_be *s = (s3_be *)b;
	s3_req r = {.method = "GET"};
	int rc = object_req(s, &r, oid, "cannot read", err);
	if (!rc && r.status != 200)
		rc = http_fail(s, &r, "cannot read", oid, err);
	if (rc) {
		free(r.resp);
		return rc;
	}
	if (!r.resp && !(r.resp = malloc(1))) /* an empty object */
		return df_errf(err, -ENOMEM, "out of memory");
	if (r.cap > r.len + 4096) { /* do not hold on to the buffer's spare room */
		char *nr = realloc(r.resp, r.len ? r.len : 1);
		r.resp = nr ? nr : r.resp;
	}
	*p = r.resp;
	*n = r.len;
	return 0;
}

static int s_stat(rb_backend *b, const char *oid, uint64_t *size, time_t *mtime, df_err *err)
{
	s3_be *s = (s3_be *)b;
	s3_req r = {.method = "HEAD"};
	int rc = object_req(s, &r, oid, "cannot stat", err);
	if (!rc && r.status != 200)
		rc = http_fail(s, &r, "cannot stat", oid, err);
	else if (!rc && (r.size < 0 || r.mtime < 0))
		rc = df_errf(err, -EIO, "%s: stat %s: no Content-Length or Last-Modified in the answer",
			     b->url, oid);
	free(r.resp);
	if (!rc) {
		*size = (uint64_t)r.size;
		*mtime = r.mtime;
	}
	return rc;
}

static int s_put(rb_backend *b, const char *oid, const void *p, size_t n, int create_only,
		 df_err *err)
{
	s3_be *s = (s3_be *)b;
	if (create_only) { /* HEAD then PUT: see the top of this file for why that is enough */
		uint64_t size;
		time_t mtime;
		int rc = s_stat(b, oid, &size, &mtime, err);
		if (rc != -ENOENT)
			return rc ? rc : -EEXIST;
	}
	s3_req r = {.method = "PUT", .body = p ? p : "", .n = n};
	int rc = object_req(s, &r, oid, "cannot write", err);
	if (!rc && r.status != 200)
		rc = http_fail(s, &r, "cannot write", oid, err);
	free(r.resp);
	return rc == -ENOENT ? df_errf(err, -EIO, "%s: cannot write %s: HTTP 404", b->url, oid) : rc;
}

static int s_touch(rb_backend *b, const char *oid, df_err *err)
{
	s3_be *s = (s3_be *)b;
	char key[S3_KEY_MAX + 1];
	int rc = key_of(s, oid, key, err);
	if (rc)
		return rc;
	/* A copy onto itself with the metadata replaced: S3's only way to move Last-Modified (what
	 * remote gc's grace period counts from) without sending the bytes again. */
	s3_req r = {.method = "PUT", .key = key, .copy = key};
	rc = perform(s, &r, "cannot touch", err);
	if (!rc && r.status == 200) {
		/* A copy can fail after its 200 went out: the error is then the body. */
		char code[64];
		if (r.len && strstr(r.resp, "<Error>"))
			r.status = !strcmp(code_of(&r, code), "NoSuchKey") ? 404 : 500;
	}
	if (!rc && r.status != 200)
		rc = http_fail(s, &r, "cannot touch", oid, err);
	free(r.resp);
	return rc;
}

/* S3's DELETE says 204 whether or not the object was there: never -ENOENT, which every caller
 * takes as success anyway. */
static int delete_key(s3_be *s, const char *key, df_err *err)
{
	s3_req r = {.method = "DELETE", .key = key};
	int rc = perform(s, &r, "cannot remove", err);
	if (!rc && r.status != 204 && r.status != 200)
		rc = http_fail(s, &r, "cannot remove", key, err);
	free(r.resp);
	return rc == -ENOENT ? 0 : rc;
}

static int s_remove(rb_backend *b, const char *oid, df_err *err)
{
	s3_be *s = (s3_be *)b;
	char key[S3_KEY_MAX + 1];
	int rc = key_of(s, oid, key, err);
	return rc ? rc : delete_key(s, key, err);
}

/* --- listing -------------------------------------------------------------------------------- */

/* Call fn(ud, key) for every key under prefix (ListObjectsV2, 1,000 keys a request, following
 * NextContinuationToken); with delim, only those with no '/' after the prefix. */
static int list_keys(s3_be *s, const char *prefix, int delim, int (*fn)(void *ud, const char *key),
		     void *ud, df_err *err)
{
	char eprefix[3 * S3_KEY_MAX + 1], *token = NULL;
	int rc = 0;
	if (s3x_encode(prefix, strlen(prefix), 0, eprefix, sizeof eprefix) < 0)
		return df_errf(err, -ENAMETOOLONG, "%s: prefix too long", s->base.url);
	do {
		char *etoken = NULL, *query;
		size_t tl = token ? strlen(token) : 0;
		if (token && (!(etoken = malloc(3 * tl + 1)) ||
			      s3x_encode(token, tl, 0, etoken, 3 * tl + 1) < 0)) {
			free(etoken);
			rc = df_errf(err, -ENOMEM, "out of memory");
			break;
		}
		/* Parameters in SigV4's canonical (sorted) order: curl 7.88 signs the query as given. */
		if (asprintf(&query, "%s%s%s%slist-type=2&max-keys=1000&prefix=%s",
			     etoken ? "continuation-token=" : "", etoken ? etoken : "",
			     etoken ? "&" : "", delim ? "delimiter=%2F&" : "", eprefix) < 0)
			query = NULL;
		free(etoken);
		free(token);
		token = NULL;
		if (!query) {
			rc = df_errf(err, -ENOMEM, "out of memory");
			break;
		}
		s3_req r = {.method = "GET", .query = query};
		rc = perform(s, &r, "cannot list objects", err);
		free(query);
		if (!rc && r.status != 200)
			rc = http_fail(s, &r, "cannot list objects", NULL, err);
		if (rc == -ENOENT)
			rc = df_errf(err, -EIO, "%s: cannot list objects: HTTP 404", s->base.url);
		const char *pos = r.resp, *end = r.resp + r.len, *t, *blk;
		size_t n, bn;
		while (!rc && pos && s3x_next(&pos, end, "Contents", &blk, &bn)) {
			const char *kp = blk;
			char *key;
			if (!s3x_next(&kp, blk + bn, "Key", &t, &n))
				continue;
			if (!(key = s3x_text(t, n)))
				continue; /* malformed: not a key of ours */
			if (!strncmp(key, prefix, strlen(prefix)))
				rc = fn(ud, key);
			free(key);
		}
		pos = r.resp;
		if (!rc && pos && s3x_next(&pos, end, "IsTruncated", &t, &n) && n == 4 &&
		    !memcmp(t, "true", 4)) {
			pos = r.resp;
			if (!s3x_next(&pos, end, "NextContinuationToken", &t, &n) || !n ||
			    !(token = s3x_text(t, n)))
				rc = df_errf(err, -EIO, "%s: a truncated listing without a usable "
					     "continuation token", s->base.url);
		}
		free(r.resp);
	} while (!rc && token);
	free(token);
	return rc;
}

typedef struct list_ud {
	size_t skip; /* the prefix's length */
	int (*fn)(void *ud, const char *oid);
	void *ud;
} list_ud;

static int list_one(void *ud, const char *key)
{
	list_ud *l = ud;
	return l->fn(l->ud, key + l->skip);
}

static int s_list(rb_backend *b, int (*fn)(void *ud, const char *oid), void *ud, df_err *err)
{
	s3_be *s = (s3_be *)b;
	list_ud l = {strlen(s->prefix), fn, ud};
	/* With the delimiter: the objects beside the catalog, not the catalog's keys. */
	return list_keys(s, s->prefix, 1, list_one, &l, err);
}

/* --- the catalog ---------------------------------------------------------------------------- */

/* One catalog key, parsed. */
typedef struct ckey {
	char *name, *key;
	char ts[17];
	const char *oid; /* in key */
} ckey;

typedef struct ckeys {
	ckey *v;
	size_t n, cap;
	size_t skip; /* length of PREFIX catalog/ */
} ckeys;

static int valid_oid(const char *o)
{
	size_t n = strlen(o);
	if (!n || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((o[i] >= 'a' && o[i] <= 'z') || (o[i] >= '0' && o[i] <= '9') || o[i] == '.'))
			return 0;
	return 1;
}

/* Keep key if it is NAME/T-OID; skip anything else (not ours, or damaged). */
static int ckey_add(void *ud, const char *key)
{
	ckeys *c = ud;
	const char *rest = key + c->skip, *slash = strrchr(rest, '/');
	if (!slash || strchr(rest, '/') != slash || strlen(slash + 1) < 18 || slash[17] != '-' ||
	    !valid_oid(slash + 18))
		return 0;
	for (int i = 1; i <= 16; i++)
		if (!((slash[i] >= '0' && slash[i] <= '9') || (slash[i] >= 'a' && slash[i] <= 'f')))
			return 0;
	char *name = s3x_decode(rest, (size_t)(slash - rest));
	if (!name || !*name) {
		free(name);
		return 0;
	}
	if (c->n == c->cap) {
		ckey *nv = realloc(c->v, (c->cap = c->cap ? c->cap * 2 : 256) * sizeof *nv);
		if (!nv) {
			free(name);
			return -ENOMEM;
		}
		c->v = nv;
	}
	ckey *k = &c->v[c->n];
	if (!(k->key = strdup(key))) {
		free(name);
		return -ENOMEM;
	}
	k->name = name;
	memcpy(k->ts, slash + 1, 16);
	k->ts[16] = 0;
	k->oid = k->key + (slash + 18 - key);
	c->n++;
	return 0;
}

static void ckeys_free(ckeys *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].name);
		free(c->v[i].key);
	}
	free(c->v);
}

/* By name, then T: the winner of each name is the last of its run. */
static int cmp_ckey(const void *a, const void *b)
{
	const ckey *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->ts, y->ts) ? strcmp(x->ts, y->ts) : strcmp(x->key, y->key);
}

/* Every key under prefix (PREFIX catalog/ for all, or one name's), sorted by cmp_ckey. */
static int read_ckeys(s3_be *s, const char *name, ckeys *c, df_err *err)
{
	char prefix[S3_KEY_MAX + 1];
	int o = snprintf(prefix, sizeof prefix, "%s" S3_CATALOG, s->prefix);
	memset(c, 0, sizeof *c);
	c->skip = (size_t)o;
	if (name && (s3x_encode(name, strlen(name), 0, prefix + o, sizeof prefix - (size_t)o - 1) < 0))
		return df_errf(err, -ENAMETOOLONG, "%s: checkpoint name too long for an S3 key", s->base.url);
	if (name)
		strcat(prefix, "/");
	int rc = list_keys(s, prefix, 0, ckey_add, c, err);
	if (rc == -ENOMEM)
		rc = df_errf(err, rc, "out of memory");
	if (rc)
		ckeys_free(c);
	else if (c->n)
		qsort(c->v, c->n, sizeof *c->v, cmp_ckey);
	return rc;
}

static int s_catalog(rb_backend *b, rb_entry **out, size_t *nout, df_err *err)
{
	ckeys c;
	int rc = read_ckeys((s3_be *)b, NULL, &c, err);
	if (rc)
		return rc;
	rb_entry *v = calloc(c.n ? c.n : 1, sizeof *v);
	size_t n = 0;
	if (!v)
		rc = df_errf(err, -ENOMEM, "out of memory");
	for (size_t i = 0; !rc && i < c.n; i++) {
		if (i + 1 < c.n && !strcmp(c.v[i].name, c.v[i + 1].name))
			continue; /* superseded: a later T of the same name follows */
		v[n].name = c.v[i].name;
		c.v[i].name = NULL;
		if (!(v[n++].oid = strdup(c.v[i].oid)))
			rc = df_errf(err, -ENOMEM, "out of memory");
	}
	ckeys_free(&c);
	if (rc) {
		rb_entries_free(v, n);
		return rc;
	}
	*out = v; /* sorted by name: c was */
	*nout = n;
	return 0;
}

/* The last of name's run in c (its published version), or NULL. */
static const ckey *winner(const ckeys *c, const char *name)
{
	const ckey *w = NULL;
	for (size_t i = 0; i < c->n; i++)
		if (!strcmp(c->v[i].name, name))
			w = &c->v[i];
	return w;
}

static int s_publish(rb_backend *b, const rb_entry *e, size_t n, df_err *err)
{
	s3_be *s = (s3_be *)b;
	ckeys c;
	int rc = read_ckeys(s, NULL, &c, err);
	if (rc)
		return rc;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	uint64_t t = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	for (size_t i = 0; !rc && i < n; i++) {
		char key[S3_KEY_MAX + 1];
		const ckey *w = winner(&c, e[i].name);
		if (w && !strcmp(w->oid, e[i].oid))
			continue; /* published as it is: nothing to write */
		if (!valid_oid(e[i].oid)) {
			rc = df_errf(err, -EINVAL, "%s: \"%s\" is not a manifest object name", b->url,
				     e[i].oid);
			break;
		}
		/* Above every T seen for the name, so this entry wins whatever the clocks say. */
		uint64_t wt = w ? strtoull(w->ts, NULL, 16) : 0;
		t = t > wt ? t + 1 : wt + 1;
		int o = snprintf(key, sizeof key, "%s" S3_CATALOG, s->prefix);
		int k = s3x_encode(e[i].name, strlen(e[i].name), 0, key + o, sizeof key - (size_t)o);
		if (k < 0 || (size_t)snprintf(key + o + k, sizeof key - (size_t)(o + k), "/%016llx-%s",
					      (unsigned long long)t, e[i].oid) >= sizeof key - (size_t)(o + k)) {
			rc = df_errf(err, -ENAMETOOLONG, "%s: checkpoint name \"%s\" too long for an S3 "
				     "key", b->url, e[i].name);
			break;
		}
		s3_req r = {.method = "PUT", .key = key, .body = "", .n = 0};
		rc = perform(s, &r, "cannot publish", err);
		if (!rc && r.status != 200)
			rc = http_fail(s, &r, "cannot publish", e[i].name, err);
		free(r.resp);
		if (rc == -ENOENT)
			rc = df_errf(err, -EIO, "%s: cannot publish %s: HTTP 404", b->url, e[i].name);
		/* The versions it replaces, once it is durable. A failed DELETE leaves a key that
		 * loses to this one everywhere and goes at the name's next publish. */
		for (size_t j = 0; !rc && j < c.n; j++) {
			df_err ignored;
			if (!strcmp(c.v[j].name, e[i].name))
				delete_key(s, c.v[j].key, &ignored);
		}
	}
	ckeys_free(&c);
	return rc;
}

/* Only the name's keys that carry the manifest seen are deleted: a key another host published
 * since, with another manifest, is not (it wins over any older key, and stays the name's entry).
 * One it published with the same manifest goes too: the version asked to be removed. */
static int s_unpublish(rb_backend *b, const rb_entry *e, size_t n, df_err *err)
{
	s3_be *s = (s3_be *)b;
	int rc = 0, kept = 0;
	for (size_t i = 0; !rc && i < n; i++) {
		ckeys c;
		if ((rc = read_ckeys(s, e[i].name, &c, err)))
			break;
		for (size_t j = 0; !rc && j < c.n; j++)
			if (strcmp(c.v[j].oid, e[i].oid))
				kept = 1;
			else
				rc = delete_key(s, c.v[j].key, err);
		ckeys_free(&c);
	}
	if (!rc && kept)
		rc = df_errf(err, -ECANCELED, "%s: the catalog changed meanwhile (published again by "
			     "another host?): the new version stays", b->url);
	return rc;
}

/* S3 has no watch/notify: rt_wait_change polls instead (pull --every S). */
static int s_watch(rb_backend *b, void (*fn)(void *ud), void *ud, df_err *err)
{
	(void)fn;
	(void)ud;
	return df_errf(err, -ENOTSUP, "%s: S3 has no change notifications; polling", b->url);
}

static int s_notify(rb_backend *b, df_err *err)
{
	return df_errf(err, -ENOTSUP, "%s: S3 has no change notifications", b->url);
}

static void wipe_free(char *p)
{
	if (p) {
		explicit_bzero(p, strlen(p));
		free(p);
	}
}

static void s_close(rb_backend *b)
{
	s3_be *s = (s3_be *)b;
	for (int i = 0; i < s->nidle; i++)
		conn_free(s->idle[i]);
	pthread_mutex_destroy(&s->mu);
	wipe_free(s->access);
	wipe_free(s->secret);
	wipe_free(s->token);
	free(s->endpoint);
	free(s->bucket);
	free(s->prefix);
	free(s->region);
	free(s->base.url);
	free(s);
}

static const rb_ops s3_ops = {
	.probe = s_probe,
	.get = s_get,
	.put = s_put,
	.stat = s_stat,
	.list = s_list,
	.touch = s_touch,
	.remove = s_remove,
	.catalog = s_catalog,
	.publish = s_publish,
	.unpublish = s_unpublish,
	.watch = s_watch,
	.notify = s_notify,
	.close = s_close,
};

/* --- opening -------------------------------------------------------------------------------- */

static char *trim(char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	size_t n = strlen(p);
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
		p[--n] = 0;
	return p;
}

/* Keys from a file of "name = value" (or name=value, or name value) lines, as ~/.aws/credentials
 * (one profile) or an env file writes them: aws_access_key_id, aws_secret_access_key,
 * aws_session_token, in either case. No value ever reaches a message. */
static int load_keys(s3_be *s, const char *path, df_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		return df_errf(err, -errno, "%s: S3 keys file: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return df_errf(err, -EINVAL, "%s: S3 keys file: not a regular file", path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return df_errf(err, -EPERM, "%s: S3 keys file is readable by group or others: "
			       "chmod 600 %s", path, path);
	}
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return df_errf(err, -ENOMEM, "out of memory");
	}
	char line[4096];
	int rc = 0;
	while (!rc && fgets(line, sizeof line, f)) {
		char *p = trim(line), *v = strchr(p, '=');
		if (!v)
			v = strpbrk(p, " \t");
		if (!*p || *p == '#' || *p == '[' || !v)
			continue;
		*v++ = 0;
		p = trim(p);
		v = trim(v);
		if (!strncmp(p, "export ", 7))
			p = trim(p + 7);
		char **dst = !strcasecmp(p, "aws_access_key_id") ? &s->access
			     : !strcasecmp(p, "aws_secret_access_key") ? &s->secret
			     : !strcasecmp(p, "aws_session_token") ? &s->token : NULL;
		if (dst && !*dst && *v && !(*dst = strdup(v)))
			rc = df_errf(err, -ENOMEM, "out of memory");
	}
	explicit_bzero(line, sizeof line);
	fclose(f);
	if (!rc && (!s->access || !s->secret))
		rc = df_errf(err, -EINVAL, "%s: S3 keys file lacks aws_access_key_id or "
			     "aws_secret_access_key", path);
	return rc;
}

static int env_keys(s3_be *s, df_err *err)
{
	const char *a = getenv("AWS_ACCESS_KEY_ID"), *k = getenv("AWS_SECRET_ACCESS_KEY"),
		   *t = getenv("AWS_SESSION_TOKEN");
	if (!a || !*a || !k || !*k)
		return df_errf(err, -EINVAL, "%s: no S3 keys: set AWS_ACCESS_KEY_ID and "
			       "AWS_SECRET_ACCESS_KEY, or give a 0600 keys file with --keys FILE",
			       s->base.url);
	if (!(s->access = strdup(a)) || !(s->secret = strdup(k)) || (t && *t && !(s->token = strdup(t))))
		return df_errf(err, -ENOMEM, "out of memory");
	return 0;
}

static int charset(const char *p, size_t n, const char *extra)
{
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || (p[i] && strchr(extra, p[i]))))
			return 0;
	return 1;
}

/* Called by rb_open for "s3://..." URLs. */
int rb_s3_open(const rb_config *cfg, rb_backend **out, df_err *err);
int rb_s3_open(const rb_config *cfg, rb_backend **out, df_err *err)
{
	const char *spec = cfg->url + strlen("s3://"), *slash = strchr(spec, '/');
	size_t bl = slash ? (size_t)(slash - spec) : strlen(spec);
	const char *pre = slash ? slash + 1 : "";
	size_t pl = strlen(pre);
	while (pl && pre[pl - 1] == '/')
		pl--;
	if (bl < 3 || bl > 63 || !charset(spec, bl, ".-_") || !charset(pre, pl, "/._-") ||
	    strstr(pre, "//") || *pre == '/' || pl > 512)
		return df_errf(err, -EINVAL, "%s: not an S3 remote (expected s3://BUCKET or "
			       "s3://BUCKET/PREFIX; PREFIX of letters, digits and / . _ -)", cfg->url);
	const char *region = cfg->region && *cfg->region ? cfg->region : "us-east-1";
	if (strlen(region) > 40 || !charset(region, strlen(region), "-"))
		return df_errf(err, -EINVAL, "%s: \"%s\" is not an S3 region", cfg->url, region);
	const char *ep = cfg->endpoint && *cfg->endpoint ? cfg->endpoint : NULL;
	if (ep && strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
		return df_errf(err, -EINVAL, "%s: endpoint \"%s\" is not an http:// or https:// URL",
			       cfg->url, ep);
	if (ep && (strchr(ep, '@') || strchr(ep, '?')))
		return df_errf(err, -EINVAL, "%s: the endpoint takes no user or query: keys go in "
			       "the environment or --keys FILE", cfg->url);
	pthread_once(&s3_once, s3_global_init);
	if (s3_init_rc)
		return df_errf(err, -EIO, "cannot initialise libcurl: %s", curl_easy_strerror(s3_init_rc));
	s3_be *s = calloc(1, sizeof *s);
	if (!s)
		return df_errf(err, -ENOMEM, "out of memory");
	s->base.ops = &s3_ops;
	pthread_mutex_init(&s->mu, NULL);
	s->base.url = strdup(cfg->url);
	s->bucket = strndup(spec, bl);
	s->region = strdup(region);
	if (ep) {
		s->endpoint = strdup(ep);
	} else if (asprintf(&s->endpoint, "https://s3.%s.amazonaws.com", region) < 0) {
		s->endpoint = NULL;
	}
	if (pl && asprintf(&s->prefix, "%.*s/", (int)pl, pre) < 0)
		s->prefix = NULL;
	else if (!pl)
		s->prefix = strdup("");
	int rc = 0;
	if (!s->base.url || !s->bucket || !s->region || !s->endpoint || !s->prefix)
		rc = df_errf(err, -ENOMEM, "out of memory");
	else
		rc = cfg->keys && *cfg->keys ? load_keys(s, cfg->keys, err) : env_keys(s, err);
	if (rc) {
		s_close(&s->base);
		return rc;
	}
	size_t el = strlen(s->endpoint);
	while (el > 8 && s->endpoint[el - 1] == '/')
		s->endpoint[--el] = 0;
	snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", s->region);
	*out = &s->base;
	return 0;
}
