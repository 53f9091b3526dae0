/* durable.c: the WAL fsync on a worker thread (see durable.h). */
#include "durable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct durable {
    uv_loop_t *loop;
    uv_work_t work;
    char *wal_path;
    durable_done_fn done;
    void *arg;
    bool busy, freed;
    int err;                    /* the worker's result, errno or 0 */
};

int durable_new(struct durable **out, uv_loop_t *loop, const char *state_path,
                durable_done_fn done, void *arg, struct err *e)
{
    struct durable *d = calloc(1, sizeof(*d));
    size_t n = strlen(state_path) + sizeof("-wal");

    if (d == NULL || (d->wal_path = malloc(n)) == NULL) {
        free(d);
        return err_set(e, -ENOMEM, "durable: out of memory");
    }
    snprintf(d->wal_path, n, "%s-wal", state_path);
    d->loop = loop;
    d->done = done;
    d->arg = arg;
    d->work.data = d;
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

void durable_free(struct durable *d)
{
    if (d == NULL)
        return;
    if (d->busy) {
        d->freed = true;
        return;
    }
    free(d->wal_path);
    free(d);
}
