/* tool_fill — a WASI tool that allocates and touches memory a megabyte at a time until refused
 * (unlike tool_hog, every page it gets is really used: its memory limit must stop it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *volatile keep;  /* the compiler must not drop the allocations */

int main(void) {
    unsigned long mib = 0;
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 1, 1 << 20);
        keep = p;
        mib++;
    }
    printf("filled %lu MiB %d\n", mib, keep ? keep[12345] : 0);
    return 0;
}
