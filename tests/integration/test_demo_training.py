"""The training worker's own pieces, run in the demo build environment (torch, transformers, peft)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from servekit.demo import builder

WORKER_DIR = Path(builder.__file__).parent  # _worker.py and tasks.py

LOSS_CHECK = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
import _worker
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2)
rows = [([1, 5, 6, 7], [9, 10, 2]), ([1, 8, 3], [11, 2]), ([1, 4, 4, 4, 4, 5], [12, 13, 14, 2])]
batch = _worker.collate(rows)
base = LlamaForCausalLM(config)
lora = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
for model in (base, lora):
    theirs, ours = model(**batch).loss, _worker.answer_loss(model, batch)
    assert torch.allclose(theirs, ours, rtol=1e-5), (theirs.item(), ours.item())
    ours.backward()
print("losses equal")
"""


@pytest.mark.integration
def test_answer_only_loss_equals_the_models_own_loss():
    """The worker scores only answer tokens; its loss must be the one ``labels=`` gives, for base and LoRA."""
    python = builder.build_python()
    done = subprocess.run([str(python), "-c", LOSS_CHECK, str(WORKER_DIR)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "losses equal" in done.stdout
