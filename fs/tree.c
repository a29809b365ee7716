/*
 * tree.c -- build a snapshot's namespace from the manifests; its pool of read transactions.
 */
#include "tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "log.h"

/* --- building --------------------------------------------------------------------------------- */

typedef struct builder {
	ft_snap *s;
	uint32_t cki;     /* index of the checkpoint being added */
	uint32_t cap;     /* nodes allocated */
	uint32_t dcap;    /* dirpaths allocated */
	df_err *err;
} builder;

static int oom(builder *b) { return df_errf(b->err, -ENOMEM, "out of memory building the tree"); }

/* Same identity: same checkpoint, same path, same kind (and, for files, the same manifest). */
static int same_node(const ft_node *n, const rd_ckpt *ck, const char *path, int is_dir)
{
	return n->ck == ck && (n->file < 0) == is_dir && !strcmp(n->path, path);
}

/* Candidate inode number k (k = 0, 1, ...) for a node: see tree.h. Streaming, so paths of any
 * length hash without a copy. */
static uint64_t ino_candidate(const rd_ckpt *ck, const char *path, int is_dir, uint64_t k)
{
	XXH3_state_t st;
	XXH3_64bits_reset_withSeed(&st, k);
	XXH3_64bits_update(&st, ck->mf->name, strlen(ck->mf->name) + 1);
	XXH3_64bits_update(&st, path, strlen(path));
	if (!is_dir) {
		uint8_t u[9] = {0};
		for (int i = 0; i < 8; i++)
			u[1 + i] = (uint8_t)(ck->mf->uid >> (8 * i));
		XXH3_64bits_update(&st, u, sizeof u);
	}
	return XXH3_64bits_digest(&st);
}

static uint32_t *itab_slot(const ft_snap *s, uint64_t ino)
{
	uint64_t i = ino & s->imask;
	while (s->itab[i] && s->nodes[s->itab[i] - 1].ino != ino)
		i = (i + 1) & s->imask;
	return &s->itab[i];
}

static int itab_grow(builder *b)
{
	ft_snap *s = b->s;
	uint64_t nmask = s->imask ? s->imask * 2 + 1 : 255;
	uint32_t *old = s->itab;
	uint64_t omask = s->imask;
	if (!(s->itab = calloc(nmask + 1, sizeof *s->itab))) {
		s->itab = old;
		return oom(b);
	}
	s->imask = nmask;
	for (uint64_t i = 0; old && i <= omask; i++)
		if (old[i])
			*itab_slot(s, s->nodes[old[i] - 1].ino) = old[i];
	free(old);
	return 0;
}

/* Find the node (ck, path, kind), or add it with a fresh inode number. *idx gets its index; *added
 * says whether it is new. */
static int find_or_add(builder *b, const rd_ckpt *ck, const char *path, int is_dir, uint32_t *idx,
		       int *added)
{
	ft_snap *s = b->s;
	for (uint64_t k = 0;; k++) {
		uint64_t ino = ino_candidate(ck, path, is_dir, k);
		if (ino <= FT_ROOT_INO)
			continue;
		uint32_t *slot = itab_slot(s, ino);
		if (*slot) {
			if (same_node(&s->nodes[*slot - 1], ck, path, is_dir)) {
				*idx = *slot - 1;
				*added = 0;
				return 0;
			}
			continue; /* 64-bit collision */
		}
		if (s->nnodes == b->cap) {
			uint32_t ncap = b->cap * 2;
			ft_node *nn = realloc(s->nodes, ncap * sizeof *nn);
			if (!nn)
				return oom(b);
			s->nodes = nn;
			b->cap = ncap;
		}
		ft_node *n = &s->nodes[s->nnodes];
		memset(n, 0, sizeof *n);
		n->ino = ino;
		n->path = path;
		n->ck = ck;
		n->cki = b->cki;
		n->file = -1;
		*slot = s->nnodes + 1;
		*idx = s->nnodes++;
		*added = 1;
		if ((uint64_t)s->nnodes * 2 > s->imask)
			return itab_grow(b);
		return 0;
	}
}

static int add_dirpath(builder *b, char *p)
{
	ft_snap *s = b->s;
	if (s->ndirpaths == b->dcap) {
		uint32_t ncap = b->dcap ? b->dcap * 2 : 16;
		char **np = realloc(s->dirpaths, ncap * sizeof *np);
		if (!np) {
			free(p);
			return oom(b);
		}
		s->dirpaths = np;
		b->dcap = ncap;
	}
	s->dirpaths[s->ndirpaths++] = p;
	return 0;
}

