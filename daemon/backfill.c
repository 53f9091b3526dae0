/* backfill.c: chunked backfill between stream watermarks; see backfill.h. */
#include "backfill.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../connectors/pg/pgquery.h"
#include "../connectors/pg/pgsrc.h"
#include "../state/journal.h"
#include "log.h"
#include "strbuf.h"

#define WAIT_HIGH_MS 60000      /* a high watermark not seen by then: read again */
#define RETRY_MS 5000           /* after a failed query */
#define RESCAN_MS 5000          /* looking for new requests when idle */

enum bf_phase { BF_IDLE, BF_LOW, BF_READ, BF_HIGH, BF_WAIT_HIGH };

struct chunk_row {
    char *key;                  /* canonical key: the key column texts as a JSON
                                 * array, also the cursor ("after") */
    char *fields;               /* {side-a name: text or null} */
    int64_t version_us;
};

struct backfill {
    uv_loop_t *loop;
    const struct config *cfg;
    struct state *st;
    enum bf_phase phase;
    bool closing;
    uint64_t phase_ms, retry_at_ms, scanned_ms;
    unsigned counter;
    char id[64];
    const struct cfg_mapping *m;
    char side;
    struct chunk_row *rows;
    size_t nrows;
    bool pending;               /* some request is not done */
    int inflight;               /* queries whose callback has not run */
    int64_t rows_before;        /* rows the request had copied before this chunk */
};

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const struct cfg_side *side_of(const struct cfg_mapping *m, char side)
{
    return side == 'a' ? &m->a : &m->b;
}

static bool side_is_source(const struct cfg_mapping *m, char side)
{
    const struct cfg_side *sd = side_of(m, side);

    if (sd->ep == NULL || sd->ep->kind != CFG_KIND_POSTGRES)
        return false;
    return side == 'a' ? m->direction != CFG_DIR_B_TO_A : m->direction != CFG_DIR_A_TO_B;
}

static void meta_key(char *buf, size_t cap, const struct cfg_mapping *m, char side)
{
    snprintf(buf, cap, "backfill:%s:%c", m->name, side);
}

/* ---- requests ---- */

int backfill_request(struct state *st, const struct cfg_mapping *m, struct err *e)
{
    char k[300];
    int n = 0, rc;

    for (char side = 'a'; side <= 'b'; side++) {
        if (!side_is_source(m, side))
            continue;
        meta_key(k, sizeof(k), m, side);
        if ((rc = state_meta_set(st, k, "{\"after\":null,\"rows\":0}", e)) != 0)
            return rc;
        n++;
    }
    return n;
}

int backfill_request_new_mappings(struct state *st, const struct config *c, struct err *e)
{
    char known[8192];
    json_t *list = NULL, *now = json_array(), *v;
    char *text = NULL;
    bool first = state_meta_get(st, "mappings_known", known, sizeof(known), NULL) != 0;
    size_t i;
    int rc = 0;

    if (!first)
        list = json_loads(known, 0, NULL);
    for (size_t k = 0; k < c->nmappings && rc >= 0; k++) {
        const struct cfg_mapping *m = &c->mappings[k];
        bool seen = first;

        json_array_foreach(list, i, v)
            if (json_is_string(v) && strcmp(json_string_value(v), m->name) == 0)
                seen = true;
        json_array_append_new(now, json_string(m->name));
        if (!seen && (rc = backfill_request(st, m, e)) > 0)
            log_info("backfill", "a mapping new to this pipeline: its existing rows are"
                     " copied in chunks while streaming goes on", "mapping", m->name);
    }
    if (rc >= 0 && (text = json_dumps(now, JSON_COMPACT)) != NULL)
        rc = state_meta_set(st, "mappings_known", text, e);
    free(text);
    json_decref(list);
    json_decref(now);
    return rc < 0 ? rc : 0;
}

/* The request's cursor: NULL after (first chunk) or the last key texts;
 * -ENOENT when there is no open request. */
static int request_get(struct backfill *b, const struct cfg_mapping *m, char side,
                       json_t **after, int64_t *rows)
{
    char k[300], v[8192];
    json_t *o;

    meta_key(k, sizeof(k), m, side);
    if (state_meta_get(b->st, k, v, sizeof(v), NULL) != 0 || strcmp(v, "done") == 0)
        return -ENOENT;
    if ((o = json_loads(v, 0, NULL)) == NULL)
        return -ENOENT;
    *after = json_incref(json_object_get(o, "after"));
    *rows = json_integer_value(json_object_get(o, "rows"));
    json_decref(o);
    return 0;
}

