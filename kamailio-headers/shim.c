/* C shim: the Kamailio core APIs that are macros or static inlines (logging, locks,
 * shm/pkg allocation with DBG_SR_MEMORY arguments). Built by build.rs with the same
 * defines as the Debian Kamailio binary. Every function is a one-liner over the macro. */
#include <stdio.h>
#include "core/sr_module.h"
#include "core/dprint.h"
#include "core/mem/shm.h"
#include "core/mem/pkg.h"
#include "core/locking.h"

int rds_log_enabled(int level)
{
	return get_debug_level(LOG_MNAME, LOG_MNAME_LEN) >= level;
}

/* msg is a NUL-terminated, already formatted line (no trailing newline) */
void rds_log(int level, const char *file, int line, const char *func, const char *msg)
{
	char prefix[256];
	snprintf(prefix, sizeof(prefix), "%s [%s:%d]: ", MOD_NAME, file, line);
	LOG_FX(DEFAULT_FACILITY, level, NULL, prefix, func, "%s\n", msg);
}

void *rds_shm_malloc(unsigned long size) { return shm_malloc(size); }
void rds_shm_free(void *p) { shm_free(p); }
void *rds_pkg_malloc(unsigned long size) { return pkg_malloc(size); }
void rds_pkg_free(void *p) { pkg_free(p); }

gen_lock_t *rds_lock_new(void)
{
	gen_lock_t *l = lock_alloc();
	if(l == NULL)
		return NULL;
	if(lock_init(l) == NULL) {
		lock_dealloc(l);
		return NULL;
	}
	return l;
}
void rds_lock_get(gen_lock_t *l) { lock_get(l); }
void rds_lock_release(gen_lock_t *l) { lock_release(l); }
void rds_lock_free(gen_lock_t *l)
{
	lock_destroy(l);
	lock_dealloc(l);
}
