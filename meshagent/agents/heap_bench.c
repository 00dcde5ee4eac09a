/* heap_bench — a reactor agent for `meshagent bench checkpoint`.
 *
 * setup(mib) allocates and fills a heap of that many MiB (in chunks of just under 1 MiB); work(n) makes n journaled
 * host calls (clock, random, LLM in turn) and folds their results into the heap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "meshagent.h"

#define CHUNK ((1u << 20) - 64) /* just under 1 MiB: size-class allocators do not round it up to 2 MiB */

static uint8_t *chunks[4096];
static size_t nchunks;
static uint64_t acc = 1469598103934665603ull;

__attribute__((export_name("setup"))) int32_t setup(int32_t mib) {
    uint64_t x = 88172645463325252ull;
    for (nchunks = 0; nchunks < (size_t)mib && nchunks < 4096; nchunks++) {
        uint8_t *c = malloc(CHUNK);
        if (!c) return -1;
        for (size_t i = 0; i + 8 <= CHUNK; i += 8) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            memcpy(c + i, &x, 8);
        }
        chunks[nchunks] = c;
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
        if (nchunks) chunks[(acc >> 7) % nchunks][(acc >> 17) % CHUNK] ^= (uint8_t)acc;
    }
    return (int32_t)(acc & 0x7fffffff);
}

__attribute__((export_name("checksum"))) int32_t checksum(void) {
    uint64_t h = acc;
    for (size_t c = 0; c < nchunks; c++)
        for (size_t i = 0; i < CHUNK; i += 4096) h = (h ^ chunks[c][i]) * 1099511628211ull;
    return (int32_t)(h & 0x7fffffff);
}
