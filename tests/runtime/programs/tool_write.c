/* tool_write — a WASI tool that writes its arguments into a file of the agent's directory:
 *   tool_write PATH WORD...   (one word per line) */
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    FILE *f = fopen(argv[1], "w");
    if (!f) { fprintf(stderr, "cannot write %s\n", argv[1]); return 1; }
    for (int i = 2; i < argc; i++) fprintf(f, "%s\n", argv[i]);
    fclose(f);
    printf("wrote %d line(s) to %s\n", argc - 2, argv[1]);
    return 0;
}
