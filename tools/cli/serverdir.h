/* Where the per-server files live: keys/, contacts/ and seen/ hold one
 * directory per server named after the server's key fingerprint
 * ("sha256_<hex>"), so that reaching the same server under another host
 * name or port finds the same keys. Directories named after "host_port"
 * (the layout before) are moved there on first use. */
#ifndef SM_CLI_SERVERDIR_H
#define SM_CLI_SERVERDIR_H

#include <stddef.h>

/* "sha256:<hex>" -> "sha256_<hex>". -1 if fingerprint is not of that form
 * or out is too small. */
int serverdir_name(const char *fingerprint, char *out, size_t out_len);

/* What a migration did. */
typedef struct serverdir_moved {
    unsigned files;       /* files (or whole directories' files) moved */
    unsigned conflicts;   /* files left behind: the new place already has one */
} serverdir_moved;

/* Moves <config>/{keys,contacts,seen}/<from> into .../<to>: the whole
 * directory when <to> does not exist yet, else file by file, never
 * replacing a file <to> already holds (those stay where they are and are
 * counted as conflicts). Adds to *moved. Returns 0, or -1 when a rename
 * failed for another reason. */
int serverdir_migrate(const char *config_dir, const char *from, const char *to,
                      serverdir_moved *moved);

#endif
