/* Checks the TLS certificate and key named by server.tls before anything
 * uses them, so that --check-config and a starting server report a missing
 * file, an unreadable PEM or a key that does not belong to the certificate
 * with the file names, rather than a bare "cannot create vhost". */
#ifndef SM_CORE_TLS_CHECK_H
#define SM_CORE_TLS_CHECK_H

#include <stddef.h>

/* Reads the first certificate of cert_file and the private key of
 * key_file (PEM, unencrypted) and checks that they match. Returns 0, or -1
 * with a message naming the file(s) and the reason in err. */
int tls_check_pair(const char *cert_file, const char *key_file, char *err, size_t err_len);

#endif
