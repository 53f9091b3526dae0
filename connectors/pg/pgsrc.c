#include "pgsrc.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "../../daemon/log.h"
#include "../../daemon/strbuf.h"
#include "../../state/journal.h"
#include "pgconn.h"
#include "pgoutput.h"
#include "pgwatch.h"

#define MSGS_PER_BATCH 20000     /* yield to the loop after this many messages */
/* A walsender flushes each message while its socket is writable: a reader
 * that keeps up gets a few messages per wakeup, and both sides spend their
 * CPU on syscalls (the walsender tripled its CPU time). While messages
 * stream in (small reads close together), let them gather for a moment. */
#define COALESCE_BELOW 32        /* a read of fewer messages is small */
#define COALESCE_GAP_NS 500000   /* ... and close after the last when this near */
#define COALESCE_MS 1
#define COALESCE_AFTER 8         /* small close reads in a row: a stream, not one txn */
#define STATUS_INTERVAL_MS 10000 /* standby status at least this often */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000

enum src_state { SRC_IDLE, SRC_CONNECTING, SRC_STARTING, SRC_STREAMING, SRC_CLOSING };

/* One mapping that reads a relation: which columns feed which fields. */
struct rel_target {
    const struct cfg_mapping *m;
    char side;                  /* 'a' or 'b' */
    int *col_field;             /* per relation column: index in m->fields, or -1 */
    int *key_col;               /* per key field of the side: relation column */
};

struct rel_map {
    uint32_t oid;
    struct rel_target *t;
    int nt;
};

struct pgsrc {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct cfg_endpoint *ep;
    struct state *st;
    struct pgsrc_hooks hooks;
    enum src_state state;
    PGconn *conn;
    struct pgwatch watch;
    uv_timer_t retry_timer, status_timer;
    int pending_closes;
    void (*closed)(void *);
    void *closed_arg;
    unsigned backoff_ms;
    struct pgo_decoder *dec;
    struct rel_map *rels;
    int nrels;
    /* the source transaction being decoded */
    bool in_txn, skip_txn;
    int64_t txn;                /* journal txn id, 0 until the first change */
    uint32_t xid;
    uint64_t final_lsn;
    int64_t commit_ts_us;
    /* positions */
    uint64_t start_lsn;         /* saved position at start: older txns are duplicates */
    uint64_t pending_lsn;       /* last commit appended to the state */
    uint64_t committed_lsn;     /* pending_lsn at the last state commit */
    uint64_t durable_lsn;       /* acknowledged-safe */
    uint64_t received_lsn;      /* last WAL position seen from the server */
    uint64_t open_changes;
    uint64_t last_drain_ns;     /* when a read last emptied the socket */
    int trickle_reads;          /* small reads close together, in a row */
    bool had_commit;
    struct strbuf kb, fb, ub, ok, ofb, oub;
    struct pgsrc_stats stats;
    /* An open backfill window (between a low and a high watermark): keys
     * of wm_mapping changed meanwhile. */
    char *wm_id, *wm_mapping;
    char **wm_keys;
    size_t wm_n, wm_cap;
};

static void src_connect(struct pgsrc *p);
static void src_fail(struct pgsrc *p, const char *what, const char *detail);
static void on_more(uv_timer_t *t);

static int64_t now_pg_us(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec - PGO_EPOCH_OFFSET_US;
}

/* ---- relation → mapping layout ---- */

static void rel_map_clear(struct rel_map *r)
{
    for (int i = 0; i < r->nt; i++) {
        free(r->t[i].col_field);
        free(r->t[i].key_col);
    }
    free(r->t);
    r->t = NULL;
    r->nt = 0;
}

static struct rel_map *rel_map_find(struct pgsrc *p, uint32_t oid, bool create)
{
    struct rel_map *n;

    for (int i = 0; i < p->nrels; i++)
        if (p->rels[i].oid == oid)
            return &p->rels[i];
    if (!create)
        return NULL;
    n = realloc(p->rels, sizeof(*n) * (size_t)(p->nrels + 1));
    if (n == NULL)
        return NULL;
    p->rels = n;
    n = &p->rels[p->nrels++];
    memset(n, 0, sizeof(*n));
    n->oid = oid;
    return n;
}

