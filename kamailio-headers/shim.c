/* C shim: the Kamailio core APIs that are macros or static inlines (logging, locks,
 * shm/pkg allocation with DBG_SR_MEMORY arguments). Built by build.rs with the same
 * defines as the Debian Kamailio binary. Every function is a one-liner over the macro. */
#include <stdio.h>
#include "core/sr_module.h"
#include "core/dprint.h"
#include "core/mem/shm.h"
#include "core/mem/pkg.h"
#include "core/locking.h"

/* msg is a NUL-terminated, already formatted line (no trailing newline) */
void rds_log(int level, const char *file, int line, const char *func, const char *msg)
{
	char prefix[256];
	snprintf(prefix, sizeof(prefix), "%s [%s:%d]: ", MOD_NAME, file, line);
	LOG_FX(DEFAULT_FACILITY, level, NULL, prefix, func, "%s\n", msg);
}

void *rds_shm_malloc(unsigned long size) { return shm_malloc(size); }
void rds_shm_free(void *p) { shm_free(p); }
/* call-load cells: a separate allocation site, so that `mod.stats dispatcher shm` tells the
 * per-call memory apart from the lists */
void *rds_shm_malloc_cell(unsigned long size) { return shm_malloc(size); }
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

/* Periodic slow-timer callback every `ms` milliseconds (register_timer() only does seconds).
 * Runs where register_timer() callbacks run (the core "slow timer" process). */
#include "core/timer.h"
#include "core/timer_ticks.h"
typedef void (*rds_tick_f)(unsigned int ticks, void *param);
struct rds_timer {
	struct timer_ln tl;
	rds_tick_f f;
	void *p;
};
static ticks_t rds_timer_handler(ticks_t t, struct timer_ln *tl, void *data)
{
	struct rds_timer *r = (struct rds_timer *)data;
	r->f((unsigned int)t, r->p);
	return (ticks_t)(-1); /* periodic */
}
/* the registered timers (registered in mod_init, freed in mod_destroy) */
#define RDS_MAX_TIMERS 8
static struct rds_timer *rds_timers[RDS_MAX_TIMERS];
int rds_register_timer_ms(rds_tick_f f, void *p, unsigned int ms)
{
	int i;
	struct rds_timer *r;
	for(i = 0; i < RDS_MAX_TIMERS && rds_timers[i] != NULL; i++)
		;
	if(i == RDS_MAX_TIMERS)
		return -1;
	r = shm_malloc(sizeof(struct rds_timer));
	if(r == NULL)
		return -1;
	r->f = f;
	r->p = p;
	timer_init(&r->tl, rds_timer_handler, r, 0);
	if(timer_add(&r->tl, MS_TO_TICKS(ms)) != 0) {
		shm_free(r);
		return -1;
	}
	rds_timers[i] = r;
	return 0;
}
/* mod_destroy (main process, the timer process is gone): stops and frees them */
void rds_timers_free(void)
{
	int i;
	for(i = 0; i < RDS_MAX_TIMERS; i++) {
		if(rds_timers[i] != NULL) {
			timer_del(&rds_timers[i]->tl);
			shm_free(rds_timers[i]);
			rds_timers[i] = NULL;
		}
	}
}
