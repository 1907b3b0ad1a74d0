"""Writes a tiny random-weight Llama model that vLLM can serve, with no hub and no download.

    python llm_model.py DIRECTORY [--seed N]

Run with the vLLM virtualenv's python (hack/vllm_env.py): it has torch, transformers and
tokenizers, which the project's own virtualenv does not. The same seed gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# Nothing may be fetched: set before transformers is imported, which reads them once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
# A role marker, the message, the end-of-sequence token; the prompt ends where the answer starts.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Enough text for a byte-level BPE vocabulary of a few hundred tokens.
CORPUS = [
    "The model server answers requests for predictions and reports its own metrics.",
    "A canary receives a small share of the traffic until its analysis passes.",
    "Streaming sends each token as soon as it is generated, one event at a time.",
    "Tokens per second, time to first token and inter-token latency are measured.",
    "The quick brown fox jumps over the lazy dog while the cluster scales out.",
    "Hello, how are you today? I am fine, thank you. What can I do for you?",
    "Kubernetes schedules pods on nodes; a deployment keeps the replicas running.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000",
]
VOCAB_SIZE = 512


def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def model(tok: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        # vLLM's CPU attention supports head sizes 32, 64, 80, ...: 64 / 2 = 32.
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    return LlamaForCausalLM(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tok = tokenizer()
    tok.save_pretrained(args.directory)
    model(tok, args.seed).save_pretrained(args.directory)
    # transformers 5 keeps the template in chat_template.jinja; servers on older transformers
    # read it from tokenizer_config.json, where 4.x also expects the fast tokenizer's class.
    config_path = args.directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(chat_template=CHAT_TEMPLATE, tokenizer_class="PreTrainedTokenizerFast")
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # safetensors writes its file 0600: a server running as another user must read it.
    for path in args.directory.iterdir():
        path.chmod(0o644)


if __name__ == "__main__":
    main()