static bool side_reads(const struct cfg_mapping *m, char side)
{
    return m->direction == CFG_DIR_BOTH ||
           (side == 'a' && m->direction == CFG_DIR_A_TO_B) ||
           (side == 'b' && m->direction == CFG_DIR_B_TO_A);
}

static int field_index(const struct cfg_mapping *m, char side, const char *col)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (!strcmp(side == 'a' ? m->fields[i].name : m->fields[i].value, col))
            return (int)i;
    return -1;
}

static int build_target(struct pgsrc *p, const struct pgo_relation *rel,
                        const struct cfg_mapping *m, char side,
                        struct rel_target *t)
{
    const struct cfg_side *sd = side == 'a' ? &m->a : &m->b;

    t->m = m;
    t->side = side;
    t->col_field = calloc((size_t)rel->ncols + 1, sizeof(int));
    t->key_col = calloc(sd->nkey + 1, sizeof(int));
    if (t->col_field == NULL || t->key_col == NULL)
        return -ENOMEM;
    for (int c = 0; c < rel->ncols; c++) {
        t->col_field[c] = field_index(m, side, rel->cols[c].name);
        if (t->col_field[c] < 0)
            log_warn("pgsrc", "column not in the mapping's fields: ignored",
                     "endpoint", p->ep->name, "mapping", m->name,
                     "table", sd->table, "column", rel->cols[c].name);
    }
    for (size_t k = 0; k < sd->nkey; k++) {
        t->key_col[k] = -1;
        for (int c = 0; c < rel->ncols; c++)
            if (!strcmp(rel->cols[c].name, sd->key[k]))
                t->key_col[k] = c;
        if (t->key_col[k] < 0) {
            log_error("pgsrc", "key column missing from the table: its changes cannot sync;"
                      " fix the mapping's key or the table", "endpoint", p->ep->name,
                      "mapping", m->name, "table", sd->table, "column", sd->key[k]);
            return -EINVAL;
        }
    }
    return 0;
}

static void on_relation(struct pgsrc *p, const struct pgo_relation *rel)
{
    struct rel_map *r = rel_map_find(p, rel->oid, true);

    if (r == NULL)
        return;
    rel_map_clear(r);
    for (size_t i = 0; i < p->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &p->cfg->mappings[i];
        for (char side = 'a'; side <= 'b'; side++) {
            const struct cfg_side *sd = side == 'a' ? &m->a : &m->b;
            struct rel_target *n;

            if (sd->ep != p->ep || !side_reads(m, side) ||
                strcmp(sd->schema, rel->nspname[0] ? rel->nspname : "pg_catalog") ||
                strcmp(sd->relname, rel->relname))
                continue;
            n = realloc(r->t, sizeof(*n) * (size_t)(r->nt + 1));
            if (n == NULL)
                return;
            r->t = n;
            memset(&r->t[r->nt], 0, sizeof(*n));
            if (build_target(p, rel, m, side, &r->t[r->nt]) == 0)
                r->nt++;
            else {
                free(r->t[r->nt].col_field);
                free(r->t[r->nt].key_col);
            }
        }
    }
}

/* ---- changes ---- */

/* Every append must sit inside a state transaction: the owner commits
 * them in groups, also in the middle of a large source transaction. */
static int ensure_txn(struct pgsrc *p, struct err *e)
{
    int rc;

    if ((rc = state_begin(p->st, e)) != 0)
        return rc;
    if (p->txn != 0)
        return 0;
    return journal_txn_open(p->st, p->ep->name, p->xid, p->final_lsn,
                            p->commit_ts_us, &p->txn, e);
}

/* Builds the key array from tuple tup; -EINVAL when a key value is absent. */
static int build_key(const struct rel_target *t, const struct cfg_side *sd,
                     const struct pgo_tuple *tup, struct strbuf *b)
{
    strbuf_reset(b);
    strbuf_addc(b, '[');
    for (size_t k = 0; k < sd->nkey; k++) {
        const struct pgo_value *v = &tup->vals[t->key_col[k]];
        if (v->kind != 't')
            return -EINVAL;
        if (k > 0)
            strbuf_addc(b, ',');
        strbuf_add_json_string(b, v->data, v->len);
    }
    strbuf_addc(b, ']');
    return b->failed ? -ENOMEM : 0;
}