int backfill_progress(struct state *st, const struct cfg_mapping *m, char side,
                      int64_t *rows)
{
    char k[300], v[8192];
    json_t *o;

    meta_key(k, sizeof(k), m, side);
    if (state_meta_get(st, k, v, sizeof(v), NULL) != 0)
        return -ENOENT;
    if (strcmp(v, "done") == 0)
        return 1;
    o = json_loads(v, 0, NULL);
    *rows = json_integer_value(json_object_get(o, "rows"));
    json_decref(o);
    return 0;
}

/* ---- one chunk ---- */

static void rows_clear(struct backfill *b)
{
    for (size_t i = 0; i < b->nrows; i++) {
        free(b->rows[i].key);
        free(b->rows[i].fields);
    }
    free(b->rows);
    b->rows = NULL;
    b->nrows = 0;
}

static void set_phase(struct backfill *b, enum bf_phase ph)
{
    b->phase = ph;
    b->phase_ms = uv_now(b->loop);
}

static void fail_chunk(struct backfill *b, const char *what, const char *err)
{
    log_error("backfill", what, "mapping", b->m ? b->m->name : "", "err", err ? err : "",
              "retry_in_ms", "5000");
    rows_clear(b);
    set_phase(b, BF_IDLE);
    b->retry_at_ms = uv_now(b->loop) + RETRY_MS;
}

static void add_ident(struct strbuf *s, const char *name)
{
    strbuf_addc(s, '"');
    for (; *name; name++) {
        if (*name == '"')
            strbuf_addc(s, '"');
        strbuf_addc(s, *name);
    }
    strbuf_addc(s, '"');
}

/* SELECT key columns, mapped columns and the row's commit time, after the
 * cursor ($1..$n, types inferred from the columns), in key order. */
static char *chunk_sql(const struct cfg_mapping *m, char side, bool has_after)
{
    const struct cfg_side *sd = side_of(m, side);
    struct strbuf s;

    strbuf_init(&s);
    strbuf_adds(&s, "SELECT ");
    for (size_t i = 0; i < sd->nkey; i++) {
        strbuf_adds(&s, "src.");
        add_ident(&s, sd->key[i]);
        strbuf_adds(&s, "::text, ");
    }
    for (size_t i = 0; i < m->nfields; i++) {
        strbuf_adds(&s, "src.");
        add_ident(&s, side == 'a' ? m->fields[i].name : m->fields[i].value);
        strbuf_adds(&s, "::text, ");
    }
    strbuf_adds(&s, "CASE WHEN current_setting('track_commit_timestamp')::bool THEN"
                    " (extract(epoch from pg_xact_commit_timestamp(src.xmin)) * 1000000)::int8"
                    " END FROM ");
    add_ident(&s, sd->schema ? sd->schema : "public");
    strbuf_addc(&s, '.');
    add_ident(&s, sd->relname);
    /* Qualified: ORDER BY a bare name would sort the ::text output column. */
    strbuf_adds(&s, " AS src");
    for (size_t i = 0; has_after && i < sd->nkey; i++) {
        strbuf_adds(&s, i == 0 ? " WHERE (src." : ", src.");
        add_ident(&s, sd->key[i]);
    }
    for (size_t i = 0; has_after && i < sd->nkey; i++) {
        char param[32];

        snprintf(param, sizeof(param), "%s$%zu", i == 0 ? ") > (" : ", ", i + 1);
        strbuf_adds(&s, param);
    }
    if (has_after)
        strbuf_addc(&s, ')');
    for (size_t i = 0; i < sd->nkey; i++) {
        strbuf_adds(&s, i == 0 ? " ORDER BY src." : ", src.");
        add_ident(&s, sd->key[i]);
    }
    {
        char limit[32];

        snprintf(limit, sizeof(limit), " LIMIT %d", BACKFILL_CHUNK);
        strbuf_adds(&s, limit);
    }
    if (s.failed) {
        strbuf_free(&s);
        return NULL;
    }
    return s.buf;
}

static int take_rows(struct backfill *b, PGresult *r)
{
    const struct cfg_side *sd = side_of(b->m, b->side);
    int n = PQntuples(r), nk = (int)sd->nkey;
    int64_t now = wall_us();

    if ((b->rows = calloc(n ? (size_t)n : 1, sizeof(*b->rows))) == NULL)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        json_t *key = json_array(), *fields = json_object();
        int vcol = nk + (int)b->m->nfields;

        for (int k = 0; k < nk; k++)
            json_array_append_new(key, json_string(PQgetvalue(r, i, k)));
        for (size_t f = 0; f < b->m->nfields; f++)
            json_object_set_new(fields, b->m->fields[f].name,
                                PQgetisnull(r, i, nk + (int)f)
                                ? json_null() : json_string(PQgetvalue(r, i, nk + (int)f)));
        b->rows[i].key = json_dumps(key, JSON_COMPACT);
        b->rows[i].fields = json_dumps(fields, JSON_COMPACT);
        b->rows[i].version_us = PQgetisnull(r, i, vcol) ? now : atoll(PQgetvalue(r, i, vcol));
        json_decref(key);
        json_decref(fields);
        b->nrows++;
        if (b->rows[i].key == NULL || b->rows[i].fields == NULL)
            return -ENOMEM;
    }
    return 0;
}

