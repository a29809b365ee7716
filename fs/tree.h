/*
 * tree.h -- one generation of a store as the mount shows it: the namespace and the read
 * transactions that keep that generation's blobs readable.
 *
 * Namespace: the root (FUSE_ROOT_ID) holds one directory per checkpoint; a checkpoint's directory
 * holds its files under their stored paths, with a directory for each '/'-separated prefix. A
 * snapshot is built whole from the manifests and never changes afterwards, so lookups need no lock.
 *
 * Inode numbers are stable across rebuilds and remounts: XXH3-64 of "checkpoint\0path" for
 * directories and of "checkpoint\0path\0uid" for files, where uid names the committed manifest. A
 * checkpoint replaced under the same name therefore gives its files new inode numbers: the kernel's
 * page cache of the old inode stays right for handles still open on the old content, and new
 * lookups see new inodes with empty caches. A collision (or 0 / 1) is resolved by hashing again with
 * seed 1, 2, ...; nodes are inserted in a fixed order (sorted checkpoints, manifest file order), so
 * the outcome is deterministic.
 *
 * Transactions: a snapshot reads blobs through LMDB read transactions that see its generation,
 * kept in a pool: the one it was built in, and more begun on demand (up to FT_MAX_TXNS), so decodes
 * on many threads never share a transaction (a txn is used by one thread at a time) and never
 * serialise on one. Any transaction that sees the same generation sees the same manifests and
 * their blobs: a blob can only be freed by gc after the checkpoint naming it is removed or
 * replaced, and that bumps the generation. Once the store has moved on, a snapshot lives on the
 * transactions it already has.
 *
 * Cost, and how it is kept small: LMDB cannot reuse pages freed by commits made after the oldest
 * live read transaction began, nor those freed by the commit it reads. A transaction kept for hours
 * would make every later write (a gc's freed blobs, an ingest's copy-on-write pages) grow the data
 * file instead of reusing space. So:
 *   - a snapshot with no file open in it holds no transaction (ft_drop_idle; lookups need none),
 *     so an idle mount pins nothing;
 *   - a snapshot with open files adopts a fresh transaction whenever anything has committed
 *     (ft_adopt, from the poller) and retires the older ones;
 *   - a snapshot that is no longer the newest (files are open in it) adopts transactions of the
 *     newest generation when every checkpoint it has files open in, and their bases, exist there
 *     with the same manifest uid (checked by ft_adopt): their blobs are then in any transaction of it.
 * What remains is the unavoidable case: a file open in a checkpoint that was removed or replaced
 * pins the space freed after that until it is closed.
 *
 * A snapshot that holds no transaction begins one on demand even if the store has moved on
 * meanwhile (within one poll period): blobs of checkpoints still in the store are there all the
 * same. A checkpoint removed in that window (its blobs perhaps collected) is caught when a file of
 * it is opened (ft_open_file looks up its manifest uid in that transaction): the open fails with
 * ENOENT, as it would once the poller caught up, and no read of an open file meets a missing blob.
 * (Found by tests/reliability's concurrency run: a reader's mmap died of SIGBUS on such an EIO.)
 */
#ifndef DELTAFS_FS_TREE_H
#define DELTAFS_FS_TREE_H

#include <pthread.h>
#include <stdint.h>

#include "../index/reader.h"
#include "../index/store.h"

#define FT_ROOT_INO 1    /* FUSE_ROOT_ID */
#define FT_MAX_TXNS 32   /* read transactions per snapshot: more than decoding threads */

typedef struct ft_node {
	uint64_t ino;
	uint64_t size;     /* files: bytes; directories: number of entries */
	int64_t mtime_ns;  /* the checkpoint's ingest time; root: when the snapshot was built */
	const char *name;  /* last path component; "" for the root */
	const char *path;  /* path inside the checkpoint ("" for its directory and the root) */
	const rd_ckpt *ck; /* NULL for the root */
	uint32_t cki;      /* index of ck in cks */
	int32_t file;      /* index into ck->mf->files; -1 for directories */
	uint32_t parent;   /* node index */
	uint32_t kid0, nkids; /* directories: children are kids[kid0 .. kid0 + nkids), by name */
	uint32_t nlink;
} ft_node;

