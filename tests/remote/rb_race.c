/*
 * rb_race.c -- `deltafs rm --remote` racing another host's publish of the same name, made
 * deterministic: the version the remover read is published, another host publishes the name again
 * in another version, then the remover's unpublish runs with the version it read. It must keep the
 * new version (-ECANCELED); an unpublish of the new version then removes the name.
 *
 *   rb_race URL [ENDPOINT KEYS]     (RADOS: CEPH_CONF names the cluster; S3: endpoint and keys)
 *
 * Exit 0 when both hold, 1 with a message otherwise. test_remote.py and test_s3.py run it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../../index/remote.h"

#define NAME "rb-race"
#define SEEN "m.0123456789abcdef0123456789abcdef"
#define NEWER "m.fedcba9876543210fedcba9876543210"

/* The manifest object that the catalog publishes NAME as, into oid ("" if none). */
static int published(rb_backend *b, char oid[64], df_err *err)
{
	rb_entry *e;
	size_t n;
	int rc = b->ops->catalog(b, &e, &n, err);
	oid[0] = 0;
	for (size_t i = 0; !rc && i < n; i++)
		if (!strcmp(e[i].name, NAME))
			snprintf(oid, 64, "%s", e[i].oid);
	if (!rc)
		rb_entries_free(e, n);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: rb_race URL [ENDPOINT KEYS]\n");
		return 2;
	}
	rb_config cfg = {.url = argv[1]};
	if (argc == 4) {
		cfg.endpoint = argv[2];
		cfg.keys = argv[3];
	}
	rb_backend *b;
	df_err err;
	char oid[64] = "";
	int rc = rb_open(&cfg, &b, &err);
	if (rc) {
		fprintf(stderr, "rb_race: %s\n", err.msg);
		return 1;
	}
	rb_entry seen = {NAME, SEEN}, newer = {NAME, NEWER};
	const char *fail = NULL;
	if ((rc = b->ops->publish(b, &seen, 1, &err)) || (rc = b->ops->publish(b, &newer, 1, &err)))
		fail = "publish";
	else if ((rc = b->ops->unpublish(b, &seen, 1, &err)) != -ECANCELED)
		fail = rc ? "unpublish of the version read" : "unpublish of the version read succeeded";
	else if ((rc = published(b, oid, &err)) || strcmp(oid, NEWER))
		fail = rc ? "catalog" : "the newer version was not kept";
	else if ((rc = b->ops->unpublish(b, &newer, 1, &err)))
		fail = "unpublish of the newer version";
	else if ((rc = published(b, oid, &err)) || oid[0])
		fail = rc ? "catalog" : "the name is still published";
	if (fail)
		fprintf(stderr, "rb_race: %s: %s\n", fail, rc ? err.msg : oid);
	else
		printf("rb_race: %s: the remover kept the version it did not see\n", argv[1]);
	rb_close(b);
	return fail ? 1 : 0;
}
