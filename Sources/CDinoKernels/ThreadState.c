// Per-thread state for DinoKernels.Parallel: whether the current thread is running one shard of a
// data-parallel pass, in which case the kernels it calls run their ranges inline instead of
// splitting them over the (busy) worker pool.
#include "CDinoKernels.h"

static _Thread_local int insideShard = 0;

int dino_thread_inside_shard(void) { return insideShard; }

void dino_thread_set_inside_shard(int value) { insideShard = value; }
