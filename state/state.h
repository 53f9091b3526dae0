/* state.h: the pipeline's SQLite state file: open, lock, schema, positions.
 * The only module that talks SQL to SQLite; journal.h, shadow.h and
 * conflicts.h work on a struct state opened here. */
#ifndef TANDEM_STATE_H
#define TANDEM_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../daemon/err.h"

#define STATE_SCHEMA_VERSION 7

struct state;

enum state_mode {
    STATE_READONLY = 0,  /* status, list commands: works while a daemon runs */
    STATE_SHARED,        /* writes allowed (dlq retry, conflicts resolve), no lock */
    STATE_EXCLUSIVE      /* run: takes the single-instance lock */
};

/* Opens (creating when mode != READONLY and the file is missing) the state
 * at path, in WAL mode with synchronous=FULL, and migrates its schema
 * forward. Errors, each with a message naming path:
 *   -ENOENT  directory missing, or file missing in READONLY mode;
 *   -EBUSY   EXCLUSIVE and another process holds the lock (the message
 *            says another tandem is running on this state);
 *   -EPROTO  not a SQLite file, or corrupted;
 *   -ENOTSUP written by a newer schema than STATE_SCHEMA_VERSION;
 *   -EIO     anything else.
 * The lock is flock(2) on "<path>.lock", held until state_close or process
 * death, so kill -9 never blocks a restart. */
int state_open(struct state **out, const char *path, enum state_mode mode,
               struct err *e);

/* Closes the database and releases the lock. Accepts NULL. */
void state_close(struct state *s);

/* Group commit: state_begin opens a write transaction (no-op when one is
 * open); state_commit commits it with one fsync. Journal and position
 * writes between them become durable together. When state_commit fails
 * nothing since state_begin is saved (also when SQLite already rolled the
 * transaction back after an earlier error, e.g. disk full: -EIO). */
int state_begin(struct state *s, struct err *e);
int state_commit(struct state *s, struct err *e);
bool state_in_txn(const struct state *s);

/* Abandons the open write transaction, if any (after a failed batch).
 * Nothing written since state_begin survives. Never fails. */
void state_rollback(struct state *s);

/* Positions: per endpoint, the acknowledged-safe source position (PG: the
 * end LSN of the last journaled commit, as "X/Y"; REST: the cursor). */
int state_position_get(struct state *s, const char *endpoint, char *buf,
                       size_t cap, struct err *e); /* -ENOENT when none */
int state_position_set(struct state *s, const char *endpoint,
                       const char *position, struct err *e);

/* Applied progress: per target endpoint, the last journal commit sequence
 * whose changes are applied there (0 when none). */
int state_applied_get(struct state *s, const char *target, int64_t *out,
                      struct err *e);
int state_applied_set(struct state *s, const char *target, int64_t commit_seq,
                      struct err *e);

/* Free-form metadata (pipeline name, ...). */
int state_meta_get(struct state *s, const char *k, char *buf, size_t cap,
                   struct err *e); /* -ENOENT when none */
int state_meta_set(struct state *s, const char *k, const char *v,
                   struct err *e);

/* The schema version stored in the file. */
int state_schema_version(struct state *s);

/* The path the state was opened with. */
const char *state_path(const struct state *s);

/* full: each commit waits for the disk (the default). Not full: a commit
 * reaches the kernel only, and the caller fdatasyncs "<path>-wal" itself
 * before it relies on it (the daemon does, off its event loop). */
int state_set_synchronous(struct state *s, bool full, struct err *e);

/* For the daemon, which checkpoints the WAL from a worker thread
 * (state_ckpt_run): this connection stops checkpointing inside the commit
 * that crosses the autocheckpoint size, where the page copy and two fsyncs
 * stalled the event loop, and counts the WAL's frames instead. */
int state_checkpoint_elsewhere(struct state *s, struct err *e);

/* Checkpoints on this connection now (PASSIVE), between transactions:
 * with no write of its own running it copies every frame, so the next
 * transaction starts the WAL over. For when the worker's checkpoints,
 * which run beside a busy writer, never catch up. */
int state_checkpoint_here(struct state *s, struct err *e);

/* Frames in the WAL after this connection's last commit (0 until
 * state_checkpoint_elsewhere, or after the WAL restarted). */
int state_wal_frames(const struct state *s);

/* A connection of its own that checkpoints path's WAL, opened on first
 * use: PASSIVE, so it never waits for the writer or for readers, and the
 * writer restarts the WAL once every frame is copied. Use it from one
 * thread at a time. */
struct state_ckpt;
int state_ckpt_run(struct state_ckpt **ck, const char *path, struct err *e);
void state_ckpt_close(struct state_ckpt *ck);

/* The mode the state was opened with. */
enum state_mode state_mode_of(const struct state *s);

/* Clock used for stored times (updated_at, committed_at, prune ages):
 * µs since the Unix epoch. The default reads CLOCK_REALTIME; tests set a
 * fake one. fn NULL restores the default. */
typedef int64_t (*state_clock_fn)(void *arg);
void state_set_clock(struct state *s, state_clock_fn fn, void *arg);

/* The underlying handle, for the other state/ files only. */
struct sqlite3 *state_db(struct state *s);

#endif
