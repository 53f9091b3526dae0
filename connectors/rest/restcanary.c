#include "restcanary.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/strbuf.h"
#include "restfeed.h"

enum step {
    S_POST,         /* create at the resource, key in the body */
    S_PUT,          /* create or replace at resource/{id} */
    S_GET,          /* read: the answer, or a revision for a retry */
    S_DELETE,
    S_SOFT,         /* PATCH of the soft-delete flag */
    S_STRAY         /* delete a record the server created under its own id */
};

struct restcanary {
    struct rest_http *h;
    const struct cfg_mapping *m;
    const struct cfg_side *sd;
    enum restcanary_op op;
    enum step step, after_read;     /* after_read: the write a read serves */
    bool reread;                    /* the revision was read once already */
    char *rev, *etag;               /* from that read */
    char *stray;                    /* id the server assigned */
    struct rest_req *req;
    restcanary_fn done;
    void *arg;
    struct strbuf url, body, q;
};

static int send_step(struct restcanary *c, struct err *e);

static void rc_free(struct restcanary *c)
{
    free(c->rev);
    free(c->etag);
    free(c->stray);
    strbuf_free(&c->url);
    strbuf_free(&c->body);
    strbuf_free(&c->q);
    free(c);
}

static void finish(struct restcanary *c, int result, const char *msg)
{
    c->done(c->arg, result, msg ? msg : "");
    rc_free(c);
}

/* The canary key as the canonical key text of a one-field key. */
static char *canary_key_text(const struct cfg_mapping *m)
{
    struct strbuf b;
    char *t;

    strbuf_init(&b);
    strbuf_addc(&b, '[');
    strbuf_add_json_string(&b, m->canary_key, strlen(m->canary_key));
    strbuf_addc(&b, ']');
    t = b.failed ? NULL : strdup(strbuf_cstr(&b));
    strbuf_free(&b);
    return t;
}

static int item_url(struct restcanary *c, const char *id, const char *query)
{
    struct strbuf path;
    int rc;

    strbuf_init(&path);
    strbuf_adds(&path, c->sd->resource);
    strbuf_addc(&path, '/');
    rf_url_escape(&path, id, strlen(id));
    rc = path.failed ? -ENOMEM
                     : rest_http_url(&c->url, c->sd->ep, strbuf_cstr(&path), query);
    strbuf_free(&path);
    return rc;
}

/* The revision from the read: the record's field, else the ETag bare. */
static const char *revision(const struct restcanary *c, char *buf, size_t cap)
{
    return c->rev != NULL ? c->rev : rest_etag_revision(c->etag, buf, cap);
}

/* {"<key field>": key} for a create, {"<flag>": true} for a soft delete,
 * plus the revision when the API wants it in the body. */
static int build_body(struct restcanary *c, const char *rev, const char **why)
{
    const struct cfg_write *w = &c->sd->write;
    struct strbuf *b = &c->body;
    json_t *v;
    int rc = 0;

    strbuf_reset(b);
    strbuf_addc(b, '{');
    if (c->step == S_SOFT) {
        strbuf_add_json_string(b, w->del_soft_field, strlen(w->del_soft_field));
        strbuf_adds(b, ":true");
    } else {
        /* Typed as the writer types a value of unknown kind: a key that
         * reads as a number goes as a number (numeric "string" keeps text). */
        v = json_string(c->m->canary_key);
        strbuf_add_json_string(b, c->sd->key[0], strlen(c->sd->key[0]));
        strbuf_addc(b, ':');
        rc = v ? rf_body_value(b, v, 0, c->sd->ep->numeric, why) : -ENOMEM;
        json_decref(v);
    }
    if (rc == 0 && rev != NULL && c->step != S_POST &&
        w->revision_field != NULL && w->revision_in == CFG_REV_BODY) {
        strbuf_addc(b, ',');
        strbuf_add_json_string(b, w->revision_field, strlen(w->revision_field));
        strbuf_addc(b, ':');
        strbuf_add_json_string(b, rev, strlen(rev));
    }
    strbuf_addc(b, '}');
    return rc != 0 ? rc : b->failed ? -ENOMEM : 0;
}

