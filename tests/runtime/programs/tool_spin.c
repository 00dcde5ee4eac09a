/* tool_spin — a WASI tool that never ends (its fuel limit must stop it). */
#include <stdio.h>

int main(void) {
    volatile unsigned long n = 0;
    for (;;) n++;
    printf("%lu\n", n);
    return 0;
}