static const char *last_component(const char *path)
{
	const char *sl = strrchr(path, '/');
	return sl ? sl + 1 : path;
}

/* Add a checkpoint's directory, its files and the directories their paths imply. */
static int add_ckpt(builder *b, const rd_ckpt *ck)
{
	uint32_t dir;
	int added, rc = find_or_add(b, ck, "", 1, &dir, &added);
	if (rc)
		return rc;
	ft_snap *s = b->s;
	s->nodes[dir].parent = 0;
	s->nodes[dir].name = ck->mf->name;
	s->nodes[dir].mtime_ns = ck->mf->ctime_ns;
	for (uint32_t f = 0; f < ck->mf->nfiles; f++) {
		const mf_file *mf = &ck->mf->files[f];
		uint32_t parent = dir;
		/* One directory per '/' in the path, outermost first. */
		for (const char *sl = strchr(mf->path, '/'); sl; sl = strchr(sl + 1, '/')) {
			char *p = strndup(mf->path, (size_t)(sl - mf->path));
			if (!p)
				return oom(b);
			uint32_t d;
			if ((rc = find_or_add(b, ck, p, 1, &d, &added))) {
				free(p);
				return rc;
			}
			if (!added) {
				free(p);
			} else {
				if ((rc = add_dirpath(b, p)))
					return rc;
				ft_node *n = &s->nodes[d];
				n->parent = parent;
				n->name = last_component(p);
				n->mtime_ns = ck->mf->ctime_ns;
			}
			parent = d;
		}
		uint32_t fi;
		if ((rc = find_or_add(b, ck, mf->path, 0, &fi, &added)))
			return rc;
		ft_node *n = &s->nodes[fi];
		n->parent = parent;
		n->name = last_component(mf->path);
		n->file = (int32_t)f;
		n->size = mf->size;
		n->mtime_ns = ck->mf->ctime_ns;
		n->nlink = 1;
		s->nfiles++;
	}
	return 0;
}

static int kid_cmp(const void *a, const void *b, void *arg)
{
	const ft_node *nodes = arg;
	return strcmp(nodes[*(const uint32_t *)a].name, nodes[*(const uint32_t *)b].name);
}

/* Fill kids[] (children sorted by name per directory) and directory sizes and link counts. A name
 * present twice in one directory (a path that is both a file and a directory: only a crafted
 * manifest can say that) keeps its first node. */