static void build_fields(const struct rel_target *t, const struct pgo_tuple *tup,
                         struct strbuf *fb, struct strbuf *ub)
{
    bool first = true, ufirst = true;

    strbuf_reset(fb);
    strbuf_reset(ub);
    strbuf_addc(fb, '{');
    strbuf_addc(ub, '[');
    for (int c = 0; c < tup->ncols; c++) {
        const struct pgo_value *v = &tup->vals[c];
        const char *name;

        if (t->col_field[c] < 0)
            continue;
        name = t->m->fields[t->col_field[c]].name;
        if (v->kind == 'u') {
            if (!ufirst)
                strbuf_addc(ub, ',');
            strbuf_add_json_string(ub, name, strlen(name));
            ufirst = false;
            continue;
        }
        if (!first)
            strbuf_addc(fb, ',');
        first = false;
        strbuf_add_json_string(fb, name, strlen(name));
        strbuf_addc(fb, ':');
        if (v->kind == 'n')
            strbuf_adds(fb, "null");
        else
            strbuf_add_json_string(fb, v->data, v->len);
    }
    strbuf_addc(fb, '}');
    strbuf_addc(ub, ']');
}

static int journal_one(struct pgsrc *p, const struct rel_target *t,
                       const struct pgo_msg *msg, struct err *e)
{
    const struct cfg_side *sd = t->side == 'a' ? &t->m->a : &t->m->b;
    const struct pgo_tuple *keyt = msg->type == 'D' ? &msg->u.change.old
                                                    : &msg->u.change.new;
    struct change c = { 0 };
    int rc;

    if (build_key(t, sd, keyt, &p->kb) != 0) {
        log_error("pgsrc", "change without a key value: not journaled; give the table a"
                  " primary key or REPLICA IDENTITY FULL", "endpoint", p->ep->name,
                  "mapping", t->m->name, "table", sd->table);
        return 0;
    }
    build_fields(t, keyt, &p->fb, &p->ub);
    /* A whole old row ('O', REPLICA IDENTITY FULL) is the state this change
     * was made on: the writer checks the target row against it. */
    if (msg->u.change.old_kind == 'O') {
        build_fields(t, &msg->u.change.old, &p->ofb, &p->oub);
        c.old_fields = strbuf_cstr(&p->ofb);
    }
    c.old_key = NULL;
    if (msg->type == 'U' && msg->u.change.old_kind != 0 &&
        build_key(t, sd, &msg->u.change.old, &p->ok) == 0 &&
        strcmp(strbuf_cstr(&p->ok), strbuf_cstr(&p->kb)) != 0)
        c.old_key = strbuf_cstr(&p->ok);
    if (p->kb.failed || p->fb.failed || p->ub.failed || p->ofb.failed)
        return err_set(e, -ENOMEM, "out of memory building a change");
    c.endpoint = p->ep->name;
    c.mapping = t->m->name;
    c.op = (enum change_op)msg->type;
    c.key = strbuf_cstr(&p->kb);
    c.fields = strbuf_cstr(&p->fb);
    c.unchanged = p->ub.len > 2 ? strbuf_cstr(&p->ub) : NULL;
    c.version_us = p->commit_ts_us;
    if ((rc = ensure_txn(p, e)) != 0)
        return rc;
    if ((rc = journal_append(p->st, p->txn, &c, e)) != 0)
        return rc;
    p->open_changes++;
    p->stats.captured++;
    return 0;
}

/* ---- backfill watermarks ---- */

static void wm_reset(struct pgsrc *p)
{
    for (size_t i = 0; i < p->wm_n; i++)
        free(p->wm_keys[i]);
    free(p->wm_keys);
    free(p->wm_id);
    free(p->wm_mapping);
    p->wm_keys = NULL;
    p->wm_id = p->wm_mapping = NULL;
    p->wm_n = p->wm_cap = 0;
}

/* Notes that key of the watched mapping changed inside the window, also
 * in a skipped transaction (tandem's own write from the other side): the
 * chunk may hold an older value of it. */
