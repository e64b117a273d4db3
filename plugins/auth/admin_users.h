/* The auth plugin's admin commands (safemessenger-admin users ...). */
#ifndef AUTH_ADMIN_USERS_H
#define AUTH_ADMIN_USERS_H

#include "safemessenger/plugin.h"

/* users.list, users.show, users.disable, users.enable, users.delete,
 * users.passwd; plugin_data is the auth state (auth.h). */
extern const sm_admin_command auth_admin_commands[];

#endif
