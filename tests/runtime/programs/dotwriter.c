/* Writes a file at each path given as an argument (e.g. REVIEW.md, .git/config): for --out-dir tests. */
#include <stdio.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "w");
        if (!f) { printf("cannot write %s\n", argv[i]); continue; }
        fprintf(f, "written by the agent: %s\n", argv[i]);
        fclose(f);
    }
    return 0;
}
