#include "dlq_retry.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../state/dlq.h"
#include "log.h"

/* The open entries to retry, copied out of the scans. */
struct pending {
    int64_t id;
    char *mapping, *key, *change;
};

struct batch {
    struct pending *v;
    size_t n, cap;
    const char *mapping, *key;  /* filter: same key as the requested entry */
    int64_t from_id;
};

static int collect(const struct dlq_entry *d, void *arg)
{
    struct batch *b = arg;
    struct pending *n;

    if (b->mapping != NULL && (d->id < b->from_id || strcmp(d->mapping, b->mapping) != 0 ||
                               d->key == NULL || b->key == NULL || strcmp(d->key, b->key) != 0))
        return 0;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        if ((n = realloc(b->v, cap * sizeof(*n))) == NULL)
            return -ENOMEM;
        b->v = n;
        b->cap = cap;
    }
    n = &b->v[b->n++];
    n->id = d->id;
    n->mapping = strdup(d->mapping);
    n->key = d->key ? strdup(d->key) : NULL;
    n->change = d->change ? strdup(d->change) : NULL;
    return 0;
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->v[i].mapping);
        free(b->v[i].key);
        free(b->v[i].change);
    }
    free(b->v);
    memset(b, 0, sizeof(*b));
}

/* Journals one entry's change again and closes the entry. */
static int rejournal(struct state *st, const struct pending *p)
{
    struct dlq_entry d = { .id = p->id, .mapping = p->mapping, .key = p->key,
                           .change = p->change };
    struct err e = { 0 };
    char ids[24];
    int rc;

    snprintf(ids, sizeof(ids), "%" PRId64, p->id);
    if ((rc = dlq_replay(st, &d, &e)) == 0) {
        log_info("dlq", "DLQ entry journaled again for retry", "id", ids,
                 "mapping", p->mapping, "key", p->key);
    } else if (rc == -EINVAL) {
        dlq_retry_failed(st, p->id, "entry holds no replayable change", NULL);
        log_error("dlq", "cannot retry a DLQ entry: it holds no replayable change;"
                  " drop it and repair by hand", "id", ids);
    } else {
        log_error("dlq", "cannot retry a DLQ entry", "id", ids, "err", e.msg);
    }
    return rc;
}

static void retry_key(struct state *st, const struct pending *req)
{
    struct batch b = { .mapping = req->mapping, .key = req->key, .from_id = req->id };
    int64_t left = 0;

    if (dlq_list(st, false, 0, collect, &b, NULL) < 0)
        goto out;
    for (size_t i = 0; i < b.n; i++)
        if (rejournal(st, &b.v[i]) != 0)
            goto out;
    if (req->key != NULL && dlq_count_open_key(st, req->mapping, req->key, &left, NULL) == 0 &&
        left == 0)
        parked_unpark(st, req->mapping, req->key, NULL);
out:
    batch_free(&b);
}

void dlq_retry_requested(struct state *st)
{
    struct batch req = { 0 };

    if (dlq_list_retry_requested(st, collect, &req, NULL) < 0) {
        batch_free(&req);
        return;
    }
    /* Oldest first; a later request of a key already retried finds no
     * open entry left and does nothing. */
    for (size_t i = 0; i < req.n; i++)
        retry_key(st, &req.v[i]);
    batch_free(&req);
}