/* The record a POST created, when the answer shows one under another key:
 * the server assigned the id. */
static char *stray_id(struct restcanary *c, const struct rest_resp *r)
{
    json_t *doc = r->body_len ? rf_json_load(r->body, r->body_len, NULL) : NULL;
    struct rf_record rec = { 0 };
    char *want = canary_key_text(c->m), *id = NULL;

    if (json_is_object(doc) && want != NULL &&
        rf_map_record(c->m, c->sd, doc, NULL, &rec) == 0 &&
        rec.key != NULL && strcmp(rec.key, want) != 0) {
        json_t *ka = json_loads(rec.key, 0, NULL);
        const char *s = json_string_value(json_array_get(ka, 0));
        id = s ? strdup(s) : NULL;
        json_decref(ka);
    }
    rf_record_clear(&rec);
    json_decref(doc);
    free(want);
    return id;
}

/* A read answered: whether the record is there (not deleted), and its
 * revision for a conditional retry. */
static int read_answer(struct restcanary *c, const struct rest_resp *r, bool *present)
{
    json_t *doc = rf_json_load(r->body, r->body_len, NULL);
    struct rf_record rec = { 0 };
    int rc = -EPROTO;

    if (json_is_object(doc) && rf_map_record(c->m, c->sd, doc, NULL, &rec) == 0) {
        *present = !rec.deleted;
        free(c->rev);
        free(c->etag);
        c->rev = rec.rev ? strdup(rec.rev) : NULL;
        c->etag = r->etag ? strdup(r->etag) : NULL;
        rc = 0;
    }
    rf_record_clear(&rec);
    json_decref(doc);
    return rc;
}

static void go(struct restcanary *c, enum step s)
{
    struct err e = { 0 };
    int rc;

    c->step = s;
    if ((rc = send_step(c, &e)) != 0)
        finish(c, rc, e.msg);
}

/* A conditional write lost (409/412): read the revision once, then again. */
static void need_revision(struct restcanary *c, const struct rest_resp *r)
{
    if (c->reread) {
        finish(c, -EPROTO, r->error);
        return;
    }
    c->reread = true;
    c->after_read = c->step;
    go(c, S_GET);
}

static void on_read(struct restcanary *c, const struct rest_resp *r, enum rest_class cls)
{
    bool present = false;

    if (cls != REST_OK && cls != REST_NOT_FOUND) {
        finish(c, cls == REST_PERMANENT ? -EPROTO : -EIO, r->error);
        return;
    }
    if (cls == REST_OK && read_answer(c, r, &present) != 0) {
        finish(c, -EPROTO, "the server's answer is not a record");
        return;
    }
    if (c->op == RESTCANARY_READ)
        finish(c, present ? 1 : 0, NULL);
    else if (c->op == RESTCANARY_REMOVE && !present)
        finish(c, 0, NULL);
    else
        go(c, c->after_read);
}

static void on_resp(void *arg, struct rest_req *req, const struct rest_resp *r)
{
    struct restcanary *c = arg;
    enum rest_class cls = rest_classify(r);
    int fail = cls == REST_PERMANENT ? -EPROTO : -EIO;

    (void)req;
    c->req = NULL;
    switch (c->step) {
    case S_GET:
        on_read(c, r, cls);
        return;
    case S_STRAY:
        finish(c, -EPROTO, "the server assigned its own id to the canary record (it was"
               " deleted again): canaries written on this side need \"create\": \"PUT\"");
        return;
    case S_POST:
        if (cls == REST_OK && (c->stray = stray_id(c, r)) != NULL)
            go(c, S_STRAY);
        else if (cls == REST_OK)
            finish(c, 0, NULL);
        else if (cls == REST_CONFLICT)
            go(c, S_PUT);       /* the id is kept (a deleted record): revive it */
        else
            finish(c, fail, r->error);
        return;
    default:
        if (cls == REST_OK || (cls == REST_NOT_FOUND && c->op == RESTCANARY_REMOVE))
            finish(c, 0, NULL);
        else if (cls == REST_CONFLICT)
            need_revision(c, r);
        else
            finish(c, fail, r->error);
        return;
    }
}

