/* auth as the server's users provider (sm_host.register_users_provider):
 * other plugins look accounts up through the host instead of reading
 * auth_users themselves. */
#include "auth.h"

/* SM_ESTATE until start() has prepared the statements. */
static int by_name(void *data, const char *name, sm_user_info *out)
{
    auth *a = data;
    char lower[USERNAME_MAX + 1];
    if (!a->users)
        return SM_ESTATE;
    /* No account can have a name that is not valid. */
    if (!sm_name_valid(name, USERNAME_MIN, USERNAME_MAX) ||
        sm_name_fold(name, lower, sizeof lower) != SM_OK)
        return SM_ENOTFOUND;
    return users_lookup(a->users, lower, 0, out);
}

static int by_id(void *data, int64_t id, sm_user_info *out)
{
    auth *a = data;
    if (!a->users)
        return SM_ESTATE;
    return users_lookup(a->users, NULL, id, out);
}

const sm_users_provider auth_users_provider = {
    .size = sizeof(sm_users_provider),
    .by_name = by_name,
    .by_id = by_id,
};
