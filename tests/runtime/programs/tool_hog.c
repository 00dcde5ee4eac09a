/* tool_hog — a WASI tool that grows its memory until refused, then traps
 * (its memory limit must stop it). */
#include <stdio.h>

int main(void) {
    unsigned long pages = 0;
    for (;;) {
        if (__builtin_wasm_memory_grow(0, 16) == (unsigned long)-1) __builtin_trap();
        pages += 16;
        if (pages > 1000000) break;
    }
    printf("grew %lu pages\n", pages);
    return 0;
}