static int link_kids(builder *b)
{
	ft_snap *s = b->s;
	if (!(s->kids = malloc((size_t)s->nnodes * sizeof *s->kids)))
		return oom(b);
	for (uint32_t i = 1; i < s->nnodes; i++)
		s->nodes[s->nodes[i].parent].nkids++;
	uint32_t at = 0;
	for (uint32_t i = 0; i < s->nnodes; i++) {
		s->nodes[i].kid0 = at;
		at += s->nodes[i].nkids;
		s->nodes[i].nkids = 0;
	}
	for (uint32_t i = 1; i < s->nnodes; i++) {
		ft_node *p = &s->nodes[s->nodes[i].parent];
		s->kids[p->kid0 + p->nkids++] = i;
	}
	for (uint32_t i = 0; i < s->nnodes; i++) {
		ft_node *d = &s->nodes[i];
		if (d->file >= 0)
			continue;
		uint32_t *k = &s->kids[d->kid0], n = 0;
		qsort_r(k, d->nkids, sizeof *k, kid_cmp, s->nodes);
		for (uint32_t j = 0; j < d->nkids; j++) {
			if (n && !strcmp(s->nodes[k[n - 1]].name, s->nodes[k[j]].name)) {
				fs_log(LOG_WARNING, "checkpoint \"%s\": \"%s\" is both a file and a "
				       "directory; showing the first", s->nodes[k[j]].ck->mf->name,
				       s->nodes[k[j]].path);
				continue;
			}
			k[n++] = k[j];
		}
		d->nkids = n;
		d->size = n;
		d->nlink = 2;
		for (uint32_t j = 0; j < n; j++)
			d->nlink += s->nodes[k[j]].file < 0;
	}
	return 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int ft_build(store *st, ft_snap **out, df_err *err)
{
	ft_snap *s = calloc(1, sizeof *s);
	if (!s)
		return df_errf(err, -ENOMEM, "out of memory building the tree");
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->st = st;
	builder b = {.s = s, .cap = 64, .err = err};
	char **names = NULL;
	size_t nnames = 0;
	MDB_txn *txn;
	int rc = store_rtxn(st, &txn, err);
	if (rc) {
		ft_free(s);
		return rc;
	}
	s->txns[s->nfree++] = txn;
	s->ntxn = 1;
	s->txn_newest = s->txn_floor = mdb_txn_id(txn);
	s->gen = store_generation(st, txn);
	if ((rc = store_ckpt_list(st, txn, &names, &nnames, err)))
		goto fail;
	if (!(s->cks = calloc(nnames ? nnames : 1, sizeof *s->cks)) ||
	    !(s->nodes = malloc(b.cap * sizeof *s->nodes))) {
		rc = oom(&b);
		goto fail;
	}
	for (size_t i = 0; i < nnames; i++) {
		df_err e;
		rc = rd_load(st, txn, names[i], &s->cks[s->ncks], &e);
		if (rc == -ENOMEM) {
			df_errf(err, rc, "%s", e.msg);
			goto fail;
		}
		if (rc)
			fs_log(LOG_ERR, "%s (not shown; `deltafs verify` reports it)", e.msg);
		else
			s->ncks++;
	}
	/* The root. */
	memset(&s->nodes[0], 0, sizeof s->nodes[0]);
	s->nodes[0].ino = FT_ROOT_INO;
	s->nodes[0].name = s->nodes[0].path = "";
	s->nodes[0].file = -1;
	s->nodes[0].mtime_ns = now_ns();
	s->nnodes = 1;
	if ((rc = itab_grow(&b)))
		goto fail;
	s->itab[FT_ROOT_INO & s->imask] = 1;
	for (b.cki = 0; b.cki < s->ncks; b.cki++)
		if ((rc = add_ckpt(&b, s->cks[b.cki])))
			goto fail;
	if (!(s->ck_open = calloc(s->ncks ? s->ncks : 1, sizeof *s->ck_open))) {
		rc = oom(&b);
		goto fail;
	}
	if ((rc = link_kids(&b)))
		goto fail;
	store_names_free(names, nnames);
	*out = s;
	return 0;
fail:
	store_names_free(names, nnames);
	ft_free(s);
	return rc;
}

void ft_free(ft_snap *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < s->nfree; i++)
		store_txn_end(s->st, s->txns[i]);
	for (size_t i = 0; i < s->ncks; i++)
		rd_free(s->cks[i]);
	free(s->cks);
	free(s->ck_open);
	for (uint32_t i = 0; i < s->ndirpaths; i++)
		free(s->dirpaths[i]);
	free(s->dirpaths);
	free(s->nodes);
	free(s->kids);
	free(s->itab);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

/* --- queries ---------------------------------------------------------------------------------- */

const ft_node *ft_node_of(const ft_snap *s, uint64_t ino)
{
	uint32_t i = *itab_slot(s, ino);
	return i ? &s->nodes[i - 1] : NULL;
}

const ft_node *ft_lookup(const ft_snap *s, const ft_node *dir, const char *name)
{
	uint32_t lo = 0, hi = dir->file < 0 ? dir->nkids : 0;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const ft_node *n = ft_kid(s, dir, mid);
		int c = strcmp(name, n->name);
		if (!c)
			return n;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* --- transactions ----------------------------------------------------------------------------- */

int ft_txn_get(ft_snap *s, MDB_txn **out, df_err *err)
{
	pthread_mutex_lock(&s->mu);
	while (!s->nfree) {
		if ((s->stale && s->ntxn) || s->ntxn >= FT_MAX_TXNS) {
			pthread_cond_wait(&s->cv, &s->mu);
			continue;
		}
		/* Begin one more outside the lock. It must see the snapshot's generation, unless the
		 * snapshot has no transaction at all (tree.h: why that is safe). */
		s->ntxn++;
		pthread_mutex_unlock(&s->mu);
		MDB_txn *t;
		int rc = store_rtxn(s->st, &t, err);
		pthread_mutex_lock(&s->mu);
		if (!rc) {
			int same = store_generation(s->st, t) == s->gen;
			if (same || s->ntxn == 1) {
				s->stale |= !same;
				if (mdb_txn_id(t) > s->txn_newest)
					s->txn_newest = mdb_txn_id(t);
				pthread_mutex_unlock(&s->mu);
				*out = t;
				return 0;
			}
			store_txn_end(s->st, t);
		}
		s->ntxn--;
		s->stale = 1;
		if (rc && !s->ntxn) { /* none to wait for */
			pthread_mutex_unlock(&s->mu);
			return rc;
		}
	}
	*out = s->txns[--s->nfree];
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* With s->mu held: end the idle transactions older than the floor. */
static void retire_idle(ft_snap *s)
{
	unsigned k = 0;
	for (unsigned i = 0; i < s->nfree; i++) {
		if (mdb_txn_id(s->txns[i]) < s->txn_floor) {
			store_txn_end(s->st, s->txns[i]);
			s->ntxn--;
		} else {
			s->txns[k++] = s->txns[i];
		}
	}
	s->nfree = k;
}

void ft_txn_put(ft_snap *s, MDB_txn *txn)
{
	pthread_mutex_lock(&s->mu);
	s->txns[s->nfree++] = txn;
	retire_idle(s);
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static const rd_ckpt *ckpt_named(const ft_snap *s, const char *name)
{
	size_t lo = 0, hi = s->ncks;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, s->cks[mid]->mf->name);
		if (!c)
			return s->cks[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* With s->mu held: ft_adopt's condition for moving s to newer's generation. */
static int can_move_locked(const ft_snap *s, const ft_snap *newer)
{
	for (size_t i = 0; i < s->ncks; i++) {
		if (!s->ck_open[i])
			continue;
		for (const rd_ckpt *ck = s->cks[i]; ck; ck = ck->base) {
			const rd_ckpt *now = ckpt_named(newer, ck->mf->name);
			if (!now || now->mf->uid != ck->mf->uid)
				return 0;
		}
	}
	return 1;
}

int ft_adopt(ft_snap *s, MDB_txn *txn, uint64_t gen, const ft_snap *newer)
{
	size_t id = mdb_txn_id(txn);
	pthread_mutex_lock(&s->mu);
	/* no file open: it needs none (ft_drop_idle) */
	if (id > s->txn_newest && s->nopen && (!newer || can_move_locked(s, newer))) {
		/* Kept even when all others are busy (ntxn may pass FT_MAX_TXNS by this one until
		 * they return and retire): the pool must always hold a transaction at its floor. */
		s->txn_newest = s->txn_floor = id;
		s->gen = gen;
		s->stale = 0;
		retire_idle(s);
		s->txns[s->nfree++] = txn;
		s->ntxn++;
		txn = NULL;
		pthread_cond_signal(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	if (!txn)
		return 1;
	store_txn_end(s->st, txn);
	return 0;
}

int ft_open_file(ft_snap *s, const ft_node *n)
{
	/* Counted first: from here on no ft_adopt moves s to a generation without n's checkpoint, so
	 * the check below, in a transaction s reads with, holds for every later one. */
	pthread_mutex_lock(&s->mu);
	s->ck_open[n->cki]++;
	s->nopen++;
	pthread_mutex_unlock(&s->mu);
	MDB_txn *txn;
	df_err e;
	int rc = ft_txn_get(s, &txn, &e);
	if (rc) {
		fs_log(LOG_ERR, "%s", e.msg);
	} else {
		for (const rd_ckpt *ck = n->ck; !rc && ck; ck = ck->base) {
			uint64_t uid;
			rc = store_ckpt_uid(s->st, txn, ck->mf->name, &uid);
			if (!rc && uid != ck->mf->uid)
				rc = -ENOENT; /* replaced */
			else if (rc == -EBADMSG)
				rc = -ENOENT; /* replaced by a manifest the next snapshot leaves out */
		}
		ft_txn_put(s, txn);
	}
	if (rc)
		ft_close_file(s, n);
	return rc;
}

void ft_close_file(ft_snap *s, const ft_node *n)
{
	pthread_mutex_lock(&s->mu);
	s->ck_open[n->cki]--;
	s->nopen--;
	pthread_mutex_unlock(&s->mu);
}

unsigned ft_drop_idle(ft_snap *s)
{
	unsigned n = 0;
	pthread_mutex_lock(&s->mu);
	if (!s->nopen && s->nfree == s->ntxn) {
		for (n = 0; n < s->nfree; n++)
			store_txn_end(s->st, s->txns[n]);
		s->nfree = s->ntxn = 0;
	}
	pthread_mutex_unlock(&s->mu);
	return n;
}
