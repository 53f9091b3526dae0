#include "health.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *const codes[] = {
    HEALTH_ENDPOINT_DOWN, HEALTH_NOT_READY, HEALTH_DLQ_NONEMPTY,
    HEALTH_CANARY_OVERDUE, HEALTH_DRIFT, HEALTH_SLOT_RETENTION,
};

struct reason {
    const char *code;           /* one of codes[] */
    char *subject;              /* "" for none */
    char *detail;
};

struct health {
    pthread_mutex_t mu;
    struct reason *r;           /* sorted by (code, subject) */
    size_t n, cap;
};

static const char *code_find(const char *code)
{
    if (code == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(codes[i], code) == 0)
            return codes[i];
    return NULL;
}

static int reason_cmp(const struct reason *r, const char *code,
                      const char *subject)
{
    int c = strcmp(r->code, code);

    return c != 0 ? c : strcmp(r->subject, subject);
}

int health_new(struct health **out)
{
    struct health *h = calloc(1, sizeof(*h));

    *out = NULL;
    if (h == NULL)
        return -ENOMEM;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        return -ENOMEM;
    }
    *out = h;
    return 0;
}

static void reason_free(struct reason *r)
{
    free(r->subject);
    free(r->detail);
}

void health_free(struct health *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n; i++)
        reason_free(&h->r[i]);
    free(h->r);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* A one-line, bounded, redacted copy of the detail. */
static char *detail_copy(const char *detail)
{
    size_t n = strlen(detail);
    char *d;

    if (n > HEALTH_DETAIL_MAX) {
        n = HEALTH_DETAIL_MAX;
        /* Cut at a character boundary so the JSON stays valid UTF-8. */
        while (n > 0 && ((unsigned char)detail[n] & 0xC0) == 0x80)
            n--;
    }
    d = malloc(n + 1);
    if (d == NULL)
        return NULL;
    memcpy(d, detail, n);
    d[n] = '\0';
    for (char *p = d; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    log_redact(d, n + 1);
    return d;
}

int health_set(struct health *h, const char *code, const char *subject,
               const char *detail)
{
    const char *c = code_find(code);
    struct reason nr = { 0 };
    size_t i;

    if (h == NULL || c == NULL)
        return -EINVAL;
    if (subject == NULL)
        subject = "";
    if (detail == NULL || detail[0] == '\0')
        detail = subject[0] ? subject : c;
    nr.detail = detail_copy(detail);
    if (nr.detail == NULL)
        return -ENOMEM;

    pthread_mutex_lock(&h->mu);
    for (i = 0; i < h->n; i++) {
        int cmp = reason_cmp(&h->r[i], c, subject);

        if (cmp == 0) {
            free(h->r[i].detail);
            h->r[i].detail = nr.detail;
            pthread_mutex_unlock(&h->mu);
            return 0;
        }
        if (cmp > 0)
            break;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 4;
        struct reason *r = realloc(h->r, cap * sizeof(*r));

        if (r == NULL)
            goto nomem;
        h->r = r;
        h->cap = cap;
    }
    nr.code = c;
    nr.subject = strdup(subject);
    if (nr.subject == NULL)
        goto nomem;
    memmove(&h->r[i + 1], &h->r[i], (h->n - i) * sizeof(*h->r));
    h->r[i] = nr;
    h->n++;
    pthread_mutex_unlock(&h->mu);
    return 0;

nomem:
    pthread_mutex_unlock(&h->mu);
    reason_free(&nr);
    return -ENOMEM;
}

void health_clear(struct health *h, const char *code, const char *subject)
{
    size_t i = 0;

    if (h == NULL || code == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    while (i < h->n) {
        struct reason *r = &h->r[i];

        if (strcmp(r->code, code) == 0 &&
            (subject == NULL || strcmp(r->subject, subject) == 0)) {
            reason_free(r);
            memmove(r, r + 1, (h->n - i - 1) * sizeof(*r));
            h->n--;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

size_t health_count(struct health *h)
{
    size_t n;

    if (h == NULL)
        return 0;
    pthread_mutex_lock(&h->mu);
    n = h->n;
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* Invalid UTF-8 in a subject or detail must not lose the reason. */
static json_t *jstr(const char *s)
{
    json_t *v = json_string(s);

    return v != NULL ? v : json_string("(not valid utf-8)");
}

char *health_json(struct health *h, int *http_status)
{
    json_t *doc = json_object();
    json_t *reasons = NULL;
    char *out = NULL;
    int status = 200;
    int failed = doc == NULL;

    if (h != NULL && !failed) {
        pthread_mutex_lock(&h->mu);
        if (h->n > 0) {
            status = 503;
            reasons = json_array();
            failed |= reasons == NULL;
            for (size_t i = 0; i < h->n && !failed; i++) {
                const struct reason *r = &h->r[i];
                json_t *o = json_object();

                failed |= o == NULL;
                failed |= json_array_append_new(reasons, o) != 0;
                failed |= json_object_set_new(o, "code",
                                              json_string(r->code)) != 0;
                if (r->subject[0])
                    failed |= json_object_set_new(o, "subject",
                                                  jstr(r->subject)) != 0;
                failed |= json_object_set_new(o, "detail",
                                              jstr(r->detail)) != 0;
            }
        }
        pthread_mutex_unlock(&h->mu);
    }
    if (!failed) {
        failed |= json_object_set_new(doc, "status",
                    json_string(status == 200 ? "ok" : "degraded")) != 0;
        if (reasons != NULL) {
            failed |= json_object_set_new(doc, "reasons", reasons) != 0;
            reasons = NULL;
        }
    }
    if (!failed)
        out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(reasons);
    json_decref(doc);
    if (http_status != NULL)
        *http_status = out != NULL ? status : 500;
    return out;
}
