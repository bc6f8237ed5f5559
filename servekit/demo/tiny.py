"""A tiny random-weight Llama GGUF with a real SPM tokenizer, written in well under a second.

It proves that a server starts and streams; it knows nothing (a random model often emits EOS at
once, so tests pass ``ignore_eos``). The trained teaching model is built by ``servekit demo build``.
"""

from __future__ import annotations

import string
from pathlib import Path

VERSION = "tiny-1"
HIDDEN = 256
FFN = 512
LAYERS = 2
HEADS = 4
CONTEXT = 2048

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_WORDS = (
    "the and of to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part hello world server model token stream llama"
).split()

# gguf token types
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """SPM pieces, scores and types: specials, chat markers, 256 byte tokens, characters, word prefixes."""
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [_UNKNOWN, _CONTROL, _CONTROL, _CONTROL, _CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_BYTE] * 256
    pieces: list[str] = ["▁"] + list(string.ascii_letters + string.digits + string.punctuation)
    for word in _WORDS:
        for end in range(1, len(word) + 1):
            piece = "▁" + word[:end]
            if piece not in pieces:
                pieces.append(piece)
    tokens += pieces
    types += [_NORMAL] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [float(len(p)) - 100.0 for p in pieces]
    return tokens, scores, types


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """Write the random-weight model to ``path`` (F16, ~2 M parameters) and return it."""
    return write_random_gguf(path, seed=seed)


def write_random_gguf(path: Path, *, hidden: int = HIDDEN, ffn: int = FFN, layers: int = LAYERS, heads: int = HEADS,
                      seed: int = 0) -> Path:
    """Write a random-weight Llama of the given shape (F16, the tiny model's tokenizer) to ``path``.

    ``hidden=768, ffn=2048, layers=12`` gives ~86 M parameters: big enough for a CPU speed comparison."""
    import gguf
    import numpy as np

    tokens, scores, types = vocabulary()
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("servekit tiny demo (random weights)")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)  # <|im_end|> ends an assistant turn
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    vocab = len(tokens)
    writer.add_tensor("token_embd.weight", weight(vocab, hidden))
    for layer in range(layers):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", np.ones(hidden, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + name + ".weight", weight(hidden, hidden))
        writer.add_tensor(prefix + "ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(prefix + "ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(prefix + "ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(prefix + "ffn_down.weight", weight(hidden, ffn))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output.weight", weight(vocab, hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path
