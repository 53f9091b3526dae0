/* faults.c: see faults.h. */
#include "faults.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAULTS_MAX 64

enum kind { K_DROP, K_TIMEOUT, K_RATE_LIMIT, K_ERROR, K_MALFORMED, K_DUPLICATE,
            K_BACKWARDS, K_LOST_REPLY, K_DRAW, K_COUNT };

static const char *const rate_keys[] = {
    [K_DROP] = "drop_rate", [K_TIMEOUT] = "timeout_rate",
    [K_RATE_LIMIT] = "rate_limit_rate", [K_ERROR] = "error_rate",
    [K_MALFORMED] = "malformed_rate", [K_DUPLICATE] = "duplicate_rate",
    [K_BACKWARDS] = "backwards_rate", [K_LOST_REPLY] = "lost_reply_rate",
};

struct rule {
    char route[128];
    uint64_t seed;
    double rate[K_COUNT];
    long latency_ms, hang_ms;
    uint64_t n;             /* requests matched so far */
};

struct faults {
    pthread_mutex_t mu;
    uint64_t default_seed;
    struct rule rules[FAULTS_MAX];
    int n;
};

int faults_new(struct faults **out, uint64_t default_seed)
{
    struct faults *f = calloc(1, sizeof(*f));

    *out = NULL;
    if (!f)
        return -ENOMEM;
    pthread_mutex_init(&f->mu, NULL);
    f->default_seed = default_seed;
    *out = f;
    return 0;
}

void faults_free(struct faults *f)
{
    if (!f)
        return;
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static int get_int(const json_t *spec, const char *key, long lo, long hi,
                   long *out, struct simerr *e)
{
    json_t *v = json_object_get(spec, key);

    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo ||
        json_integer_value(v) > hi)
        return simerr_set(e, -EINVAL, 400, "%s: must be an integer %ld..%ld",
                          key, lo, hi);
    *out = (long)json_integer_value(v);
    return 0;
}

int faults_add(struct faults *f, const json_t *spec, struct simerr *e)
{
    struct rule r;
    const char *key;
    json_t *v;
    int i, slot;

    if (!json_is_object(spec))
        return simerr_set(e, -EINVAL, 400, "fault rule must be an object");
    memset(&r, 0, sizeof(r));
    snprintf(r.route, sizeof(r.route), "*");
    r.seed = f->default_seed;
    r.hang_ms = 30000;
    json_object_foreach((json_t *)spec, key, v) {
        bool known = !strcmp(key, "route") || !strcmp(key, "seed") ||
                     !strcmp(key, "latency_ms") || !strcmp(key, "hang_ms");

        for (i = 0; i < K_DRAW && !known; i++)
            known = !strcmp(key, rate_keys[i]);
        if (!known)
            return simerr_set(e, -EINVAL, 400, "unknown fault key \"%s\"", key);
    }
    v = json_object_get(spec, "route");
    if (v) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= sizeof(r.route))
            return simerr_set(e, -EINVAL, 400,
                              "route: expected a string like \"GET /customers\" or \"*\"");
        snprintf(r.route, sizeof(r.route), "%s", json_string_value(v));
    }
    v = json_object_get(spec, "seed");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return simerr_set(e, -EINVAL, 400, "seed: expected an integer >= 0");
        r.seed = (uint64_t)json_integer_value(v);
    }
    if (get_int(spec, "latency_ms", 0, 120000, &r.latency_ms, e) < 0 ||
        get_int(spec, "hang_ms", 0, 300000, &r.hang_ms, e) < 0)
        return -EINVAL;
    for (i = 0; i < K_DRAW; i++) {
        v = json_object_get(spec, rate_keys[i]);
        if (!v)
            continue;
        if (!json_is_number(v) || json_number_value(v) < 0 ||
            json_number_value(v) > 1)
            return simerr_set(e, -EINVAL, 400, "%s: must be a number 0..1",
                              rate_keys[i]);
        r.rate[i] = json_number_value(v);
    }
    pthread_mutex_lock(&f->mu);
    for (slot = 0; slot < f->n; slot++)
        if (!strcmp(f->rules[slot].route, r.route))
            break;
    if (slot == FAULTS_MAX) {
        pthread_mutex_unlock(&f->mu);
        return simerr_set(e, -ENOSPC, 400, "at most %d fault rules", FAULTS_MAX);
    }
    f->rules[slot] = r;
    if (slot == f->n)
        f->n++;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

