/*
 * meshagent.h — the host ABI of meshagent agents (import module "mesh").
 *
 * An agent is a WASI preview 1 module built with `meshagent build agent.c -o agent.wasm`.
 * Every call below (and every WASI call) is recorded in the agent's journal, so the
 * agent can be checkpointed, rolled back, forked, and moved to another device, where
 * it resumes by replay with identical behaviour. Agents must not rely on anything but
 * these calls and WASI: no threads, no host files except the virtual directory "/"
 * (relative paths like "src/main.c" work). Writes to it (fopen "w", tools) stay in the
 * agent: they are journaled, travel with it and are undone by a rollback.
 *
 * Buffers: functions that return data take (out, out_cap). They return the number of
 * units written, or -(units needed) when out_cap is too small; in that case nothing is
 * consumed: call again with a big enough buffer and the same arguments to get the
 * same answer (the LLM is not asked twice).
 */
#ifndef MESHAGENT_H
#define MESHAGENT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MESH_IMPORT(name) __attribute__((import_module("mesh"), import_name(name)))

/* Generate text. The prompt continues this agent's conversation with the model (the
 * KV cache of earlier steps is reused where the step runs). Returns bytes written to
 * out, or -(bytes needed) if out_cap is too small (nothing consumed). */
MESH_IMPORT("llm")
int32_t mesh_llm(const char *prompt, int32_t prompt_len, char *out, int32_t out_cap);

/* Options for the following mesh_llm calls (sticky until changed), as "key=value"
 * pairs separated by ';', ',' or newlines:
 *   model=NAME         model name or tag the step needs ("" = any model)
 *   max_tokens=N       1..65536 (default 64)
 *   temperature=T      0..2, 0 = greedy (default 0)
 *   seed=N             sampling seed (default 0)
 *   privacy=CLASS      private | lan | any (default any): where this step may run.
 *                      "private" steps never leave the owner's own devices.
 *   deadline=S         seconds the step should take at most (default 0: none); a node
 *                      that expects to miss it auctions the step to a faster peer.
 * An empty string resets every option. Returns 0, or -1 if the text is invalid (the
 * options are then unchanged). Example:
 *   mesh_llm_options("max_tokens=128;privacy=private", 30); */
MESH_IMPORT("llm_options")
int32_t mesh_llm_options(const char *options, int32_t len);

/* Label this point. Returns 0 the first time; k after the k-th rollback to the label
 * (setjmp-style). */
MESH_IMPORT("checkpoint")
int32_t mesh_checkpoint(const char *label);

/* Never returns: execution continues from mesh_checkpoint(label), which then returns
 * the number of rollbacks to that label. Output written since the checkpoint is
 * discarded with the rest of the state. An unknown label ends the agent with
 * CheckpointNotFound. */
MESH_IMPORT("rollback")
void mesh_rollback(const char *label);

/* Create n >= 1 (at most 64) children: returns i (0..n-1) in child i, -1 in the parent,
 * which goes on. Children are full agents with their own ids and journals that share
 * the parent's prefix; they may run on other nodes. Flush stdout before forking
 * (stdout is line-buffered). Returns -2 if n is out of range (nothing forked). */
MESH_IMPORT("fork")
int32_t mesh_fork(int32_t n);

/* The parent waits for child i of its latest mesh_fork to end; returns the bytes of the
 * child's stdout (all of it, including what the parent printed before the fork), or
 * -(bytes needed) if out_cap is too small. */
MESH_IMPORT("join")
int32_t mesh_join(int32_t i, char *out, int32_t out_cap);

/* Call a tool: name is NUL-terminated, args are bytes (JSON). Returns bytes written, or
 * -(bytes needed) (the tool does not run again for the second call). The answer is JSON;
 * a failed tool answers {"ok":false,"error":"..."} and the agent goes on. The result is
 * journaled: replay and migration never run a tool twice. Tools:
 *   fs.list   {"path":"src","glob":"*.c"}             files and sizes
 *   fs.read   {"path":"a.c","start":1,"end":40}       lines (1-based, inclusive)
 *   fs.search {"pattern":"TODO|FIXME","glob":"*.c"}   matching lines (regex)
 *   fs.write  {"path":"REVIEW.md","text":"...","append":false}
 *   fs.patch  {"diff":"--- a/x.c\n+++ b/x.c\n@@ ..."} a unified diff, all or nothing
 *   embed.search {"query":"...","k":3,"glob":"*.c"}  top-k chunks of the files
 *   NAME      {"args":["-e","re","src"]}              a WASI tool the agent's manifest declares
 *             (NAME.tools.toml beside NAME.c); answers exit_code, stdout, stderr, error
 * Other names go to the node (it offers the shipped tools over inline "files"). */
MESH_IMPORT("tool")
int32_t mesh_tool(const char *name, const char *args, int32_t args_len, char *out, int32_t out_cap);

/* Embed text: writes floats (L2-normalised); returns their count, or -(count needed). */
MESH_IMPORT("embed")
int32_t mesh_embed(const char *text, int32_t text_len, float *out, int32_t out_cap);

/* Log a line for the agent's owner (`meshagent logs AGENT`); level 0 debug, 1 info,
 * 2 warning, 3 error. Goes to the agent's stderr, prefixed with the level. */
MESH_IMPORT("log")
void mesh_log(int32_t level, const char *msg, int32_t len);

#ifdef __cplusplus
}
#endif

#endif /* MESHAGENT_H */