static int wm_note(struct pgsrc *p, const struct rel_target *t, const struct pgo_msg *msg,
                   struct err *e)
{
    const struct cfg_side *sd = t->side == 'a' ? &t->m->a : &t->m->b;
    const struct pgo_tuple *keyt = msg->type == 'D' ? &msg->u.change.old
                                                    : &msg->u.change.new;
    char **n;

    if (strcmp(t->m->name, p->wm_mapping) != 0 || build_key(t, sd, keyt, &p->kb) != 0)
        return 0;
    if (p->wm_n == p->wm_cap) {
        size_t cap = p->wm_cap ? p->wm_cap * 2 : 64;
        if ((n = realloc(p->wm_keys, cap * sizeof(*n))) == NULL)
            return err_set(e, -ENOMEM, "out of memory");
        p->wm_keys = n;
        p->wm_cap = cap;
    }
    if ((p->wm_keys[p->wm_n] = strdup(strbuf_cstr(&p->kb))) == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    p->wm_n++;
    return 0;
}

static int on_wm_message(struct pgsrc *p, const struct pgo_msg *msg, struct err *e)
{
    char kind, id[64] = "", mapping[256] = "";
    char text[400];
    size_t n = msg->u.message.len < sizeof(text) - 1 ? msg->u.message.len : sizeof(text) - 1;

    if (msg->u.message.prefix == NULL || strcmp(msg->u.message.prefix, PGSRC_WM_PREFIX) != 0 ||
        p->hooks.on_watermark == NULL)
        return 0;
    memcpy(text, msg->u.message.content, n);
    text[n] = '\0';
    if (sscanf(text, "%c %63s %255s", &kind, id, mapping) < 2)
        return 0;
    if (kind == 'L') {
        wm_reset(p);
        p->wm_id = strdup(id);
        p->wm_mapping = strdup(mapping);
        if (p->wm_id == NULL || p->wm_mapping == NULL)
            return err_set(e, -ENOMEM, "out of memory");
    } else if (kind == 'H') {
        static const char *const none[1] = { NULL };
        bool seen = p->wm_id != NULL && strcmp(p->wm_id, id) == 0;
        const char *const *changed = !seen ? NULL
                                     : p->wm_n ? (const char *const *)p->wm_keys : none;
        int rc = state_begin(p->st, e);

        if (rc != 0)
            return rc;
        p->hooks.on_watermark(p->hooks.arg, p, 'H', id, changed, seen ? p->wm_n : 0);
        wm_reset(p);
        p->had_commit = true;   /* the owner commits what the hook journaled */
    }
    return 0;
}

static int on_change(struct pgsrc *p, const struct pgo_msg *msg, struct err *e)
{
    struct rel_map *r = rel_map_find(p, msg->u.change.relid, false);
    int rc;

    for (int i = 0; r != NULL && p->wm_mapping != NULL && i < r->nt; i++)
        if ((rc = wm_note(p, &r->t[i], msg, e)) != 0)
            return rc;
    if (r == NULL || p->skip_txn)
        return 0;
    for (int i = 0; i < r->nt; i++)
        if ((rc = journal_one(p, &r->t[i], msg, e)) != 0)
            return rc;
    return 0;
}

static int on_truncate(struct pgsrc *p, const struct pgo_msg *msg, struct err *e)
{
    int rc;

    if (p->skip_txn)
        return 0;
    for (int i = 0; i < msg->u.truncate.nrels; i++) {
        struct rel_map *r = rel_map_find(p, msg->u.truncate.relids[i], false);
        for (int j = 0; r != NULL && j < r->nt; j++) {
            struct change c = { 0 };
            c.endpoint = p->ep->name;
            c.mapping = r->t[j].m->name;
            c.op = CHANGE_TRUNCATE;
            c.key = "[]";
            c.fields = "{}";
            c.version_us = p->commit_ts_us;
            if ((rc = ensure_txn(p, e)) != 0 ||
                (rc = journal_append(p->st, p->txn, &c, e)) != 0)
                return rc;
            p->open_changes++;
            p->stats.captured++;
        }
    }
    return 0;
}

static void on_begin(struct pgsrc *p, const struct pgo_msg *msg)
{
    p->in_txn = true;
    p->txn = 0;
    p->xid = msg->u.begin.xid;
    p->final_lsn = msg->u.begin.final_lsn;
    p->commit_ts_us = msg->u.begin.commit_ts + PGO_EPOCH_OFFSET_US;
    /* The server resends from the slot's confirmed position, which may lie
     * before what we journaled: skip those transactions. */
    p->skip_txn = p->final_lsn < p->start_lsn;
    if (p->skip_txn)
        p->stats.dup_skipped++;
}

static void on_origin(struct pgsrc *p, const struct pgo_msg *msg)
{
    if (p->ep->origin != NULL && strcmp(msg->u.origin.name, p->ep->origin) == 0 &&
        !p->skip_txn) {
        p->skip_txn = true;
        p->stats.echo_skipped++;
    }
}

static int on_commit(struct pgsrc *p, const struct pgo_msg *msg, struct err *e)
{
    int64_t seq;
    int rc;

    if (p->txn != 0) {
        /* Same state transaction as the position saved at the next flush. */
        if ((rc = state_begin(p->st, e)) != 0 ||
            (rc = journal_txn_commit(p->st, p->txn, msg->u.commit.end_lsn, &seq, e)) != 0)
            return rc;
        p->stats.txns++;
    }
    p->in_txn = false;
    p->txn = 0;
    if (msg->u.commit.end_lsn > p->pending_lsn)
        p->pending_lsn = msg->u.commit.end_lsn;
    p->had_commit = true;
    return 0;
}

static int handle_message(struct pgsrc *p, const uint8_t *buf, size_t len,
                          uint64_t lsn, struct err *e)
{
    struct pgo_msg msg;
    int rc = pgo_decode(p->dec, buf, len, lsn, &msg, e);

    if (rc != 0)
        return rc;
    switch (msg.type) {
    case 'B': on_begin(p, &msg); return 0;
    case 'O': on_origin(p, &msg); return 0;
    case 'R': on_relation(p, msg.u.relation); return 0;
    case 'I': case 'U': case 'D': return on_change(p, &msg, e);
    case 'T': return on_truncate(p, &msg, e);
    case 'C': return on_commit(p, &msg, e);
    case 'M': return on_wm_message(p, &msg, e);
    default: return 0;  /* Type carries nothing to sync */
    }
}

/* ---- standby status ---- */

static void send_status(struct pgsrc *p, bool reply)
{
    uint8_t msg[34];
    uint64_t flush = p->durable_lsn;
    size_t n;

    if (p->state != SRC_STREAMING)
        return;
    n = pgo_build_status(msg, flush, flush, flush, now_pg_us(), reply);
    if (PQputCopyData(p->conn, (const char *)msg, (int)n) != 1) {
        src_fail(p, "cannot send standby status", NULL);
        return;
    }
    if (PQflush(p->conn) == 1)
        pgwatch_set(&p->watch, PQsocket(p->conn), UV_READABLE | UV_WRITABLE);
}

static void on_status_timer(uv_timer_t *t)
{
    send_status(t->data, false);
}

/* Outside a transaction with nothing pending, everything the server sent
 * up to its WAL end is handled: acknowledging it lets the slot release WAL
 * of unrelated traffic. */
static void note_server_position(struct pgsrc *p, uint64_t wal_end)
{
    if (!p->in_txn && p->pending_lsn == p->durable_lsn &&
        p->committed_lsn == p->durable_lsn && wal_end > p->durable_lsn) {
        p->durable_lsn = wal_end;
        p->pending_lsn = wal_end;
        p->committed_lsn = wal_end;
    }
}

static int handle_copy(struct pgsrc *p, const uint8_t *buf, size_t len,
                       struct err *e)
{
    struct pgo_frame f;
    int rc = pgo_parse_frame(buf, len, &f, e);

