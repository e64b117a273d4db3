/* The const table of host services handed to every plugin's init. */
#ifndef SM_CORE_HOST_API_H
#define SM_CORE_HOST_API_H

#include "safemessenger/plugin.h"

const sm_host *host_api_table(void);

/* Host calls refused because they came from a thread other than the logic
 * thread (g_core.logic_thread): a worker's `work`, for instance. */
unsigned long host_api_off_thread_calls(void);

#endif
