/* pgoutput.c: pgoutput protocol v1 decoder and replication frame parser.
 *
 * Every read goes through struct cur, which checks the remaining length
 * first and records one -EPROTO error naming the message and its LSN. */
#include "pgoutput.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pgo_decoder {
    struct pgo_relation **rels;     /* sorted by oid */
    size_t nrels, caprels;
    struct pgo_value *vals[2];      /* tuple scratch: [0] old, [1] new */
    int valcap;                     /* both arrays hold valcap entries */
    uint32_t *relids;               /* Truncate scratch */
    size_t relidcap;
};

struct cur {
    const uint8_t *p;
    size_t len, off;
    const char *what;               /* "Insert", "keepalive frame", ... */
    uint64_t lsn;
    bool has_lsn;
    struct err *e;
};

/* ---- LSN text ---- */

void pgo_lsn_format(uint64_t lsn, char *buf)
{
    snprintf(buf, PGO_LSN_STRLEN, "%" PRIX32 "/%" PRIX32,
             (uint32_t)(lsn >> 32), (uint32_t)lsn);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Reads 1..8 hex digits (PostgreSQL's limit per LSN half). */
static const char *lsn_half(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    int n = 0, h;

    while ((h = hexval(s[n])) >= 0) {
        if (++n > 8)
            return NULL;
        v = (v << 4) | (uint32_t)h;
    }
    if (n == 0)
        return NULL;
    *out = v;
    return s + n;
}

int pgo_lsn_parse(const char *s, uint64_t *out)
{
    uint32_t hi, lo;

    if (s == NULL || (s = lsn_half(s, &hi)) == NULL || *s++ != '/' ||
        (s = lsn_half(s, &lo)) == NULL || *s != '\0')
        return -EINVAL;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* ---- cursor ---- */

static int cur_fail(struct cur *c, bool truncated, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cur_fail(struct cur *c, bool truncated, const char *fmt, ...)
{
    char detail[512], at[PGO_LSN_STRLEN + 4] = "", lsn[PGO_LSN_STRLEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (c->has_lsn) {
        pgo_lsn_format(c->lsn, lsn);
        snprintf(at, sizeof(at), " at %s", lsn);
    }
    return err_set(c->e, -EPROTO, "pgoutput: %s%s%s: %s",
                   truncated ? "truncated " : "", c->what, at, detail);
}

static int cur_need(struct cur *c, size_t n)
{
    if (c->len - c->off < n)
        return cur_fail(c, true, "need %zu bytes at offset %zu, have %zu",
                        n, c->off, c->len - c->off);
    return 0;
}

static uint64_t be_get(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static int cur_uint(struct cur *c, int n, uint64_t *out)
{
    if (cur_need(c, (size_t)n) < 0)
        return -EPROTO;
    *out = be_get(c->p + c->off, n);
    c->off += (size_t)n;
    return 0;
}

static int cur_u8(struct cur *c, uint8_t *out)
{
    uint64_t v;

    if (cur_uint(c, 1, &v) < 0)
        return -EPROTO;
    *out = (uint8_t)v;
    return 0;
}

static int cur_i16(struct cur *c, int *out)
{
    uint64_t v;

    if (cur_uint(c, 2, &v) < 0)
        return -EPROTO;
    *out = (int16_t)(uint16_t)v;
    return 0;
}

static int cur_u32(struct cur *c, uint32_t *out)
{
    uint64_t v;

    if (cur_uint(c, 4, &v) < 0)
        return -EPROTO;
    *out = (uint32_t)v;
    return 0;
}

static int cur_i32(struct cur *c, int32_t *out)
{
    uint64_t v;

    if (cur_uint(c, 4, &v) < 0)
        return -EPROTO;
    *out = (int32_t)(uint32_t)v;
    return 0;
}

static int cur_u64(struct cur *c, uint64_t *out)
{
    return cur_uint(c, 8, out);
}

static int cur_i64(struct cur *c, int64_t *out)
{
    uint64_t v;

    if (cur_uint(c, 8, &v) < 0)
        return -EPROTO;
    *out = (int64_t)v;
    return 0;
}

/* A NUL-terminated string inside the buffer; *slen excludes the NUL. */
static int cur_str(struct cur *c, const char **out, size_t *slen)
{
    const uint8_t *s = c->p + c->off;
    const uint8_t *nul = memchr(s, '\0', c->len - c->off);

    if (nul == NULL)
        return cur_fail(c, true, "unterminated string at offset %zu, "
                        "%zu bytes left", c->off, c->len - c->off);
    *out = (const char *)s;
    if (slen != NULL)
        *slen = (size_t)(nul - s);
    c->off += (size_t)(nul - s) + 1;
    return 0;
}

/* An Int32 byte count (negative rejected) and that many bytes. */
static int cur_counted(struct cur *c, const char *field, const uint8_t **out,
                       uint32_t *n)
{
    size_t at = c->off;
    int32_t len;

    if (cur_i32(c, &len) < 0)
        return -EPROTO;
    if (len < 0)
        return cur_fail(c, false, "negative %s length %" PRId32
                        " at offset %zu", field, len, at);
    if (cur_need(c, (size_t)len) < 0)
        return -EPROTO;
    *out = c->p + c->off;
    *n = (uint32_t)len;
    c->off += (size_t)len;
    return 0;
}

static int cur_end(struct cur *c)
{
    if (c->off != c->len)
        return cur_fail(c, false, "%zu trailing bytes at offset %zu",
                        c->len - c->off, c->off);
    return 0;
}

/* ---- replication frames ---- */

static void be_put(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

size_t pgo_build_status(uint8_t out[34], uint64_t written, uint64_t flushed,
                        uint64_t applied, int64_t now, bool reply)
{
    out[0] = 'r';
    be_put(out + 1, written, 8);
    be_put(out + 9, flushed, 8);
    be_put(out + 17, applied, 8);
    be_put(out + 25, (uint64_t)now, 8);
    out[33] = reply ? 1 : 0;
    return PGO_STATUS_LEN;
}

int pgo_parse_frame(const uint8_t *buf, size_t len, struct pgo_frame *out,
                    struct err *e)
{
    struct cur c = { .p = buf, .len = len, .off = 1, .e = e };
    uint8_t reply;

    memset(out, 0, sizeof(*out));
    if (len == 0 || buf == NULL)
        return err_set(e, -EPROTO, "pgoutput: empty replication frame");
    switch (buf[0]) {
    case 'w':
        c.what = "XLogData frame";
        if (cur_u64(&c, &out->start_lsn) < 0 ||
            cur_u64(&c, &out->end_lsn) < 0 ||
            cur_i64(&c, &out->send_time) < 0)
            goto error;
        if (c.off == c.len) {
            cur_fail(&c, true, "no pgoutput message after the "
                     "%zu-byte header", c.off);
            goto error;
        }
        out->payload = buf + c.off;
        out->payload_len = len - c.off;
        break;
    case 'k':
        c.what = "keepalive frame";
        if (cur_u64(&c, &out->end_lsn) < 0 ||
            cur_i64(&c, &out->send_time) < 0 || cur_u8(&c, &reply) < 0 ||
            cur_end(&c) < 0)
            goto error;
        out->reply_requested = reply != 0;
        break;
    default:
        return err_set(e, -EPROTO, "pgoutput: unknown replication frame "
                       "kind 0x%02x ('%c'), %zu bytes", buf[0],
                       buf[0] >= 0x20 && buf[0] < 0x7f ? buf[0] : '?', len);
    }
    out->kind = (char)buf[0];
    return 0;

error:
    memset(out, 0, sizeof(*out));
    return -EPROTO;
}

/* ---- decoder state ---- */

int pgo_decoder_new(struct pgo_decoder **out)
{
    *out = calloc(1, sizeof(**out));
    return *out == NULL ? -ENOMEM : 0;
}

void pgo_decoder_reset(struct pgo_decoder *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nrels; i++)
        free(d->rels[i]);
    d->nrels = 0;
}

void pgo_decoder_free(struct pgo_decoder *d)
{
    if (d == NULL)
        return;
    pgo_decoder_reset(d);
    free(d->rels);
    free(d->vals[0]);
    free(d->vals[1]);
    free(d->relids);
    free(d);
}

/* Index of oid in d->rels, or where it would be inserted. */
static size_t rel_index(const struct pgo_decoder *d, uint32_t oid)
{
    size_t lo = 0, hi = d->nrels;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (d->rels[mid]->oid < oid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const struct pgo_relation *pgo_relation_get(const struct pgo_decoder *d,
                                            uint32_t oid)
{
    size_t i = rel_index(d, oid);

    return i < d->nrels && d->rels[i]->oid == oid ? d->rels[i] : NULL;
}

/* Takes ownership of rel (freed on failure too). */
static int rel_store(struct pgo_decoder *d, struct pgo_relation *rel)
{
    size_t i = rel_index(d, rel->oid);

    if (i < d->nrels && d->rels[i]->oid == rel->oid) {
        free(d->rels[i]);
        d->rels[i] = rel;
        return 0;
    }
    if (d->nrels == d->caprels) {
        size_t cap = d->caprels ? d->caprels * 2 : 16;
        struct pgo_relation **p = realloc(d->rels, cap * sizeof(*p));

        if (p == NULL) {
            free(rel);
            return -ENOMEM;
        }
        d->rels = p;
        d->caprels = cap;
    }
    memmove(d->rels + i + 1, d->rels + i, (d->nrels - i) * sizeof(*d->rels));
    d->rels[i] = rel;
    d->nrels++;
    return 0;
}

/* Grows both tuple scratch arrays to hold ncols values; called when a
 * Relation is stored so that decoding changes never allocates. */
static int vals_reserve(struct pgo_decoder *d, int ncols)
{
    int cap = d->valcap ? d->valcap : 32;

    if (ncols <= d->valcap)
        return 0;
    while (cap < ncols)
        cap *= 2;
    for (int k = 0; k < 2; k++) {
        struct pgo_value *v = realloc(d->vals[k], (size_t)cap * sizeof(*v));

        if (v == NULL)
            return -ENOMEM;
        d->vals[k] = v;
    }
    d->valcap = cap;
    return 0;
}

/* ---- messages ---- */

const char *pgo_msg_name(char type)
{
    switch (type) {
    case 'B': return "Begin";
    case 'C': return "Commit";
    case 'O': return "Origin";
    case 'R': return "Relation";
    case 'Y': return "Type";
    case 'I': return "Insert";
    case 'U': return "Update";
    case 'D': return "Delete";
    case 'T': return "Truncate";
    case 'M': return "Message";
    default: return NULL;
    }
}

static int decode_relation(struct pgo_decoder *d, struct cur *c,
                           struct pgo_msg *out)
{
    const char *nsp = NULL, *relname = NULL, *name = NULL;
    size_t nsplen = 0, rellen = 0, namelen = 0, strbytes, colstart;
    struct pgo_relation *rel;
    uint32_t oid, typoid;
    int32_t typmod;
    uint8_t ident, flags;
    int ncols, rc;
    char *sp;

    if (cur_u32(c, &oid) < 0 || cur_str(c, &nsp, &nsplen) < 0 ||
        cur_str(c, &relname, &rellen) < 0 || cur_u8(c, &ident) < 0 ||
        cur_i16(c, &ncols) < 0)
        return -EPROTO;
    if (memchr("dfin", ident, 4) == NULL)
        return cur_fail(c, false, "relation OID %" PRIu32 ": unknown "
                        "replica identity 0x%02x", oid, ident);
    if (ncols < 0 || ncols > PGO_MAX_COLS)
        return cur_fail(c, false, "relation OID %" PRIu32 ": column count "
                        "%d outside 0..%d", oid, ncols, PGO_MAX_COLS);

    /* First pass validates and sizes; the second copies. */
    strbytes = nsplen + 1 + rellen + 1;
    colstart = c->off;
    for (int i = 0; i < ncols; i++) {
        if (cur_u8(c, &flags) < 0 || cur_str(c, &name, &namelen) < 0 ||
            cur_u32(c, &typoid) < 0 || cur_i32(c, &typmod) < 0)
            return -EPROTO;
        strbytes += namelen + 1;
    }
    if (cur_end(c) < 0)
        return -EPROTO;

    rel = malloc(sizeof(*rel) + (size_t)ncols * sizeof(*rel->cols) +
                 strbytes);
    if (rel == NULL)
        return err_set(c->e, -ENOMEM, "pgoutput: out of memory for "
                       "relation OID %" PRIu32, oid);
    rel->oid = oid;
    rel->replident = (char)ident;
    rel->ncols = ncols;
    rel->cols = (struct pgo_column *)(rel + 1);
    sp = (char *)(rel->cols + ncols);
    rel->nspname = memcpy(sp, nsp, nsplen + 1);
    sp += nsplen + 1;
    rel->relname = memcpy(sp, relname, rellen + 1);
    sp += rellen + 1;
    c->off = colstart;
    for (int i = 0; i < ncols; i++) {
        struct pgo_column *col = &rel->cols[i];

        /* Cannot fail: the first pass read the same bytes. */
        cur_u8(c, &col->flags);
        cur_str(c, &name, &namelen);
        cur_u32(c, &col->type_oid);
        cur_i32(c, &col->typmod);
        col->name = memcpy(sp, name, namelen + 1);
        sp += namelen + 1;
    }

    if (vals_reserve(d, ncols) < 0) {
        free(rel);
        return err_set(c->e, -ENOMEM, "pgoutput: out of memory for "
                       "%d-column tuples", ncols);
    }
    rc = rel_store(d, rel);
    if (rc < 0)
        return err_set(c->e, rc, "pgoutput: out of memory storing "
                       "relation OID %" PRIu32, oid);
    out->u.relation = rel;
    return 0;
}

static int decode_tuple(struct pgo_decoder *d, struct cur *c,
                        const struct pgo_relation *rel, int slot,
                        struct pgo_tuple *t)
{
    struct pgo_value *vals = d->vals[slot];
    int ncols;

    if (cur_i16(c, &ncols) < 0)
        return -EPROTO;
    if (ncols != rel->ncols)
        return cur_fail(c, false, "tuple has %d columns, relation %s.%s "
                        "(OID %" PRIu32 ") has %d", ncols, rel->nspname,
                        rel->relname, rel->oid, rel->ncols);
    for (int i = 0; i < ncols; i++) {
        const uint8_t *data;
        uint8_t kind;

        if (cur_u8(c, &kind) < 0)
            return -EPROTO;
        vals[i].kind = (char)kind;
        vals[i].data = NULL;
        vals[i].len = 0;
        switch (kind) {
        case 'n':
        case 'u':
            break;
        case 't':
        case 'b':
            if (cur_counted(c, "value", &data, &vals[i].len) < 0)
                return -EPROTO;
            vals[i].data = (const char *)data;
            break;
        default:
            return cur_fail(c, false, "column %d (%s): unknown value kind "
                            "0x%02x at offset %zu", i, rel->cols[i].name,
                            kind, c->off - 1);
        }
    }
    t->ncols = ncols;
    t->vals = vals;
    return 0;
}

static int decode_change(struct pgo_decoder *d, struct cur *c, char type,
                         struct pgo_msg *out)
{
    const struct pgo_relation *rel;
    uint32_t relid;
    uint8_t marker;

    if (cur_u32(c, &relid) < 0)
        return -EPROTO;
    rel = pgo_relation_get(d, relid);
    if (rel == NULL)
        return cur_fail(c, false, "unknown relation OID %" PRIu32
                        " (no Relation message seen)", relid);
    out->u.change.relid = relid;
    out->u.change.rel = rel;
    if (cur_u8(c, &marker) < 0)
        return -EPROTO;
    if (type != 'I' && (marker == 'K' || marker == 'O')) {
        out->u.change.old_kind = (char)marker;
        if (decode_tuple(d, c, rel, 0, &out->u.change.old) < 0)
            return -EPROTO;
        if (type == 'D')
            return cur_end(c);
        if (cur_u8(c, &marker) < 0)
            return -EPROTO;
    }
    if (type == 'D' || marker != 'N')
        return cur_fail(c, false, "unexpected tuple marker 0x%02x at "
                        "offset %zu", marker, c->off - 1);
    if (decode_tuple(d, c, rel, 1, &out->u.change.new) < 0)
        return -EPROTO;
    return cur_end(c);
}

static int decode_truncate(struct pgo_decoder *d, struct cur *c,
                           struct pgo_msg *out)
{
    int32_t nrels;
    uint8_t flags;

    if (cur_i32(c, &nrels) < 0 || cur_u8(c, &flags) < 0)
        return -EPROTO;
    if (nrels < 0)
        return cur_fail(c, false, "negative relation count %" PRId32,
                        nrels);
    /* Checked before allocating, so a bogus count cannot cost memory. */
    if ((size_t)nrels > (c->len - c->off) / 4)
        return cur_fail(c, true, "need %zu bytes for %" PRId32
                        " relation OIDs at offset %zu, have %zu",
                        (size_t)nrels * 4, nrels, c->off, c->len - c->off);
    if ((size_t)nrels > d->relidcap) {
        uint32_t *p = realloc(d->relids, (size_t)nrels * sizeof(*p));

        if (p == NULL)
            return err_set(c->e, -ENOMEM, "pgoutput: out of memory for "
                           "%" PRId32 " truncated relations", nrels);
        d->relids = p;
        d->relidcap = (size_t)nrels;
    }
    for (int32_t i = 0; i < nrels; i++) {
        cur_u32(c, &d->relids[i]);
        if (pgo_relation_get(d, d->relids[i]) == NULL)
            return cur_fail(c, false, "unknown relation OID %" PRIu32
                            " (no Relation message seen)", d->relids[i]);
    }
    if (cur_end(c) < 0)
        return -EPROTO;
    out->u.truncate.nrels = (int)nrels;
    out->u.truncate.flags = flags;
    out->u.truncate.relids = d->relids;
    return 0;
}

static int decode_body(struct pgo_decoder *d, struct cur *c, char type,
                       struct pgo_msg *out)
{
    const uint8_t *content;

    switch (type) {
    case 'B':
        if (cur_u64(c, &out->u.begin.final_lsn) < 0 ||
            cur_i64(c, &out->u.begin.commit_ts) < 0 ||
            cur_u32(c, &out->u.begin.xid) < 0)
            return -EPROTO;
        return cur_end(c);
    case 'C':
        if (cur_u8(c, &out->u.commit.flags) < 0 ||
            cur_u64(c, &out->u.commit.commit_lsn) < 0 ||
            cur_u64(c, &out->u.commit.end_lsn) < 0 ||
            cur_i64(c, &out->u.commit.commit_ts) < 0)
            return -EPROTO;
        return cur_end(c);
    case 'O':
        if (cur_u64(c, &out->u.origin.lsn) < 0 ||
            cur_str(c, &out->u.origin.name, NULL) < 0)
            return -EPROTO;
        return cur_end(c);
    case 'Y':
        if (cur_u32(c, &out->u.type.oid) < 0 ||
            cur_str(c, &out->u.type.nspname, NULL) < 0 ||
            cur_str(c, &out->u.type.typname, NULL) < 0)
            return -EPROTO;
        return cur_end(c);
    case 'M':
        if (cur_u8(c, &out->u.message.flags) < 0 ||
            cur_u64(c, &out->u.message.lsn) < 0 ||
            cur_str(c, &out->u.message.prefix, NULL) < 0 ||
            cur_counted(c, "content", &content, &out->u.message.len) < 0)
            return -EPROTO;
        out->u.message.content = (const char *)content;
        return cur_end(c);
    case 'R':
        return decode_relation(d, c, out);
    case 'I':
    case 'U':
    case 'D':
        return decode_change(d, c, type, out);
    case 'T':
        return decode_truncate(d, c, out);
    default:
        return -EPROTO;     /* unreachable: pgo_decode checked the name */
    }
}

int pgo_decode(struct pgo_decoder *d, const uint8_t *buf, size_t len,
               uint64_t lsn, struct pgo_msg *out, struct err *e)
{
    struct cur c = { .p = buf, .len = len, .off = 1, .lsn = lsn,
                     .has_lsn = true, .e = e };
    char lsnbuf[PGO_LSN_STRLEN];
    int rc;

    memset(out, 0, sizeof(*out));
    if (len == 0 || buf == NULL) {
        pgo_lsn_format(lsn, lsnbuf);
        return err_set(e, -EPROTO, "pgoutput: empty message at %s", lsnbuf);
    }
    c.what = pgo_msg_name((char)buf[0]);
    if (c.what == NULL) {
        pgo_lsn_format(lsn, lsnbuf);
        return err_set(e, -EPROTO, "pgoutput: unknown message type 0x%02x "
                       "('%c') at %s, %zu bytes", buf[0],
                       buf[0] >= 0x20 && buf[0] < 0x7f ? buf[0] : '?',
                       lsnbuf, len);
    }
    rc = decode_body(d, &c, (char)buf[0], out);
    if (rc < 0) {
        memset(out, 0, sizeof(*out));
        return rc;
    }
    out->type = (char)buf[0];
    return 0;
}
