/* Reads the clocks and randomness several times and sleeps in between. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    for (int i = 0; i < 4; i++) {
        struct timespec rt, mono;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        unsigned int r;
        getentropy(&r, sizeof r);
        printf("%d realtime=%lld.%09ld monotonic=%lld.%09ld random=%u\n", i, (long long)rt.tv_sec, rt.tv_nsec,
               (long long)mono.tv_sec, mono.tv_nsec, r);
        usleep(1000);
    }
    srand((unsigned)time(NULL));
    printf("rand=%d\n", rand());
    return 0;
}
