/* Per-address state of the transport: how many sessions each peer address
 * holds (limits.max_sessions_per_address), its key_exchange budget
 * (limits.handshakes_per_address: a token bucket of that many attempts
 * refilled over a minute), and how refusals are logged (one line per
 * address per minute, not one per connection). An entry lives while its
 * address has sessions or recent events; the table never holds more than
 * its bound. Times are monotonic seconds given by the caller, so tests
 * drive the module with a fake clock.
 *
 * Every function is safe from any thread (the table has its own lock):
 * each I/O thread admits, counts and takes handshakes for its
 * connections while the logic thread sweeps and applies a reload. Only
 * peers_new and peers_free must not overlap another call. */
#ifndef SM_CORE_PEERS_H
#define SM_CORE_PEERS_H

#include <stddef.h>

/* Refusals of one address are logged at most once per this many seconds. */
#define PEERS_LOG_INTERVAL 60.0

typedef struct peers peers;

/* max_entries bounds the table (give it more than max_sessions, so an
 * address with a session always finds room); NULL when out of memory. */
peers *peers_new(size_t max_entries, int max_sessions_per_address, int handshakes_per_minute);
void peers_free(peers *p);
/* New bounds (a configuration reload); counts and budgets already taken
 * stay, and are held against the new bounds from now on. A smaller table
 * bound forgets nobody: it only refuses new addresses until it is met. */
void peers_set_limits(peers *p, size_t max_entries, int max_sessions_per_address,
                      int handshakes_per_minute);

/* Whether a new connection from addr may open: 1 yes, 0 when the address
 * already holds max_sessions_per_address sessions. On a refusal, *log_refused
 * is the number of refusals to report in one log line now (this one
 * included), or 0 when a line for this address was written less than
 * PEERS_LOG_INTERVAL ago. */
int peers_admit(peers *p, const char *addr, double now, size_t *log_refused);

/* peers_admit and peers_session_opened in one step, so that connections
 * from one address accepted at once on several threads cannot pass the
 * cap between the check and the count: 1 admitted and counted (release
 * with peers_session_closed), 0 refused (*log_refused as peers_admit), -1
 * out of memory. */
int peers_admit_open(peers *p, const char *addr, double now, size_t *log_refused);

/* Counts an opened session of addr. 0; 1 when addr already holds
 * max_sessions_per_address sessions (a connection on another thread was
 * counted since peers_admit said yes: admit is the cheap early answer,
 * this is the one that holds; the refusal is reported in the address's
 * next peers_admit or peers_handshake_take log count); -1 when out of
 * memory or when the table is full of addresses that all hold sessions. */
int peers_session_opened(peers *p, const char *addr, double now);
/* Uncounts it; a quiet address is forgotten at once. */
void peers_session_closed(peers *p, const char *addr, double now);

/* Takes one key_exchange attempt from addr's budget: 1 taken; 0 when the
 * budget is spent, with *retry_after the seconds until one attempt is
 * available again (rounded up to the millisecond) and *log_refused as for
 * peers_admit. */
int peers_handshake_take(peers *p, const char *addr, double now, double *retry_after,
                         size_t *log_refused);

/* Forgets addresses with no sessions and no recent events (a spent
 * handshake budget, a refusal logged within PEERS_LOG_INTERVAL). Returns
 * how many were forgotten. */
size_t peers_sweep(peers *p, double now);

/* How many addresses are remembered, and the sessions one holds. */
size_t peers_count(const peers *p);
size_t peers_sessions(const peers *p, const char *addr);

#endif