typedef struct ft_snap {
	uint64_t gen;      /* the store generation it shows */
	store *st;
	rd_ckpt **cks;     /* loaded checkpoints, sorted by name */
	size_t ncks;
	ft_node *nodes;    /* nodes[0] is the root */
	uint32_t nnodes;
	uint32_t *kids;
	uint32_t *itab;    /* ino -> node index + 1, open addressing */
	uint64_t imask;
	uint64_t nfiles;
	char **dirpaths;   /* owned path strings of nested directories */
	uint32_t ndirpaths;

	pthread_mutex_t mu; /* guards the transaction pool */
	pthread_cond_t cv;
	MDB_txn *txns[FT_MAX_TXNS + 1]; /* free ones: txns[0 .. nfree); + 1: see ft_adopt */
	unsigned nfree, ntxn;
	size_t txn_newest;  /* LMDB txn id of the newest transaction */
	size_t txn_floor;   /* transactions older than this are retired when idle */
	int stale;         /* the store has moved past gen: no more transactions for this snapshot */
	uint32_t *ck_open; /* per checkpoint: files open in it (ft_open_file / ft_close_file) */
	uint32_t nopen;    /* files open in the snapshot */

	/* Owned by the mount (fs/mount.c), under its lock. */
	int refs;
	struct ft_snap *next;
} ft_snap;

/* Build the snapshot of the store's current generation, in a new read transaction that the
 * snapshot keeps. A checkpoint whose manifest (or base chain) does not load is left out with a log
 * line naming it: one damaged record must not hide the others. Returns 0, or a negative errno with
 * err (the store cannot be read, or out of memory). */
int ft_build(store *st, ft_snap **out, df_err *err);

/* Free a snapshot whose transactions have all been returned. */
void ft_free(ft_snap *s);

/* The node of ino, or NULL. */
const ft_node *ft_node_of(const ft_snap *s, uint64_t ino);

/* The child name of directory node dir, or NULL. */
const ft_node *ft_lookup(const ft_snap *s, const ft_node *dir, const char *name);

/* The i-th child of directory node dir (i < dir->nkids). */
static inline const ft_node *ft_kid(const ft_snap *s, const ft_node *dir, uint32_t i)
{
	return &s->nodes[s->kids[dir->kid0 + i]];
}

/* Borrow a read transaction for one decode (waits while all are in use; a snapshot that has none
 * begins one); give it back with ft_txn_put. Fails (negative errno, err filled) only if the
 * snapshot has none and none can be begun. */
int ft_txn_get(ft_snap *s, MDB_txn **txn, df_err *err);
void ft_txn_put(ft_snap *s, MDB_txn *txn);

/* Offer txn, a read transaction that sees generation gen: s->gen (newer NULL), or the generation
 * of snapshot newer. If files are open in s, txn is newer than all of s's transactions (something
 * committed since) and, for a newer generation, every checkpoint s has files open in, and its base
 * chain, is in newer with the same manifest uid (checked under s's lock, so that no file opened
 * meanwhile is left behind), s keeps it, moves to gen and retires its older transactions (now if
 * idle, else when returned); else it is ended. Takes ownership of txn; returns 1 if kept. */
int ft_adopt(ft_snap *s, MDB_txn *txn, uint64_t gen, const ft_snap *newer);

/* If no file is open in s and none of its transactions is in use, end them all; returns how many
 * were ended. */
unsigned ft_drop_idle(ft_snap *s);

/* Count a file handle opened on file node n of s, after checking that the transactions s reads
 * with hold n's checkpoint and its base chain as s knows them (same manifest uids): a snapshot
 * with no file open holds no transaction, and the one it begins on demand may see a later
 * generation in which the checkpoint was removed (and its blobs collected) before the mount's
 * poller noticed. Returns 0, -ENOENT (gone: the open fails, as it would a moment later) or another
 * negative errno. Once it returns 0, every read of the file finds its blobs until ft_close_file. */
int ft_open_file(ft_snap *s, const ft_node *n);
void ft_close_file(ft_snap *s, const ft_node *n);

#endif
