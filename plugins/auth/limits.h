/* Sliding-window counters keyed by a short string (a folded username or a
 * client address), for the auth plugin's rate limits: "at most `limit`
 * events per `window` seconds". Each key keeps the times of its events in
 * the window (a sliding log, so retry_after is exact) and, when the caller
 * uses ratelimit_begin/ratelimit_end, a count of attempts still in flight
 * that count as events until they end, so that parallel guesses cannot all
 * slip in before the first failure is recorded.
 *
 * A table used only through ratelimit_begin/ratelimit_end (nothing ever
 * counted) is a cap on attempts in flight per key: the auth plugin's share
 * of the hash queue per address.
 *
 * Memory is bounded: expired keys are dropped when touched and by
 * ratelimit_prune(), and past max_keys the least recently touched key with
 * no attempt in flight is evicted. A key holds at most `limit` times.
 * Loop thread only. */
#ifndef AUTH_LIMITS_H
#define AUTH_LIMITS_H

#include <stddef.h>

typedef struct ratelimit ratelimit;

/* Longest key (bytes, without the terminator): an IPv6 address text is at
 * most 45, a username 32. Longer keys are refused with -1. */
#define RATELIMIT_KEY_MAX 63

/* limit >= 1, window > 0, max_keys >= 1. Returns 0 or -1 (no memory). */
int ratelimit_new(size_t limit, double window, size_t max_keys, ratelimit **out);
void ratelimit_free(ratelimit *rl);
/* New limit and window (a configuration reload); events already counted
 * stay, the oldest dropped past the new limit. Bad values are ignored. */
void ratelimit_set(ratelimit *rl, size_t limit, double window);

/* 0 when the key is below its limit (events in the window plus attempts in
 * flight); 1 when it has reached it, with *retry_after the whole seconds
 * (at least 1) until the oldest event leaves the window, or 1 when the
 * events alone are below the limit (attempts in flight end soon, and if
 * they succeed the key is free again). */
int ratelimit_blocked(ratelimit *rl, const char *key, double now, double *retry_after);

/* Records one event at `now`. Returns 0, or -1 (key too long, no memory;
 * the event is then not counted). */
int ratelimit_add(ratelimit *rl, const char *key, double now);

/* An attempt starts: counts as an event until ratelimit_end(). */
int ratelimit_begin(ratelimit *rl, const char *key, double now);
/* The attempt ends; `counted` records it as an event at `now` (a failure),
 * otherwise it leaves no trace. A key evicted meanwhile is recreated. */
void ratelimit_end(ratelimit *rl, const char *key, int counted, double now);

/* Drops every key with no event in the window and no attempt in flight. */
void ratelimit_prune(ratelimit *rl, double now);

/* The key for a peer address: an IPv4-mapped IPv6 address as plain IPv4,
 * another IPv6 address as its /64 prefix ("2001:db8:1:2::/64": one
 * subscriber usually holds a whole /64), anything else as given. out must
 * hold RATELIMIT_KEY_MAX + 1 bytes. */
void ratelimit_address_key(const char *address, char *out);

#endif