static int send_step(struct restcanary *c, struct err *e)
{
    const struct cfg_write *w = &c->sd->write;
    const char *method = "GET", *body = NULL, *why = NULL, *rev = NULL;
    char rb[256], ifm[300];
    struct rest_hdr hdr[1];
    size_t nh = 0;
    int rc = 0;

    strbuf_reset(&c->q);
    if (c->reread && c->step != S_GET)
        rev = revision(c, rb, sizeof(rb));
    if (rev != NULL && w->revision_field != NULL &&
        (w->revision_in == CFG_REV_QUERY || c->step == S_DELETE)) {
        strbuf_adds(&c->q, w->revision_param ? w->revision_param : "rev");
        strbuf_addc(&c->q, '=');
        rf_url_escape(&c->q, rev, strlen(rev));
    }
    /* The write holds only if the record is still the one read. */
    if (rev != NULL && c->etag != NULL) {
        snprintf(ifm, sizeof(ifm), "%s", c->etag);
        hdr[nh++] = (struct rest_hdr){ "If-Match", ifm };
    } else if (rev != NULL && (w->revision_in == CFG_REV_IF_MATCH || c->step == S_DELETE)) {
        snprintf(ifm, sizeof(ifm), "\"%s\"", rev);
        hdr[nh++] = (struct rest_hdr){ "If-Match", ifm };
    }
    switch (c->step) {
    case S_POST:
        method = "POST";
        rc = build_body(c, NULL, &why);
        if (rc == 0)
            rc = rest_http_url(&c->url, c->sd->ep, c->sd->resource, NULL);
        body = strbuf_cstr(&c->body);
        break;
    case S_PUT:
    case S_SOFT:
        method = c->step == S_PUT ? "PUT" : "PATCH";
        rc = build_body(c, rev, &why);
        if (rc == 0)
            rc = item_url(c, c->m->canary_key, strbuf_cstr(&c->q));
        body = strbuf_cstr(&c->body);
        break;
    case S_GET:
        rc = item_url(c, c->m->canary_key, NULL);
        break;
    case S_DELETE:
        method = "DELETE";
        rc = item_url(c, c->m->canary_key, strbuf_cstr(&c->q));
        break;
    case S_STRAY:
        method = "DELETE";
        rc = item_url(c, c->stray, NULL);
        break;
    }
    if (rc != 0)
        return err_set(e, rc, "canary request: %s", why ? why : "out of memory");
    return rest_http_request(c->h, method, strbuf_cstr(&c->url), body, hdr, nh,
                             on_resp, c, &c->req, e);
}

int restcanary_start(struct restcanary **out, struct rest_http *h,
                     const struct cfg_mapping *m, const struct cfg_side *sd,
                     enum restcanary_op op, restcanary_fn done, void *arg,
                     struct err *e)
{
    struct restcanary *c;
    int rc;

    if (m->canary_key == NULL || sd->ep == NULL || sd->resource == NULL || sd->nkey != 1)
        return err_set(e, -EINVAL, "mapping %s: no canary record on this side", m->name);
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return err_set(e, -ENOMEM, "out of memory");
    c->h = h;
    c->m = m;
    c->sd = sd;
    c->op = op;
    c->done = done;
    c->arg = arg;
    strbuf_init(&c->url);
    strbuf_init(&c->body);
    strbuf_init(&c->q);
    if (op == RESTCANARY_WRITE)
        c->step = sd->write.create == CFG_HTTP_PUT ? S_PUT : S_POST;
    else if (op == RESTCANARY_REMOVE)
        c->step = sd->write.del_soft_field != NULL ? S_SOFT : S_DELETE;
    else
        c->step = S_GET;
    c->after_read = c->step;
    if ((rc = send_step(c, e)) != 0) {
        rc_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void restcanary_cancel(struct restcanary *c)
{
    if (c == NULL)
        return;
    rest_http_cancel(c->h, c->req);
    rc_free(c);
}
