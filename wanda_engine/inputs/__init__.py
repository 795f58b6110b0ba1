"""What a run reads: the model (the embedded default, a hub id, a folder, a .gguf; offloaded with accelerate),
what it is made of (decoder blocks and their linears, its context length), the texts cut into token windows,
and the device it computes on.

Imports `core`, `config` and `store` (the cache's atomic writes); hub access is offline-first and fails fast.
"""
