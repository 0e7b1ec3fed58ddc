/* spend.c - what client keys spent since a time, summed from the outcome log (budgets). */
#include <errno.h>

#include "storage.h"
#include "storage-int.h"

int
storage_key_spend(const char *db_path, const char *const *keys, const int64_t *since_ms, size_t n,
                  double *usd, char *err, size_t errlen)
{
    struct storage__db *db = storage__db_open(db_path, STORAGE__READ, err, errlen);
    struct storage__stmt *st = NULL;
    int rc = -EIO;

    if (!db)
        return -EIO;
    /* Client rows only: the daemon's own shadow and judge calls are not the key's.
     * requests_key_spend (schema 9) covers it: a range of one key's rows, no table. */
    st = storage__prepare(db, "SELECT coalesce(sum(cost_usd), 0) FROM requests"
                              " WHERE key_id = ? AND started_ms >= ?"
                              " AND (kind IS NULL OR kind NOT IN ('shadow', 'judge'))");
    if (!st)
        goto dberr;
    for (size_t i = 0; i < n; i++) {
        storage__bind_text(st, 1, keys[i]);
        storage__bind_int64(st, 2, since_ms[i]);
        if (storage__step(st) != 1)
            goto dberr;
        usd[i] = storage__column_double(st, 0);
        storage__reset(st);
    }
    rc = 0;
    goto done;
dberr:
    storage__errf(err, errlen, "%s: %s", storage__shown(db_path), storage__db_error(db));
done:
    storage__finalize(st);
    storage__db_close(db);
    return rc;
}
