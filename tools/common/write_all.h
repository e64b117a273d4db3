#ifndef SM_TOOLS_WRITE_ALL_H
#define SM_TOOLS_WRITE_ALL_H

#include <stddef.h>

/* Writes all len bytes to fd, a socket or a file, retrying short writes
 * and EINTR. A socket whose peer went away gives -1, not SIGPIPE. Returns
 * 0, or -1 with errno set. */
int tool_write_all(int fd, const void *data, size_t len);

#endif
