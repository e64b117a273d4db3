/* The auth_users table (its public schema is described at the top of
 * auth.c): the migration and the prepared statements auth uses. Loop
 * thread only. */
#ifndef AUTH_USERS_H
#define AUTH_USERS_H

#include <stddef.h>
#include <stdint.h>

#include "safemessenger/plugin.h"

#define USERNAME_MIN 3
#define USERNAME_MAX 32

typedef struct users users;

/* 1 when s (len bytes, NUL-terminated) is a valid username: 3 to 32 name
 * characters (sm_name_valid) and no NUL inside. */
int users_valid_name(const char *s, size_t len);


typedef struct user_row {
    int64_t id;
    char username[USERNAME_MAX + 1]; /* as first written */
    char *password_hash;             /* malloc'd; free it */
    int disabled;                    /* safemessenger-admin users disable */
    double created_at;
    int has_public_key;
} user_row;

extern const sm_migration users_migrations[];

/* Prepares the statements (in start(), after the migrations). Returns
 * SM_OK or an error status. */
int users_open(const sm_host *host, sm_plugin *self, users **out);
void users_close(users *u);

/* Looks a user up by the ASCII-folded name: 1 found (*row filled when row
 * is not NULL), 0 not found, -1 error (logged by the host). */
int users_find(users *u, const char *lower, user_row *row);

/* The users service (sm_users_provider): by folded name, or by id when
 * lower is NULL. SM_OK with *out's id, name and public_key (valid until
 * the next lookup), SM_ENOTFOUND, or SM_ERROR/SM_ENOMEM. */
int users_lookup(users *u, const char *lower, int64_t id, sm_user_info *out);

/* Inserts a user with the next id of auth_ids (autocommit: committed
 * when this returns SM_OK). public_key may be NULL. SM_OK with *id,
 * SM_EEXIST when the folded name is taken (the UNIQUE index decides
 * races), else SM_ERROR (also when the id is taken: logged). */
int users_insert(users *u, const char *username, const char *lower, const char *hash,
                 const char *public_key, int64_t *id);

/* Replaces the hash only if it is still old_hash (a concurrent login may
 * have upgraded it first). SM_OK when the row changed, SM_ENOTFOUND when
 * it did not, else SM_ERROR. */
int users_update_hash(users *u, int64_t id, const char *new_hash, const char *old_hash);

/* The admin commands' (admin.c). SM_OK, SM_ENOTFOUND when no row
 * changed, else SM_ERROR. */
int users_set_disabled(users *u, const char *lower, int disabled);
int users_delete(users *u, const char *lower);
int users_set_hash(users *u, int64_t id, const char *hash);
/* [{user, id, created_at, disabled}] by folded name; NULL on error. */
json_t *users_list(users *u);

#endif
