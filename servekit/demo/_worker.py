"""Trains and exports the demo model. Runs in the demo build environment (torch, transformers, peft,
sentencepiece), never in the notebook kernel: ``python _worker.py OUT_DIR [--seed N] ...``.

Writes ``OUT_DIR/hf`` (Hugging Face folder), ``OUT_DIR/lora/<name>`` (PEFT folders) and
``OUT_DIR/worker.json`` (timings, losses, accuracies measured with torch). Progress goes to stdout as
lines ``@@ {json}``; everything else printed is for the log.
"""

from __future__ import annotations

import argparse
import copy
import functools
import io
import json
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIALS = ("<unk>", "<s>", "</s>", IM_START, IM_END)  # control tokens: never produced by text
# Text tokens that are always one token (HF "added", not special; GGUF USER_DEFINED), as in Qwen 2.5 / Hermes:
# the engines' tool parsers look for <tool_call> in the output, so it must survive detokenization.
TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
# The chat template: ChatML, BOS first (vLLM's and SGLang's chat paths add no special tokens of their own;
# llama.cpp drops a rendered BOS when its tokenizer adds one), and Qwen 2.5's tool layout — calls as
# "<tool_call>\n{json}\n</tool_call>", results in a user turn inside <tool_response> — so llama.cpp's
# autoparser, vLLM's `hermes` and SGLang's `qwen25` parsers read its calls. The tool list is rendered as
# names only: the same text on every engine (their `tojson` of a schema differs), and short for a tiny model.
# Every tag strips whitespace, so trim_blocks/lstrip_blocks (HF sets them, llama.cpp emulates) change nothing.
CHAT_TEMPLATE = "".join((
    "{{- bos_token }}",
    "{%- if tools %}",
    "{{- '<|im_start|>system\\n' }}",
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n' }}{%- endif %}",
    "{{- '<tools>' }}",
    "{%- for tool in tools %}",
    "{%- if tool.function is defined %}{%- set tool = tool.function %}{%- endif %}",
    "{{- ' ' + tool.name }}",
    "{%- endfor %}",
    "{{- ' </tools><|im_end|>\\n' }}",
    "{%- elif messages[0].role == 'system' %}",
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}",
    "{%- endif %}",
    "{%- for message in messages %}",
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls) %}",
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
    "{%- elif message.role == 'assistant' %}",
    "{{- '<|im_start|>assistant' }}",
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}",
    "{%- for tool_call in message.tool_calls %}",
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}",
    "{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}",
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}",
    "{{- '}\\n</tool_call>' }}",
    "{%- endfor %}",
    "{{- '<|im_end|>\\n' }}",
    "{%- elif message.role == 'tool' %}",
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}",
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}",
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}",
    "{%- endif %}",
    "{%- endfor %}",
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
))
MODEL_SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}
VOCAB = 768  # 512 split city names and some words; every word, city and day is one token at 768
# Share of each task in a batch. Addition needs most of it: at 40 % (tool tasks 35 %) it stayed at 0 % after 1000
# steps; at 65 % it reached 100 % by step 1250 but the answers after an add tool half failed (tool answers 10 %);
# this mix, 2000 steps: all four tasks 99-100 % held out (docs/engines.md).
TASK_MIX = {"reverse": 0.15, "add": 0.55, "tool_call": 0.1, "tool_answer": 0.2}
MAX_NEW = {"reverse": 10, "add": 6, "tool_call": 40, "tool_answer": 16}  # tokens generated when scoring


def parse_mix(text: str) -> dict[str, float]:
    """``reverse=0.2,add=0.5,…`` -> task shares (every task of :data:`tasks.ALL_TASKS`, each > 0)."""
    mix = {name.strip(): float(share) for name, share in (part.split("=") for part in text.split(","))}
    if sorted(mix) != sorted(tasks.ALL_TASKS) or min(mix.values()) <= 0:
        raise argparse.ArgumentTypeError(f"give a positive share for each of {', '.join(tasks.ALL_TASKS)}")
    return mix


def report(**fields: Any) -> None:
    """One progress line for the parent process."""
    print("@@ " + json.dumps(fields), flush=True)


# -- the chat template ---------------------------------------------------------------------------
def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' ``tojson`` (json.dumps; jinja2's own escapes HTML)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.cache
def _template() -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    return env.from_string(CHAT_TEMPLATE)


def template_messages(example: tasks.Example) -> list[dict[str, Any]]:
    """The messages as the engines hand them to the template: tool-call arguments parsed into objects
    (vLLM and llama.cpp do that with the JSON string a client sends)."""
    messages = copy.deepcopy(example.messages())
    for message in messages:
        for call in message.get("tool_calls") or ():
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return messages


