/*
 * storedump.c -- where a store's records lie inside data.mdb, for the reliability tests.
 *
 *   storedump STORE                    JSON on stdout (below)
 *   storedump STORE manifest NAME OUT  write checkpoint NAME's encoded manifest to OUT (seeds for
 *                                      tests/fuzz/corpus_manifest)
 *
 * The tests damage a store on purpose: a bit in one blob, a byte of one manifest or meta record.
 * To do that they need the byte offset of each record's value in data.mdb, and to know what the
 * damage must break they need each manifest's layout (files, segments, chunk hashes, base
 * references). Both come from one read-only LMDB read transaction: a value returned by mdb_get or
 * a cursor points into the read-only map of data.mdb (no MDB_WRITEMAP, so the map is the file
 * itself), and a value's bytes are contiguous there (small ones inside a leaf page, large ones in
 * consecutive overflow pages), so (pointer - start of the mapping + its file offset), the mapping
 * read from /proc/self/maps, is its offset in data.mdb. (mdb_env_info's me_mapaddr cannot serve:
 * it is the address recorded in the file for MDB_FIXEDMAP, NULL otherwise.)
 *
 * The JSON:
 *   {"meta":  [{"key": K, "off": O, "len": N}],
 *    "blobs": [{"hash": HEX, "off": O, "len": N, "refs": R}],       R: -1 if no refs record
 *    "refs_without_blob": N,
 *    "ckpts": [{"key": K, "off": O, "len": N, "error": MSG}            a manifest that does not
 *              | {"key": K, "off": O, "len": N, "name": S, "base": S,  decode, or its layout
 *                 "files": [{"path": S, "size": N,
 *                            "segs": [[off, len, chunk_size, base_file, base_seg,
 *                                      [HEX or null (MF_CHUNK_SAME), ...]]]}]}]}
 * It opens the tables by name rather than through store.c, which keeps its handles private; it
 * reads the store's format and nothing else of store.h's promises, so it shows a damaged store as
 * it is.
 */
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../index/manifest.h"

static _Noreturn void die(const char *what, int rc)
{
	fprintf(stderr, "storedump: %s: %s\n", what, mdb_strerror(rc));
	exit(1);
}

/* A JSON string: the bytes as they are, '"', '\\' and control bytes escaped. Names are not
 * guaranteed UTF-8 in a damaged store; Python reads the output with errors="surrogateescape". */
static void jstr(const void *p, size_t n)
{
	const unsigned char *s = p;
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			printf("\\%c", s[i]);
		else if (s[i] < 0x20 || s[i] == 0x7f)
			printf("\\u%04x", s[i]);
		else
			putchar(s[i]);
	}
	putchar('"');
}

static void jhex(const uint8_t *h)
{
	putchar('"');
	for (int i = 0; i < 16; i++)
		printf("%02x", h[i]);
	putchar('"');
}

static struct {
	uintptr_t start, end;
	unsigned long long pgoff;
} map;

/* The mapping of data.mdb that holds address p (LMDB maps the file once, at offset 0). */
static void find_map(const void *p)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[4096];
	uintptr_t a = (uintptr_t)p;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long long s, e, off;
		if (sscanf(line, "%llx-%llx %*s %llx", &s, &e, &off) == 3 && s <= a && a < e &&
		    strstr(line, "/data.mdb")) {
			map.start = (uintptr_t)s;
			map.end = (uintptr_t)e;
			map.pgoff = off;
			break;
		}
	}
	if (f)
		fclose(f);
	if (!map.end) {
		fprintf(stderr, "storedump: data.mdb is not in /proc/self/maps\n");
		exit(1);
	}
}

static long long offset_of(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	if (!map.end)
		find_map(p);
	if (a < map.start || a >= map.end) {
		fprintf(stderr, "storedump: a value outside the map of data.mdb\n");
		exit(1);
	}
	return (long long)(a - map.start + map.pgoff);
}

static void dump_manifest(const MDB_val *d)
{
	manifest *m;
	df_err err;
	if (mf_decode(d->mv_data, d->mv_size, &m, &err)) {
		printf(", \"error\": ");
		jstr(err.msg, strlen(err.msg));
		return;
	}
	printf(", \"name\": ");
	jstr(m->name, strlen(m->name));
	printf(", \"base\": ");
	jstr(m->base, strlen(m->base));
	printf(", \"files\": [");
	for (uint32_t i = 0; i < m->nfiles; i++) {
		const mf_file *f = &m->files[i];
		printf("%s{\"path\": ", i ? ", " : "");
		jstr(f->path, strlen(f->path));
		printf(", \"size\": %llu, \"segs\": [", (unsigned long long)f->size);
		for (uint32_t j = 0; j < f->nsegs; j++) {
			const mf_seg *s = &f->segs[j];
			printf("%s[%llu, %llu, %u, %d, %d, [", j ? ", " : "",
			       (unsigned long long)s->off, (unsigned long long)s->len, s->chunk_size,
			       s->base_file, s->base_seg);
			for (uint32_t c = 0; c < s->nchunks; c++) {
				printf("%s", c ? ", " : "");
				if (s->chunks[c].flags == MF_CHUNK_SAME)
					printf("null");
				else
					jhex(s->chunks[c].hash);
			}
			printf("]]");
		}
		printf("]}");
	}
	printf("]");
	mf_free(m);
}

