"""What a run reads: the model (the embedded default, a hub id, a folder, a .gguf; offloaded with accelerate),
what it is made of (decoder blocks and their linears, its context length; `anatomy`: a block's heads and MLP
channels, and removing them), the texts cut into token windows, and the device it computes on. `shrunk` says a
structurally pruned model's widths in its config, or saves and loads them where no config can.

Imports `core`, `config` and `store` (the cache's atomic writes); hub access is offline-first and fails fast.
"""