static void on_high_sent(void *arg, PGresult *res, const char *errmsg);
static void on_chunk_read(void *arg, PGresult *res, const char *errmsg);

/* Every query's callback starts here: when b is closing, the last one
 * to return frees it and none goes on. */
static bool closed_meanwhile(struct backfill *b)
{
    b->inflight--;
    if (!b->closing)
        return false;
    if (b->inflight == 0) {
        rows_clear(b);
        free(b);
    }
    return true;
}

static int start_query(struct backfill *b, const char *sql, int n, const char *const *params,
                       pgquery_cb cb)
{
    b->inflight++;
    if (pgquery_start(b->loop, side_of(b->m, b->side)->ep, sql, n, params, cb, b) == 0)
        return 0;
    b->inflight--;
    return -ENOMEM;
}

static void send_marker(struct backfill *b, char kind, pgquery_cb cb)
{
    char text[400];
    const char *params[1] = { text };

    snprintf(text, sizeof(text), "%c %s %s", kind, b->id, b->m->name);
    set_phase(b, kind == 'L' ? BF_LOW : BF_HIGH);
    if (start_query(b, "SELECT pg_logical_emit_message(false, '" PGSRC_WM_PREFIX "', $1)::text",
                    1, params, cb) != 0)
        fail_chunk(b, "cannot write a backfill watermark", "out of memory");
}

static void on_low_sent(void *arg, PGresult *res, const char *errmsg)
{
    struct backfill *b = arg;
    json_t *after = NULL, *v;
    const char *params[16];
    int64_t rows;
    char *sql;
    size_t i;

    if (closed_meanwhile(b))
        return;
    if (res == NULL) {
        fail_chunk(b, "cannot write a backfill watermark", errmsg);
        return;
    }
    if (request_get(b, b->m, b->side, &after, &rows) != 0) {
        set_phase(b, BF_IDLE);
        return;
    }
    b->rows_before = rows;
    json_array_foreach(after, i, v)
        if (i < 16)
            params[i] = json_string_value(v);
    sql = chunk_sql(b->m, b->side, json_is_array(after));
    set_phase(b, BF_READ);
    if (sql == NULL || start_query(b, sql, json_is_array(after) ? (int)json_array_size(after) : 0,
                                   params, on_chunk_read) != 0)
        fail_chunk(b, "cannot read a backfill chunk", "out of memory");
    free(sql);
    json_decref(after);
}

static void on_chunk_read(void *arg, PGresult *res, const char *errmsg)
{
    struct backfill *b = arg;

    if (closed_meanwhile(b))
        return;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail_chunk(b, "cannot read a backfill chunk", errmsg ? errmsg
                   : res ? PQresultErrorMessage(res) : NULL);
        return;
    }
    if (take_rows(b, res) != 0) {
        fail_chunk(b, "cannot keep a backfill chunk", "out of memory");
        return;
    }
    /* The chunk is in memory before the high watermark exists: when the
     * reader meets it, everything needed is here. */
    send_marker(b, 'H', on_high_sent);
}

static void on_high_sent(void *arg, PGresult *res, const char *errmsg)
{
    struct backfill *b = arg;

    if (closed_meanwhile(b) || b->phase != BF_HIGH)
        return;     /* the stream brought the watermark first: done already */
    if (res == NULL) {
        fail_chunk(b, "cannot write a backfill watermark", errmsg);
        return;
    }
    set_phase(b, BF_WAIT_HIGH);
}

/* ---- the high watermark in the stream ---- */

static bool changed_key(const char *key, const char *const *changed, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(changed[i], key) == 0)
            return true;
    return false;
}

static int journal_chunk(struct backfill *b, const char *const *changed, size_t nchanged,
                         size_t *kept, struct err *e)
{
    const struct cfg_side *sd = side_of(b->m, b->side);
    int64_t txn = 0, seq;
    int rc = 0;

    for (size_t i = 0; i < b->nrows && rc == 0; i++) {
        struct change c = { 0 };

        if (changed_key(b->rows[i].key, changed, nchanged))
            continue;   /* the stream carries its newer state */
        if (txn == 0 && (rc = journal_txn_open(b->st, sd->ep->name, 0, 0, wall_us(), &txn, e)) != 0)
            break;
        c.endpoint = sd->ep->name;
        c.mapping = b->m->name;
        c.op = CHANGE_INSERT;
        c.key = b->rows[i].key;
        c.fields = b->rows[i].fields;
        c.version_us = b->rows[i].version_us;
        rc = journal_append(b->st, txn, &c, e);
        (*kept)++;
    }
    if (rc == 0 && txn != 0)
        rc = journal_txn_commit(b->st, txn, 0, &seq, e);
    return rc;
}

