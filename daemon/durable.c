/* durable.c: the WAL fsync on a worker thread (see durable.h). */
#include "durable.h"
#include "log.h"
#include "../state/state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct durable {
    uv_loop_t *loop;
    uv_work_t work, ckpt_work;
    char *wal_path, *state_path;
    durable_done_fn done;
    void *arg;
    bool busy, ckpt_busy, freed;
    int err;                    /* the worker's result, errno or 0 */
    struct state_ckpt *ckpt;    /* the checkpoint worker's connection */
    struct err ckpt_err;
};

int durable_new(struct durable **out, uv_loop_t *loop, const char *state_path,
                durable_done_fn done, void *arg, struct err *e)
{
    struct durable *d = calloc(1, sizeof(*d));
    size_t n = strlen(state_path) + sizeof("-wal");

    if (d == NULL || (d->wal_path = malloc(n)) == NULL ||
        (d->state_path = strdup(state_path)) == NULL) {
        if (d != NULL)
            free(d->wal_path);
        free(d);
        return err_set(e, -ENOMEM, "durable: out of memory");
    }
    snprintf(d->wal_path, n, "%s-wal", state_path);
    d->loop = loop;
    d->done = done;
    d->arg = arg;
    d->work.data = d;
    d->ckpt_work.data = d;
    *out = d;
    return 0;
}

/* fdatasync of path; 0 or errno. fsync applies to the file, whichever
 * descriptor SQLite wrote through. */
static int sync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return errno;
    if (fdatasync(fd) < 0)
        rc = errno;
    close(fd);
    return rc;
}

/* On the worker thread: touches only the path (read-only after creation)
 * and d->err, which the loop reads after this returns. */
static void sync_wal(uv_work_t *w)
{
    struct durable *d = w->data;

    d->err = sync_file(d->wal_path);
}

static void sync_done(uv_work_t *w, int status)
{
    struct durable *d = w->data;

    d->busy = false;
    if (d->freed) {
        durable_free(d);
        return;
    }
    d->done(d->arg, status == UV_ECANCELED ? ECANCELED : d->err);
}

bool durable_busy(const struct durable *d)
{
    return d->busy;
}

int durable_start(struct durable *d)
{
    int rc;

    if (d->busy)
        return -EBUSY;
    rc = uv_queue_work(d->loop, &d->work, sync_wal, sync_done);
    if (rc == 0)
        d->busy = true;
    return rc;
}

int durable_sync_now(struct durable *d)
{
    return sync_file(d->wal_path);
}

/* On a worker thread: the checkpoint connection is only ever used here,
 * one checkpoint at a time, and closed on the loop after the last. */
static void checkpoint(uv_work_t *w)
{
    struct durable *d = w->data;

    d->ckpt_err.code = 0;
    state_ckpt_run(&d->ckpt, d->state_path, &d->ckpt_err);
}

static void checkpoint_done(uv_work_t *w, int status)
{
    struct durable *d = w->data;

    (void)status;
    d->ckpt_busy = false;
    if (d->freed) {
        durable_free(d);
        return;
    }
    if (d->ckpt_err.code != 0)
        log_warn("durable", "cannot checkpoint the state's WAL; it keeps growing until a"
                 " checkpoint succeeds (check the disk and the state file's directory)",
                 "err", d->ckpt_err.msg);
}

int durable_checkpoint(struct durable *d)
{
    int rc;

    if (d->ckpt_busy)
        return 0;
    rc = uv_queue_work(d->loop, &d->ckpt_work, checkpoint, checkpoint_done);
    if (rc == 0)
        d->ckpt_busy = true;
    return rc;
}

void durable_free(struct durable *d)
{
    if (d == NULL)
        return;
    if (d->busy || d->ckpt_busy) {
        d->freed = true;
        return;
    }
    state_ckpt_close(d->ckpt);
    free(d->wal_path);
    free(d->state_path);
    free(d);
}