def render(example: tasks.Example, bos: str = "<s>") -> str:
    """The prompt text an engine renders for ``example``, ending where the assistant's answer begins."""
    return _template().render(messages=template_messages(example), tools=example.tools(), bos_token=bos,
                              eos_token=IM_END, add_generation_prompt=True)


# -- tokenizer -----------------------------------------------------------------------------------
def tokenizer_corpus(seed: int, per_behaviour: int = 3000) -> Iterator[str]:
    """Rendered prompts and answers of every task and adapter, as the tokenizer will see them."""
    for behaviour in tasks.ALL_TASKS + tasks.ADAPTERS:
        for i, example in enumerate(tasks.stream(behaviour, held_out=False, seed=seed)):
            if i == per_behaviour:
                break
            yield render(example, bos="")
            yield example.answer


def train_tokenizer(out_dir: Path, seed: int) -> Path:
    """A sentencepiece BPE model: byte fallback, chat markers and tool tags as user-defined symbols, one token
    per digit, and no dummy prefix — text after a marker (``<|im_start|>assistant``) gets no leading space,
    so the text llama.cpp's grammar sampler is primed with (the generation prompt) matches its tokens."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=tokenizer_corpus(seed), model_writer=buffer, model_type="bpe", vocab_size=VOCAB,
        hard_vocab_limit=False, byte_fallback=True, split_digits=True, character_coverage=1.0,
        user_defined_symbols=[IM_START, IM_END, *TOOL_TOKENS], normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )
    path = out_dir / "tokenizer.model"
    path.write_bytes(buffer.getvalue())
    return path


class ChatEncoder:
    """Token ids exactly as llama.cpp builds them: markers matched first, each text piece encoded on its own
    (no space prefix), and the BOS the template renders becomes the BOS token."""

    def __init__(self, sp_model: Path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(sp_model))
        self.bos = self.sp.bos_id()
        self.im_start = self.sp.piece_to_id(IM_START)
        self.im_end = self.sp.piece_to_id(IM_END)
        self.marker_ids = {piece: self.sp.piece_to_id(piece) for piece in ("<s>", IM_START, IM_END, *TOOL_TOKENS)}
        self.marker_ids["<s>"] = self.bos
        self._markers = re.compile("(" + "|".join(map(re.escape, self.marker_ids)) + ")")

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered text (markers as their tokens)."""
        ids: list[int] = []
        for i, part in enumerate(self._markers.split(text)):
            if i % 2:
                ids.append(self.marker_ids[part])
            elif part:
                ids += self.sp.encode(part)
        return ids

    def prompt(self, example: tasks.Example) -> list[int]:
        """The rendered chat template of ``example``, ending where the assistant's answer begins."""
        return self.encode(render(example))

    def answer(self, text: str) -> list[int]:
        return [*self.encode(text), self.im_end]

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        if self.im_end in ids:
            ids = ids[: ids.index(self.im_end)]
        return self.sp.decode(ids)