void faults_clear(struct faults *f)
{
    pthread_mutex_lock(&f->mu);
    f->n = 0;
    pthread_mutex_unlock(&f->mu);
}

json_t *faults_list(struct faults *f)
{
    json_t *a = json_array(), *o;

    pthread_mutex_lock(&f->mu);
    for (int i = 0; a && i < f->n; i++) {
        struct rule *r = &f->rules[i];

        o = json_pack("{s:s,s:I,s:I,s:I,s:I}", "route", r->route, "seed",
                      (json_int_t)r->seed, "latency_ms", (json_int_t)r->latency_ms,
                      "hang_ms", (json_int_t)r->hang_ms, "matched",
                      (json_int_t)r->n);
        for (int k = 0; o && k < K_DRAW; k++)
            json_object_set_new(o, rate_keys[k], json_real(r->rate[k]));
        json_array_append_new(a, o);
    }
    pthread_mutex_unlock(&f->mu);
    return a;
}

static struct rule *find(struct faults *f, const char *route, const char *path)
{
    char method_any[32];
    const char *sp = strchr(path, ' ');
    int i;

    snprintf(method_any, sizeof(method_any), "%.*s *",
             sp ? (int)(sp - path) : 0, path);
    for (i = 0; i < f->n; i++)
        if (!strcmp(f->rules[i].route, route))
            return &f->rules[i];
    for (i = 0; i < f->n; i++)
        if (!strcmp(f->rules[i].route, path))
            return &f->rules[i];
    for (i = 0; i < f->n; i++)
        if (!strcmp(f->rules[i].route, method_any))
            return &f->rules[i];
    for (i = 0; i < f->n; i++)
        if (!strcmp(f->rules[i].route, "*"))
            return &f->rules[i];
    return NULL;
}

/* Uniform in [0, 1) from (seed, request number, kind) alone. */
static double uniform(uint64_t seed, uint64_t n, int kind)
{
    uint64_t x = mix64(mix64(seed) ^ mix64(n * 0x100 + (uint64_t)kind));

    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

void faults_decide(struct faults *f, const char *route, const char *path,
                   struct fault_plan *p)
{
    struct rule *r;
    uint64_t n, seed;
    double rate[K_COUNT];

    memset(p, 0, sizeof(*p));
    pthread_mutex_lock(&f->mu);
    r = find(f, route, path);
    if (!r) {
        pthread_mutex_unlock(&f->mu);
        return;
    }
    n = r->n++;
    seed = r->seed;
    memcpy(rate, r->rate, sizeof(rate));
    p->latency_ms = r->latency_ms;
    p->hang_ms = r->hang_ms;
    pthread_mutex_unlock(&f->mu);
    p->matched = true;
    p->drop = uniform(seed, n, K_DROP) < rate[K_DROP];
    p->timeout = uniform(seed, n, K_TIMEOUT) < rate[K_TIMEOUT];
    p->rate_limit = uniform(seed, n, K_RATE_LIMIT) < rate[K_RATE_LIMIT];
    p->error = uniform(seed, n, K_ERROR) < rate[K_ERROR];
    p->malformed = uniform(seed, n, K_MALFORMED) < rate[K_MALFORMED];
    p->backwards = uniform(seed, n, K_BACKWARDS) < rate[K_BACKWARDS];
    p->lost_reply = uniform(seed, n, K_LOST_REPLY) < rate[K_LOST_REPLY];
    p->draw = mix64(mix64(seed) ^ mix64(n * 0x100 + K_DRAW));
    if (uniform(seed, n, K_DUPLICATE) < rate[K_DUPLICATE])
        p->duplicate = 1 + (int)(p->draw % 3);
}