    if (rc != 0)
        return rc;
    if (f.kind == 'k') {
        p->received_lsn = f.end_lsn;
        note_server_position(p, f.end_lsn);
        if (f.reply_requested)
            send_status(p, false);
        return 0;
    }
    if (f.start_lsn > p->received_lsn)
        p->received_lsn = f.start_lsn;
    return handle_message(p, f.payload, f.payload_len, f.start_lsn, e);
}

/* ---- connection ---- */

static void src_disconnect(struct pgsrc *p)
{
    pgwatch_stop(&p->watch);
    uv_timer_stop(&p->status_timer);
    if (p->conn != NULL) {
        PQfinish(p->conn);
        p->conn = NULL;
    }
    pgo_decoder_reset(p->dec);
    for (int i = 0; i < p->nrels; i++)
        rel_map_clear(&p->rels[i]);
    p->nrels = 0;
    p->in_txn = false;
    p->txn = 0;
    wm_reset(p);    /* a window open across a reconnect tells nothing */
}

static void on_retry(uv_timer_t *t)
{
    src_connect(t->data);
}

/* Idle until the retry timer reconnects, after a backoff that doubles. */
static void retry_later(struct pgsrc *p)
{
    p->state = SRC_IDLE;
    uv_timer_start(&p->retry_timer, on_retry, p->backoff_ms, 0);
    p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
}

static void src_fail(struct pgsrc *p, const char *what, const char *detail)
{
    char msg[512], delay[32];
    bool was_up = p->state == SRC_STREAMING;

    if (p->state == SRC_CLOSING)
        return;
    if (detail == NULL && p->conn != NULL)
        detail = pgconn_error(p->conn, msg, sizeof(msg));
    snprintf(delay, sizeof(delay), "%u", p->backoff_ms);
    log_error("pgsrc", what, "endpoint", p->ep->name, "err", detail,
              "retry_in_ms", delay);
    /* Changes of a transaction cut short stay uncommitted in the journal
     * and are deleted at the next start; the server resends it. */
    src_disconnect(p);
    retry_later(p);
    if (was_up && p->hooks.on_connection)
        p->hooks.on_connection(p->hooks.arg, p, false);
}

/* The socket is empty after count messages: when they have been trickling
 * in under load, read again in COALESCE_MS instead of at the next byte. A
 * lone transaction (a few messages) is read at once. */
static void gather_next_read(struct pgsrc *p, int count)
{
    uint64_t now = uv_hrtime();
    bool trickle = count > 0 && count < COALESCE_BELOW &&
                   now - p->last_drain_ns < COALESCE_GAP_NS;

    p->last_drain_ns = now;
    p->trickle_reads = trickle ? p->trickle_reads + 1 : 0;
    if (p->trickle_reads < COALESCE_AFTER)
        return;
    p->trickle_reads = 0;
    pgwatch_pause(&p->watch);
    uv_timer_start(&p->retry_timer, on_more, COALESCE_MS, 0);
}

static void read_stream(struct pgsrc *p)
{
    struct err e = { 0 };
    char *buf;
    int n, count = 0;

    if (PQconsumeInput(p->conn) == 0) {
        src_fail(p, "replication connection lost", NULL);
        return;
    }
    while (count < MSGS_PER_BATCH && (n = PQgetCopyData(p->conn, &buf, 1)) > 0) {
        int rc = handle_copy(p, (const uint8_t *)buf, (size_t)n, &e);
        PQfreemem(buf);
        if (rc != 0) {
            src_fail(p, "cannot journal the replication stream", e.msg);
            return;
        }
        count++;
    }
    if (count > 0 && p->hooks.on_batch)
        p->hooks.on_batch(p->hooks.arg, p, p->had_commit, p->open_changes);
    p->had_commit = false;
    if (p->state != SRC_STREAMING)
        return;
    if (count == MSGS_PER_BATCH) {
        /* More may be buffered in libpq without the socket being readable. */
        uv_timer_start(&p->retry_timer, on_more, 0, 0);
        return;
    }
    if (n == -1)
        src_fail(p, "replication stream ended by the server", NULL);
    else if (n == -2)
        src_fail(p, "replication stream error", NULL);
    else
        gather_next_read(p, count);
}

static void on_more(uv_timer_t *t)
{
    struct pgsrc *p = t->data;
    int events = UV_READABLE;

    if (p->state != SRC_STREAMING)
        return;
    /* A status message may still wait to be sent (the watch was paused). */
    if (PQflush(p->conn) == 1)
        events |= UV_WRITABLE;
    if (pgwatch_set(&p->watch, PQsocket(p->conn), events) != 0) {
        src_fail(p, "cannot watch the replication connection", NULL);
        return;
    }
    read_stream(p);
}

static void on_started(struct pgsrc *p)
{
    PGresult *r;

    if (PQconsumeInput(p->conn) == 0) {
        src_fail(p, "replication connection lost", NULL);
        return;
    }
    if (PQisBusy(p->conn))
        return;
    r = PQgetResult(p->conn);
    if (PQresultStatus(r) != PGRES_COPY_BOTH) {
        PQclear(r);
        src_fail(p, "START_REPLICATION failed", NULL);
        return;
    }
    PQclear(r);
    p->state = SRC_STREAMING;
    p->backoff_ms = BACKOFF_MIN_MS;
    log_info("pgsrc", "streaming", "endpoint", p->ep->name, "slot", p->ep->slot);
    uv_timer_start(&p->status_timer, on_status_timer, STATUS_INTERVAL_MS,
                   STATUS_INTERVAL_MS);
    if (p->hooks.on_connection)
        p->hooks.on_connection(p->hooks.arg, p, true);
    read_stream(p);
}

static void start_replication(struct pgsrc *p)
{
    char lsn[PGO_LSN_STRLEN], *slot, *pub_lit, *sql = NULL;

    pgo_lsn_format(p->durable_lsn, lsn);
    slot = pgconn_quote_ident(p->conn, p->ep->slot);
    pub_lit = PQescapeLiteral(p->conn, p->ep->publication, strlen(p->ep->publication));
    if (slot && pub_lit &&
        asprintf(&sql, "START_REPLICATION SLOT %s LOGICAL %s (proto_version '1',"
                 " publication_names %s, messages 'true')", slot, lsn, pub_lit) > 0 &&
        PQsendQuery(p->conn, sql) == 1) {
        p->state = SRC_STARTING;
        /* The server resends from the acknowledged position; what the
         * state already holds past it (committed, not yet synced) is
         * skipped, not journaled twice. */
        p->start_lsn = p->committed_lsn;
        pgwatch_set(&p->watch, PQsocket(p->conn), UV_READABLE);
        log_info("pgsrc", "starting replication", "endpoint", p->ep->name,
                 "slot", p->ep->slot, "lsn", lsn);
    } else {
        src_fail(p, "cannot send START_REPLICATION", NULL);
    }
    free(slot);
    free(sql);
    PQfreemem(pub_lit);
}

static void continue_connect(struct pgsrc *p)
{
    int rc = pgconn_poll_connect(p->conn, &p->watch);

    if (rc < 0)
        src_fail(p, "cannot connect for replication", NULL);
    else if (rc > 0)
        start_replication(p);
}

static void on_io(void *arg, int events)
{
    struct pgsrc *p = arg;

    switch (p->state) {
    case SRC_CONNECTING:
        continue_connect(p);
        break;
    case SRC_STARTING:
        on_started(p);
        break;
    case SRC_STREAMING:
        if ((events & UV_WRITABLE) && PQflush(p->conn) == 0)
            pgwatch_set(&p->watch, PQsocket(p->conn), UV_READABLE);
        if (events & UV_READABLE)
            read_stream(p);
        break;
    default:
        break;
    }
}

static void src_connect(struct pgsrc *p)
{
    struct pgconn_params prm;
    char pos[64];

    if (p->state == SRC_CLOSING)
        return;
    /* Resume after the last durable commit (the journal's own record). */
    uint64_t saved = 0;
    if (state_position_get(p->st, p->ep->name, pos, sizeof(pos), NULL) == 0 &&
        pgo_lsn_parse(pos, &saved) == 0 && saved > p->durable_lsn)
        p->durable_lsn = saved;
    if (p->pending_lsn < p->durable_lsn)
        p->pending_lsn = p->durable_lsn;
    if (p->committed_lsn < p->durable_lsn)
        p->committed_lsn = p->durable_lsn;
    pgconn_params_init(&prm, p->ep, true);
    p->conn = PQconnectStartParams(prm.keys, prm.vals, 1);
    if (p->conn == NULL || PQstatus(p->conn) == CONNECTION_BAD) {
        src_fail(p, "cannot start a replication connection", NULL);
        return;
    }
    p->state = SRC_CONNECTING;
    continue_connect(p);
}

/* ---- lifecycle ---- */

int pgsrc_new(struct pgsrc **out, uv_loop_t *loop, const struct config *c,
              const struct cfg_endpoint *ep, struct state *s,
              const struct pgsrc_hooks *h, struct err *e)
{
    struct pgsrc *p = calloc(1, sizeof(*p));

    if (p == NULL || pgo_decoder_new(&p->dec) != 0) {
        free(p);
        return err_set(e, -ENOMEM, "out of memory");
    }
    p->loop = loop;
    p->cfg = c;
    p->ep = ep;
    p->st = s;
    p->hooks = *h;
    p->backoff_ms = BACKOFF_MIN_MS;
    pgwatch_init(&p->watch, loop, on_io, p);
    uv_timer_init(loop, &p->retry_timer);
    uv_timer_init(loop, &p->status_timer);
    p->retry_timer.data = p;
    p->status_timer.data = p;
    strbuf_init(&p->kb);
    strbuf_init(&p->fb);
    strbuf_init(&p->ub);
    strbuf_init(&p->ok);
    strbuf_init(&p->ofb);
    strbuf_init(&p->oub);
    *out = p;
    return 0;
}

int pgsrc_start(struct pgsrc *p)
{
    src_connect(p);
    return 0;
}

uint64_t pgsrc_pending_lsn(const struct pgsrc *p)
{
    return p->pending_lsn;
}

void pgsrc_committed(struct pgsrc *p)
{
    p->committed_lsn = p->pending_lsn;
    p->open_changes = 0;
}

void pgsrc_rewind(struct pgsrc *p)
{
    bool streaming = p->state == SRC_STREAMING || p->state == SRC_STARTING ||
                     p->state == SRC_CONNECTING;

    p->pending_lsn = p->committed_lsn;
    p->open_changes = 0;
    if (!streaming)
        return;         /* idle: the retry reconnects from there anyway */
    log_warn("pgsrc", "the state commit failed: reading again from the last saved"
             " transaction", "endpoint", p->ep->name);
    src_disconnect(p);
    retry_later(p);     /* backoff: while the disk stays full, every commit fails */
}

void pgsrc_durable(struct pgsrc *p)
{
    bool moved = p->committed_lsn > p->durable_lsn;

    if (moved) {
        p->durable_lsn = p->committed_lsn;
        send_status(p, false);
    }
}

const struct cfg_endpoint *pgsrc_endpoint(const struct pgsrc *p)
{
    return p->ep;
}

const struct pgsrc_stats *pgsrc_stats(const struct pgsrc *p)
{
    return &p->stats;
}

bool pgsrc_in_journal_txn(const struct pgsrc *p)
{
    return p->txn != 0;
}

int64_t pgsrc_journal_txn(const struct pgsrc *p)
{
    return p->txn;
}

bool pgsrc_streaming(const struct pgsrc *p)
{
    return p->state == SRC_STREAMING;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct pgsrc *p = h->data;

    if (--p->pending_closes > 0)
        return;
    if (p->closed)
        p->closed(p->closed_arg);
    pgo_decoder_free(p->dec);
    for (int i = 0; i < p->nrels; i++)
        rel_map_clear(&p->rels[i]);
    free(p->rels);
    strbuf_free(&p->kb);
    strbuf_free(&p->fb);
    strbuf_free(&p->ub);
    strbuf_free(&p->ok);
    strbuf_free(&p->ofb);
    strbuf_free(&p->oub);
    wm_reset(p);
    free(p);
}

void pgsrc_close(struct pgsrc *p, void (*done)(void *arg), void *arg)
{
    if (p->state == SRC_STREAMING) {
        send_status(p, false);
        PQputCopyEnd(p->conn, NULL);
        PQflush(p->conn);
    }
    p->state = SRC_CLOSING;
    src_disconnect(p);
    p->closed = done;
    p->closed_arg = arg;
    p->pending_closes = 2;
    uv_close((uv_handle_t *)&p->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&p->status_timer, on_handle_closed);
}
