"""Inference engines behind one interface (:mod:`.engine`).

* :mod:`.llama_engine` — llama.cpp (llama-cpp-python): sessions as sequences
  of one context, O(1) forks, movable KV blobs (:mod:`.kvblob`);
* :mod:`.onnx_embedder` — ONNX Runtime sentence embeddings (all-MiniLM-L6-v2 int8);
* :mod:`.registry` — models from config, sha256 and throughput caches;
* :mod:`.capacity` — limiter sizes for this hardware;
* :mod:`.tiny` — the seeded tiny llama GGUF used by tests and the demo.

Importing this package imports neither llama.cpp nor onnxruntime.
"""

__all__: list[str] = []