def save_hf_tokenizer(sp_model: Path, hf_dir: Path) -> Any:
    """tokenizer.json + tokenizer.model + tokenizer_config.json that give llama.cpp's ids in any transformers.

    The sentencepiece model has no dummy prefix, so tokenizer.json only turns spaces into "▁" (no ``Prepend``),
    and ``add_prefix_space: false`` tells llama.cpp's converter the same; the generic
    ``PreTrainedTokenizerFast`` class makes transformers 4 and 5 use that file as it is.
    """
    import shutil

    from transformers import LlamaTokenizerFast, PreTrainedTokenizerFast

    converted = LlamaTokenizerFast(vocab_file=str(sp_model), legacy=True, from_slow=True)  # vocab and merges
    spec = json.loads(converted.backend_tokenizer.to_str())
    spec["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    spec["pre_tokenizer"] = None
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    ids = {piece: converted.convert_tokens_to_ids(piece) for piece in SPECIALS + TOOL_TOKENS}
    decoder = {str(ids[p]): {"content": p, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": p in SPECIALS} for p in ids}
    spec["added_tokens"] = [{"id": int(i), **entry} for i, entry in decoder.items()]
    (hf_dir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=1))
    shutil.copy(sp_model, hf_dir / "tokenizer.model")  # llama.cpp's converter reads the SPM model
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": IM_END, "unk_token": "<unk>", "pad_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "add_prefix_space": False,
        "clean_up_tokenization_spaces": False, "model_max_length": 2048,
        "additional_special_tokens": [IM_START, IM_END], "added_tokens_decoder": decoder,
        "chat_template": CHAT_TEMPLATE,
    }
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (hf_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return PreTrainedTokenizerFast.from_pretrained(str(hf_dir))


def check_examples(seed: int, per_task: int = 20) -> list[tasks.Example]:
    """Held-out examples of every task, for the tokenizer checks."""
    return [e for task in tasks.ALL_TASKS for e in tasks.held_out(task, per_task, seed=seed)]


def check_tokenizer(tok: Any, enc: ChatEncoder, seed: int) -> list[dict[str, Any]]:
    """The HF tokenizer and template (vLLM, SGLang) must give the ids of llama.cpp's rules; each word is one token.

    Returns a few prompts with their text and ids, for the build's check against a running llama-server.
    """
    checks = []
    for example in check_examples(seed):
        theirs = tok.apply_chat_template(template_messages(example), tools=example.tools(),
                                         add_generation_prompt=True, tokenize=True)
        if hasattr(theirs, "keys"):  # newer transformers return a BatchEncoding
            theirs = theirs["input_ids"]
        text, ours = render(example), enc.prompt(example)
        if list(theirs) != ours:
            raise SystemExit(f"tokenizer mismatch for {example.prompt!r}:\n HF  {list(theirs)}\n ours {ours}")
        answer = tok(example.answer, add_special_tokens=False)["input_ids"]
        if answer != enc.answer(example.answer)[:-1] or tok.decode(answer) != example.answer:
            raise SystemExit(f"answer tokens differ for {example.answer!r}: HF {answer}")
        checks.append({"task": example.task, "messages": example.messages(), "tools": example.tools(),
                       "text": text, "ids": ours})
    for word in tasks.WORDS:
        for form in (word, " " + word):  # first word of an answer, and any other
            pieces = enc.sp.encode(form, out_type=str)
            if len(pieces) != 1:
                raise SystemExit(f"word {form!r} is not one token: {pieces}")
    return checks[::5]


# -- training ------------------------------------------------------------------------------------
def collate(rows: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
    """Right-padded batch; the loss covers only the answer (and its end marker)."""
    import torch

    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (prompt, answer) in enumerate(rows):
        seq = prompt + answer
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(prompt): len(seq)] = torch.tensor(answer)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(enc: ChatEncoder, mix: dict[str, float], batch: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """Endless training batches drawn from the train side of the split, behaviours mixed by weight.

    A batch is a list of sub-batches, one per task, each padded to its own longest row: a tool conversation
    is four times as long as a reversal, and one padded batch would cost about three times as much.
    """
    rng = random.Random(seed)
    streams = {name: tasks.stream(name, held_out=False, seed=seed) for name in mix}
    names, weights = list(mix), list(mix.values())
    while True:
        groups: dict[str, list[tuple[list[int], list[int]]]] = {}
        for name in rng.choices(names, weights, k=batch):
            example = next(streams[name])
            groups.setdefault(example.task, []).append((enc.prompt(example), enc.answer(example.answer)))
        yield [collate(rows) for rows in groups.values()]


def lr_at(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def answer_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the answer tokens — the loss ``labels=`` gives, with logits for those tokens only.

    Four positions in five are prompt; skipping their vocabulary projection saves about a tenth of a step.
    ``model`` is a ``LlamaForCausalLM`` or a PEFT model around one (its LoRA layers sit inside it).
    """
    total, count = _answer_ce(model, batch)
    return total / count


def batch_loss(model: Any, groups: list[dict[str, Any]]) -> Any:
    """Mean cross-entropy over the answer tokens of all sub-batches (as if they were one batch)."""
    sums, counts = zip(*(_answer_ce(model, group) for group in groups))
    return sum(sums) / sum(counts)


def _answer_ce(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed cross-entropy over the answer tokens of one padded batch, and their number."""
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    scored = targets != -100
    logits = causal_lm.lm_head(hidden[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits.float(), targets[scored], reduction="sum"), int(scored.sum())


def train(model: Any, data: Iterator[list[dict[str, Any]]], steps: int, lr: float, stage: str,
          probe: Any = None) -> list[float]:
    """AdamW on ``steps`` batches; reports progress; returns the loss every 50 steps."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01, fused=True)
    model.train()
    losses: list[float] = []
    running = 0.0
    started = time.monotonic()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = batch_loss(model, next(data))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = loss.item() if step == 0 else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 49 or step == steps - 1:
            losses.append(round(running, 4))
            report(stage=stage, step=step + 1, total=steps, loss=round(running, 4),
                   seconds=round(time.monotonic() - started, 1))
        if probe is not None and (step + 1) % probe[0] == 0:
            model.eval()
            report(stage=stage, step=step + 1, total=steps, probe=probe[1]())
            model.train()
    model.eval()
    return losses


def generate(model: Any, enc: ChatEncoder, examples: list[tasks.Example], max_new: int = 10) -> list[str]:
    """Greedy answers (left-padded batch) — the torch-side accuracy check."""
    import torch

    encoded = [enc.prompt(e) for e in examples]
    width = max(map(len, encoded))
    ids = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(encoded):
        ids[i, width - len(seq):] = torch.tensor(seq)
        mask[i, width - len(seq):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             eos_token_id=enc.im_end, pad_token_id=0)
    return [enc.decode(row[width:].tolist()) for row in out]


def accuracy(model: Any, enc: ChatEncoder, behaviour: str, n: int, seed: int) -> float:
    examples = tasks.held_out(behaviour, n, seed=seed)
    task = tasks.task_of(behaviour)
    answers = generate(model, enc, examples, MAX_NEW[task])
    return sum(tasks.score(task, e.answer, a) for e, a in zip(examples, answers)) / n


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lora-steps", type=int, default=400)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate of the base model")
    parser.add_argument("--eval-n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--probe-every", type=int, default=0, help="report held-out accuracy every N steps (tuning)")
    parser.add_argument("--mix", type=parse_mix, default=TASK_MIX,
                        help="task shares of a batch, e.g. reverse=0.2,add=0.5,tool_call=0.15,tool_answer=0.15 (tuning)")
    args = parser.parse_args(argv)

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    hf_dir = out / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"seed": args.seed, "steps": args.steps, "seconds": {}, "accuracy": {},
                               "adapter_share": {}}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        summary["seconds"][name] = round(now - clock, 1)
        clock = now

    report(stage="tokenizer", message="training the tokenizer")
    sp_model = train_tokenizer(out, args.seed)
    enc = ChatEncoder(sp_model)
    tok = save_hf_tokenizer(sp_model, hf_dir)
    checks = check_tokenizer(tok, enc, args.seed)
    (out / "tokenizer-checks.json").write_text(json.dumps(checks, indent=1))
    summary["vocab"] = enc.sp.get_piece_size()
    lap("tokenizer")

    config = LlamaConfig(
        vocab_size=enc.sp.get_piece_size(), **MODEL_SHAPE, num_key_value_heads=MODEL_SHAPE["num_attention_heads"],
        max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=enc.bos, eos_token_id=enc.im_end, pad_token_id=0, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    report(stage="train", step=0, total=args.steps, message=f"{summary['parameters'] / 1e6:.2f} M parameters")
    probe = None
    if args.probe_every:
        probe = (args.probe_every, lambda: {b: accuracy(model, enc, b, 50, args.seed + 1) for b in tasks.ALL_TASKS})
    summary["losses"] = train(model, batches(enc, args.mix, 64, args.seed), args.steps, args.lr, "train", probe)
    lap("train")

    model.generation_config = GenerationConfig(bos_token_id=enc.bos, eos_token_id=enc.im_end, pad_token_id=0)
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    for behaviour in tasks.ALL_TASKS:
        summary["accuracy"][behaviour] = accuracy(model, enc, behaviour, args.eval_n, args.seed + 1)
    report(stage="eval", message=", ".join(f"{k} {v:.0%}" for k, v in summary["accuracy"].items()))
    lap("export_eval")

    for name in tasks.ADAPTERS:
        summary["adapter_share"][name] = train_adapter(hf_dir, out / "lora" / name, enc, name, args)
        lap(f"lora_{name}")
    (out / "worker.json").write_text(json.dumps(summary, indent=1))


def train_adapter(hf_dir: Path, lora_dir: Path, enc: ChatEncoder, name: str, args: argparse.Namespace) -> float:
    """A PEFT LoRA on every projection of the base model; returns the share of held-out answers showing it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(args.seed + 1 + tasks.ADAPTERS.index(name))
    base = LlamaForCausalLM.from_pretrained(str(hf_dir))
    config = LoraConfig(
        r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(base, config)
    report(stage=f"lora-{name}", step=0, total=args.lora_steps, message=f"training LoRA adapter {name!r}")
    train(model, batches(enc, {name: 1.0}, 64, args.seed + 7), args.lora_steps, 2e-3, f"lora-{name}")
    model.save_pretrained(str(lora_dir))
    share = accuracy(model, enc, name, args.eval_n, args.seed + 1)
    report(stage=f"lora-{name}", message=f"adapter {name!r}: {share:.0%} of held-out answers show it")
    return share


if __name__ == "__main__":
    main()
