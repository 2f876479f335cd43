"""Write a tiny random Llama (or Mixtral) plus a locally trained tokenizer, for `vllm serve`.

    /opt/vllm-hpc/testenv/bin/python tests/cluster/make_tiny_model.py OUTDIR
    /opt/vllm-hpc/testenv/bin/python tests/cluster/make_tiny_model.py --moe OUTDIR
    /opt/vllm-hpc/testenv/bin/python tests/cluster/make_tiny_model.py --layers 3 OUTDIR

No model hub is reachable from the test machines, so the tests make their own model:
hidden 128, 2 layers, 4 heads, 2 KV heads, vocabulary 2048, bf16 (~2 MB), a byte-level
BPE tokenizer trained on text this script generates, and a chat template. Everything is
seeded, so the same OUTDIR content (and the same temperature-0 outputs) come out every time.
With --moe the model is a Mixtral-style mixture of experts of the same size (4 experts per
layer, 2 active per token), for the expert-parallel tests. --layers N: N layers instead of
2 (pipeline parallelism over N nodes needs N layers).
Needs `torch`, `transformers` and `tokenizers` (the test environment has them).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 1234
VOCAB_SIZE = 2048
TOKEN_ROLES = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
BASE_TEXT = """\
The cluster has one login node and several compute nodes. Each compute node has four GPUs.
A job asks the scheduler for nodes, waits in the queue, runs, and writes its output.
The leader starts the server; the workers join it and wait for requests.
Hello! How are you today? I am fine, thank you. What is the capital of France? Paris.
Count with me: one, two, three, four, five, six, seven, eight, nine, ten.
"""


def training_text(seed: int = SEED, words: int = 60_000) -> list[str]:
    """Deterministic pseudo-English: the base text plus seeded words made of syllables."""
    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w"]
    onsets += ["st", "tr", "pl", "gr", "ch", "sh", "th", "br", "cl", "fr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "rk", "x"]
    lexicon = [
        "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
            for _ in range(rng.randint(1, 3))
        )
        for _ in range(4000)
    ]
    lines = BASE_TEXT.splitlines() * 50
    line: list[str] = []
    for i in range(words):
        word = rng.choice(lexicon)
        line.append(word.capitalize() if not line else word)
        if rng.random() < 0.08 or len(line) > 14:
            lines.append(" ".join(line) + rng.choice([".", "!", "?", ",", ";"]))
            line = []
        if i % 997 == 0:
            lines.append(str(rng.randint(0, 10**6)))
    return lines


def build_tokenizer(out: Path) -> None:
    from tokenizers import (  # type: ignore[import-not-found, unused-ignore]
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import (  # type: ignore[import-not-found, unused-ignore]
        PreTrainedTokenizerFast,
    )

    tok = Tokenizer(models.BPE(unk_token=TOKEN_ROLES["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    size = tok.get_vocab_size()
    if size != VOCAB_SIZE:
        raise SystemExit(f"tokenizer vocabulary is {size}, expected {VOCAB_SIZE}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **TOKEN_ROLES,
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


SHAPE = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 3,
    "tie_word_embeddings": False,
}
MOE_SHAPE = {"num_local_experts": 4, "num_experts_per_tok": 2}


def build_model(out: Path, moe: bool, layers: int = 2) -> None:
    import torch  # type: ignore[import-not-found, unused-ignore]
    from transformers import (  # type: ignore[import-not-found, unused-ignore]
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        MixtralConfig,
        MixtralForCausalLM,
    )

    torch.manual_seed(SEED)
    shape = {**SHAPE, "num_hidden_layers": layers}
    if moe:
        model = MixtralForCausalLM(MixtralConfig(**shape, **MOE_SHAPE))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    model = model.to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=3).save_pretrained(str(out))
    # transformers records the dtype under a version-dependent key; vLLM reads either.
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["torch_dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    args = list(argv)
    moe = "--moe" in args
    if moe:
        args.remove("--moe")
    layers = 2
    if args[:1] == ["--layers"] and len(args) > 1 and args[1].isdigit():
        layers, args = int(args[1]), args[2:]
    if len(args) != 1 or args[0].startswith("-") or layers < 1:
        print("usage: make_tiny_model.py [--moe] [--layers N] OUTDIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    build_model(out, moe, layers)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