static int advance_request(struct backfill *b, bool done, int64_t rows, struct err *e)
{
    char k[300], *v = NULL;
    json_t *o;
    int rc;

    meta_key(k, sizeof(k), b->m, b->side);
    if (done)
        return state_meta_set(b->st, k, "done", e);
    o = json_pack("{s:o,s:I}", "after", json_loads(b->rows[b->nrows - 1].key, 0, NULL),
                  "rows", (json_int_t)rows);
    v = o ? json_dumps(o, JSON_COMPACT) : NULL;
    rc = v ? state_meta_set(b->st, k, v, e) : err_set(e, -ENOMEM, "out of memory");
    free(v);
    json_decref(o);
    return rc;
}

void backfill_on_watermark(struct backfill *b, const struct cfg_endpoint *ep, const char *id,
                           const char *const *changed, size_t nchanged)
{
    struct err e = { 0 };
    int64_t rows = b != NULL ? b->rows_before : 0;
    size_t kept = 0;
    char n[32], d[32];
    bool done;

    if (b == NULL || b->m == NULL || strcmp(id, b->id) != 0 ||
        (b->phase != BF_HIGH && b->phase != BF_WAIT_HIGH) || side_of(b->m, b->side)->ep != ep)
        return;
    if (changed == NULL) {
        /* The reader reconnected inside the window: what changed is unknown. */
        fail_chunk(b, "a backfill chunk's window was interrupted; reading it again", NULL);
        b->retry_at_ms = 0;
        return;
    }
    done = b->nrows < BACKFILL_CHUNK;
    if (journal_chunk(b, changed, nchanged, &kept, &e) != 0 ||
        advance_request(b, done, rows + (int64_t)kept, &e) != 0) {
        fail_chunk(b, "cannot journal a backfill chunk", e.msg);
        return;
    }
    snprintf(n, sizeof(n), "%" PRId64, rows + (int64_t)kept);
    snprintf(d, sizeof(d), "%zu", nchanged);
    log_info("backfill", done ? "backfill done" : "backfill chunk journaled", "mapping",
             b->m->name, "endpoint", ep->name, "rows", n, "changed_in_window", d);
    rows_clear(b);
    set_phase(b, BF_IDLE);
}

/* ---- scheduling ---- */

int backfill_new(struct backfill **out, uv_loop_t *loop, const struct config *c,
                 struct state *st)
{
    struct backfill *b = calloc(1, sizeof(*b));

    if (b == NULL)
        return -ENOMEM;
    b->loop = loop;
    b->cfg = c;
    b->st = st;
    b->pending = true;
    *out = b;
    return 0;
}

void backfill_tick(struct backfill *b, bool (*streaming)(void *arg, const struct cfg_endpoint *ep),
                   void *arg)
{
    uint64_t now = uv_now(b->loop);
    bool any = false;

    if (b->phase == BF_WAIT_HIGH && now - b->phase_ms > WAIT_HIGH_MS)
        fail_chunk(b, "a backfill high watermark did not come back through the stream",
                   "reading the chunk again");
    /* Requests also come from other processes (tandem snapshot): look
     * again now and then even when none was pending. */
    if (b->phase != BF_IDLE || now < b->retry_at_ms ||
        (!b->pending && now - b->scanned_ms < RESCAN_MS))
        return;
    b->scanned_ms = now;
    for (size_t i = 0; i < b->cfg->nmappings; i++) {
        const struct cfg_mapping *m = &b->cfg->mappings[i];

        for (char side = 'a'; side <= 'b'; side++) {
            json_t *after = NULL;
            int64_t rows;

            if (!side_is_source(m, side) || request_get(b, m, side, &after, &rows) != 0)
                continue;
            json_decref(after);
            any = true;
            if (!streaming(arg, side_of(m, side)->ep))
                continue;
            b->m = m;
            b->side = side;
            snprintf(b->id, sizeof(b->id), "%d-%u", (int)getpid(), ++b->counter);
            send_marker(b, 'L', on_low_sent);
            return;
        }
    }
    b->pending = any;
}

bool backfill_busy(const struct backfill *b)
{
    return b != NULL && (b->pending || b->phase != BF_IDLE);
}

void backfill_close(struct backfill *b)
{
    if (b == NULL)
        return;
    b->closing = true;
    if (b->inflight > 0)
        return;     /* the last query's callback frees it */
    rows_clear(b);
    free(b);
}
