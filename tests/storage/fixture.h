/* fixture.h - what the storage tests share: a scratch database per test (cmocka set-up
 * and tear-down) and one-value queries. Include after <cmocka.h> and its prerequisites. */
#ifndef TRIAGE_TESTS_STORAGE_FIXTURE_H
#define TRIAGE_TESTS_STORAGE_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

/* A scratch folder and the database path in it. */
struct fixture {
    char dir[64];
    char path[128];
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/triage-storage-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    *state = f;
    return 0;
}

/* Removes the database, its WAL files and an export beside it, then the folder. */
static int
teardown(void **state)
{
    struct fixture *f = *state;
    char p[200];
    const char *sfx[] = {"", "-wal", "-shm", "-journal", ".jsonl"};

    for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* The first column of sql's first row on the database at path (read-only), as an
 * integer; -1 when there is no row. */
static inline int64_t
query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

#endif
