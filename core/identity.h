/* The server's identity: its RSA key, and the database's memory of which
 * key it was used with. Clients pin the key's fingerprint, so losing the
 * key file must never silently mint a new one for an existing database. */
#ifndef SM_CORE_IDENTITY_H
#define SM_CORE_IDENTITY_H

#include "storage.h"

/* Loads the server key from key_file, or creates it (bits) when the file
 * is missing and db has never been used; refuses, with the remedy logged,
 * to create one for a database that was. Records the key's fingerprint in
 * db (warning when it changed), and fills g_core.server_key,
 * server_public_pem and fingerprint. With shared (a cluster node: other
 * servers use db too) a key other than the recorded one is refused
 * instead, before anything is written. Returns 0 or -1. */
int identity_open(const char *key_file, int bits, storage *db, int shared);

#endif
