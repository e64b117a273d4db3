/* /export-key and /import-key: the user's private key carried to a second
 * device as a passphrase-encrypted PKCS#8 PEM file (PBES2: scrypt and
 * AES-256-CBC). The passphrase comes from $SM_KEY_PASSPHRASE or, in
 * interactive mode, a prompt without echo. Both return 0 on success and
 * -1 otherwise (reported, exit status recorded). */
#ifndef SM_CLI_KEYIO_H
#define SM_CLI_KEYIO_H

#include "cli.h"

/* Writes the logged-in user's private key to path (mode 0600), refusing
 * to replace an existing file. */
int keyio_export(cli_app *app, const char *path);

/* Reads a key exported by keyio_export and installs it as the logged-in
 * user's key for this server, refusing a key that is not the public key
 * the server holds for the user (or an existing, different key file). */
int keyio_import(cli_app *app, const char *path);

#endif
