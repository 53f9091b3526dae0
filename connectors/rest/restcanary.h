/* restcanary.h: tandem's own canary record on a rest side (SPEC §4
 * "canary"; the probes are daemon/canaries.c).
 *
 * The canary record holds the side's key field only (its value is the
 * mapping's canary key), as the PostgreSQL canary row holds only its key.
 * It is written with the side's write config: create POST to the resource
 * with the key in the body, or PUT to resource/{id}; a POST refused with
 * 409 (the server keeps the id, e.g. for a soft-deleted record) is sent
 * again as PUT, as the change writer does. It is removed with the delete
 * config (DELETE, or PATCH of the soft-delete flag); a record already gone
 * counts as removed. A 409/412 on a PUT, PATCH or DELETE (a server that
 * wants the record's revision) reads the record once and repeats the
 * write with its revision (revision_field as revision_in says, else the
 * ETag as If-Match). A POST answered with another key means the server
 * assigns ids itself: that record is deleted again and the write fails,
 * so a canary never becomes an ordinary record.
 *
 * Requests go through the endpoint's transport, so its headers, limits
 * and Content-Type rule hold. There is no retry here: the caller tries
 * again on its own schedule. */
#ifndef TANDEM_RESTCANARY_H
#define TANDEM_RESTCANARY_H

#include "../../daemon/config.h"
#include "../../daemon/err.h"
#include "rest_http.h"

struct restcanary;

enum restcanary_op {
    RESTCANARY_WRITE,       /* create, revive or replace the record */
    RESTCANARY_REMOVE,      /* delete it */
    RESTCANARY_READ         /* is it there (not deleted)? */
};

/* Fires once, on the loop, unless cancelled. result: 0 done (READ: 0 the
 * record is absent or deleted, 1 it is there), or a negative errno with
 * msg, one line without secrets (-EIO the server could not be reached or
 * failed, -EPROTO it refused). The operation is freed right after. */
typedef void (*restcanary_fn)(void *arg, int result, const char *msg);

/* Starts op on side sd (a rest side) of mapping m, whose canary key must
 * be set, through transport h (not referenced: the caller keeps h alive
 * until done fires or the operation is cancelled). *out receives the
 * handle for restcanary_cancel. -ENOMEM or -EINVAL (e filled): done never
 * fires. */
int restcanary_start(struct restcanary **out, struct rest_http *h,
                     const struct cfg_mapping *m, const struct cfg_side *sd,
                     enum restcanary_op op, restcanary_fn done, void *arg,
                     struct err *e);

/* Drops the operation; its callback never fires. Accepts NULL. */
void restcanary_cancel(struct restcanary *c);

#endif
