/* Prints SER_COMPILE_FLAGS as the core's loader sees it: core/ver_defs.h alone, without the
 * allocator headers (which from 6.1 add DBG_*_MALLOC tokens to `kamailio -V` only). build.rs
 * exports it as the module's `module_flags`. */
#include <stdio.h>
#include "core/ver_defs.h"

int main(void)
{
	printf("%s\n", SER_COMPILE_FLAGS);
	return 0;
}
