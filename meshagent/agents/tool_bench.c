/* tool_bench — a command agent for `meshagent bench tools`.
 *
 *   tool_bench N NAME ARGS   N calls of mesh_tool(NAME, ARGS)
 *   tool_bench N -           N calls of sched_yield() (a journaled WASI call: the baseline) */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[1]);
    static char out[1 << 16];
    if (strcmp(argv[2], "-") == 0) {
        for (int i = 0; i < n; i++) sched_yield();
        return 0;
    }
    const char *args = argc > 3 ? argv[3] : "";
    for (int i = 0; i < n; i++)
        if (mesh_tool(argv[2], args, (int32_t)strlen(args), out, sizeof out) < 0) return 1;
    return 0;
}
