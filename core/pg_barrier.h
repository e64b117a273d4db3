/* The flush barrier of durability.h on PostgreSQL: a connection of its
 * own (opened when first needed, reopened after a failure) on which a
 * transaction with a transaction id commits with synchronous_commit = on.
 * Its commit returns once PostgreSQL flushed the WAL up to its commit
 * record, which follows every commit another connection finished before:
 * those are then durable. */
#ifndef SM_CORE_PG_BARRIER_H
#define SM_CORE_PG_BARRIER_H

typedef struct pg_barrier pg_barrier;

/* Copies conninfo (a libpq connection string or URI); connects later.
 * SM_OK or SM_ENOMEM. */
int pg_barrier_new(const char *conninfo, pg_barrier **out);
void pg_barrier_free(pg_barrier *b);
/* durability_barrier_fn: 0 once flushed, -1 when PostgreSQL could not be
 * reached or refused (the reason logged at the first failure after a
 * success). Blocks: a worker's job. */
int pg_barrier_run(void *b);

#endif