static MDB_dbi open_db(MDB_txn *txn, const char *name)
{
	MDB_dbi dbi;
	int rc = mdb_dbi_open(txn, name, 0, &dbi);
	if (rc)
		die(name, rc);
	return dbi;
}

int main(int argc, char **argv)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, d;
	int rc;
	if (argc != 2 && !(argc == 5 && !strcmp(argv[2], "manifest"))) {
		fprintf(stderr, "usage: storedump STORE [manifest NAME OUT]\n");
		return 2;
	}
	if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_maxdbs(env, 8)) ||
	    (rc = mdb_env_set_mapsize(env, 1ull << 40)) ||
	    (rc = mdb_env_open(env, argv[1], MDB_RDONLY | MDB_NOTLS, 0600)) ||
	    (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)))
		die(argv[1], rc);
	MDB_dbi meta = open_db(txn, "meta"), blobs = open_db(txn, "blobs"),
		refs = open_db(txn, "refs"), ckpt = open_db(txn, "ckpt");

	if (argc == 5) {
		k.mv_size = strlen(argv[3]);
		k.mv_data = argv[3];
		if ((rc = mdb_get(txn, ckpt, &k, &d)))
			die(argv[3], rc);
		FILE *f = fopen(argv[4], "wb");
		if (!f || fwrite(d.mv_data, 1, d.mv_size, f) != d.mv_size || fclose(f)) {
			fprintf(stderr, "storedump: %s: %s\n", argv[4], strerror(errno));
			return 1;
		}
		mdb_txn_abort(txn);
		mdb_env_close(env);
		return 0;
	}

	printf("{\"meta\": [");
	if ((rc = mdb_cursor_open(txn, meta, &cur)))
		die("meta", rc);
	for (int n = 0; !(rc = mdb_cursor_get(cur, &k, &d, n ? MDB_NEXT : MDB_FIRST)); n++) {
		printf("%s{\"key\": ", n ? ", " : "");
		jstr(k.mv_data, k.mv_size);
		printf(", \"off\": %lld, \"len\": %zu}", offset_of(d.mv_data), d.mv_size);
	}
	mdb_cursor_close(cur);

	printf("],\n\"blobs\": [");
	if ((rc = mdb_cursor_open(txn, blobs, &cur)))
		die("blobs", rc);
	for (int n = 0; !(rc = mdb_cursor_get(cur, &k, &d, n ? MDB_NEXT : MDB_FIRST)); n++) {
		MDB_val rd;
		long long r = -1;
		uint64_t v;
		if (!mdb_get(txn, refs, &k, &rd) && rd.mv_size == 8) {
			memcpy(&v, rd.mv_data, 8);
			r = (long long)v;
		}
		printf("%s{\"hash\": ", n ? ",\n " : "");
		if (k.mv_size == 16)
			jhex(k.mv_data);
		else
			jstr(k.mv_data, k.mv_size);
		printf(", \"off\": %lld, \"len\": %zu, \"refs\": %lld}", offset_of(d.mv_data),
		       d.mv_size, r);
	}
	mdb_cursor_close(cur);

	long long orphans = 0;
	if ((rc = mdb_cursor_open(txn, refs, &cur)))
		die("refs", rc);
	for (int n = 0; !(rc = mdb_cursor_get(cur, &k, &d, n ? MDB_NEXT : MDB_FIRST)); n++) {
		MDB_val bd;
		orphans += mdb_get(txn, blobs, &k, &bd) == MDB_NOTFOUND;
	}
	mdb_cursor_close(cur);
	printf("],\n\"refs_without_blob\": %lld,\n\"ckpts\": [", orphans);

	if ((rc = mdb_cursor_open(txn, ckpt, &cur)))
		die("ckpt", rc);
	for (int n = 0; !(rc = mdb_cursor_get(cur, &k, &d, n ? MDB_NEXT : MDB_FIRST)); n++) {
		printf("%s{\"key\": ", n ? ",\n " : "");
		jstr(k.mv_data, k.mv_size);
		printf(", \"off\": %lld, \"len\": %zu", offset_of(d.mv_data), d.mv_size);
		dump_manifest(&d);
		printf("}");
	}
	mdb_cursor_close(cur);
	printf("]}\n");
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return 0;
}
