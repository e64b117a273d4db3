/* The harness's storage: which engine a server runs on and its data there
 * (harness.h, "Storage"). Internal to harness.c and harness_storage.c. */
#ifndef SM_TEST_HARNESS_STORAGE_H
#define SM_TEST_HARNESS_STORAGE_H

#include "harness.h"

/* Gives s (whose dir is made) its storage: other's when other is not NULL
 * (its SQLite file, or a new reference to its schema), else its own
 * (<dir>/server.db; in PostgreSQL mode a new schema). 0, or -1 with the
 * reason on stderr. */
int harness_storage_prepare(harness_server *s, const harness_server *other);

/* The storage section the harness writes for s, NUL-terminated and
 * malloc'd; NULL when out of memory. */
char *harness_storage_section(const harness_server *s);

/* Lets go of s's storage: in PostgreSQL mode drops the schema when s was
 * the last server on it, unless keep (the schema's name is then printed).
 * Safe on a server without storage. */
void harness_storage_release(harness_server *s, int keep);

#endif
