/* heap_bench — a reactor agent for `meshagent bench checkpoint`.
 *
 * setup(mib) allocates and fills a heap of that many MiB; work(n) makes n journaled
 * host calls (clock, random, LLM in turn) and folds their results into the heap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "meshagent.h"

static uint8_t *heap;
static size_t heap_size;
static uint64_t acc = 1469598103934665603ull;

__attribute__((export_name("setup"))) int32_t setup(int32_t mib) {
    heap_size = (size_t)mib << 20;
    heap = malloc(heap_size);
    if (!heap) return -1;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < heap_size; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(heap + i, &x, 8);
    }
    return 0;
}

__attribute__((export_name("work"))) int32_t work(int32_t n) {
    char out[64];
    for (int32_t i = 0; i < n; i++) {
        uint64_t v = 0;
        switch (i % 3) {
        case 0: { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); v = (uint64_t)ts.tv_nsec; break; }
        case 1: getentropy(&v, sizeof v); break;
        default: { int k = mesh_llm("next", 4, out, sizeof out); v = k > 0 ? (uint64_t)out[0] : 0; }
        }
        acc = (acc ^ v) * 1099511628211ull;
        if (heap) heap[(acc >> 7) % heap_size] ^= (uint8_t)acc;
    }
    return (int32_t)(acc & 0x7fffffff);
}

__attribute__((export_name("checksum"))) int32_t checksum(void) {
    uint64_t h = acc;
    for (size_t i = 0; i < heap_size; i += 4096) h = (h ^ heap[i]) * 1099511628211ull;
    return (int32_t)(h & 0x7fffffff);
}
