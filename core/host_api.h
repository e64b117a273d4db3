/* The const table of host services handed to every plugin's init. */
#ifndef SM_CORE_HOST_API_H
#define SM_CORE_HOST_API_H

#include "safemessenger/plugin.h"

const sm_host *host_api_table(void);

#endif
