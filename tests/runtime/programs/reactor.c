/* Reactor-style agent: entry points called by the node, state kept in the heap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "meshagent.h"

static char *buf;
static int32_t total;

__attribute__((export_name("add"))) int32_t add(int32_t n) {
    if (!buf) buf = calloc(1, 1 << 20);
    char out[32];
    int k = mesh_llm("add", 3, out, sizeof out);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    total += n + (k > 0 ? out[0] : 0) + (int32_t)(ts.tv_nsec % 7);
    buf[total % (1 << 20)] = (char)n;
    return total;
}

__attribute__((export_name("get"))) int32_t get(void) { return total; }
