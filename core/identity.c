#include "identity.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "core.h"
#include "crypto.h"
#include "log.h"

#define META_FINGERPRINT "server_key_fingerprint"

/* 1: the database has served clients before (it recorded a key, or some
 * plugin created its tables in it); 0: new; -1: cannot tell. */
static int database_used(storage *db, char *recorded, size_t size)
{
    int rc = storage_meta_get(db, META_FINGERPRINT, recorded, size);
    if (rc == SM_OK)
        return 1;
    recorded[0] = '\0';
    if (rc != SM_ENOTFOUND)
        return -1;
    return storage_has_migrations(db);
}

int identity_open(const char *key_file, int bits, storage *db, int shared)
{
    char recorded[CRYPTO_FINGERPRINT_LEN + 16];
    int used = database_used(db, recorded, sizeof recorded);
    if (used < 0)
        return -1;
    struct stat st;
    if (stat(key_file, &st) != 0) {
        if (errno != ENOENT) {
            LOG_ERROR("cannot use the server key %s: %s", key_file, strerror(errno));
            return -1;
        }
        if (used) {
            /* A new key would make every client that pinned the old one
             * refuse this server, and say nothing about why. */
            LOG_ERROR("the server key %s is missing, but the database was used with %s; "
                      "refusing to create a new key. Restore the key file from a backup "
                      "(check server.key_file: relative paths start at the config file's "
                      "directory). To start over with a new identity, which every client "
                      "will see as a changed key, move the database aside as well.",
                      key_file, recorded[0] ? recorded : "an earlier key");
            return -1;
        }
    }
    if (crypto_rsa_load_or_generate(key_file, bits, &g_core.server_key) != 0 ||
        crypto_pubkey_pem(g_core.server_key, &g_core.server_public_pem) != 0 ||
        crypto_fingerprint(g_core.server_key, g_core.fingerprint) != 0) {
        LOG_ERROR("cannot use the server key %s", key_file);
        return -1;
    }
    if (shared && recorded[0] && strcmp(recorded, g_core.fingerprint) != 0) {
        /* The other nodes serve the recorded key: this one would split the
         * clients in two (and, recording its own, mislead the others). */
        LOG_ERROR("the server key %s (%s) is not the one the cluster's database was used with "
                  "(%s): every node of a cluster serves the same key; copy server.key_file from "
                  "a running node",
                  key_file, g_core.fingerprint, recorded);
        return -1;
    }
    if (recorded[0] && strcmp(recorded, g_core.fingerprint) != 0)
        LOG_WARN("the server key %s (%s) is not the one this database was used with (%s): "
                 "clients that pinned the old key will refuse this server until they accept "
                 "the new one",
                 key_file, g_core.fingerprint, recorded);
    if (strcmp(recorded, g_core.fingerprint) != 0 &&
        storage_meta_set(db, META_FINGERPRINT, g_core.fingerprint) != SM_OK)
        return -1;
    LOG_INFO("server key %s, fingerprint %s (clients pin this)", key_file, g_core.fingerprint);
    return 0;
}
