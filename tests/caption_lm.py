"""A tiny causal LM for the captioning tests: a word-level tokenizer over the given captions and a 2-layer
Llama (hidden 32) trained on them for a few seconds, saved with ``save_pretrained`` to a folder.

The real SmolLM2 (135M) takes ~20 s to load and ~1 token/s on a busy 2-core machine; it runs only in
``anybind bench --task captioning``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def build_tiny_lm(captions: list[str], out: Path, *, steps: int = 500, seed: int = 0) -> Path:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for c in captions:
        for w in words(c):
            vocab.setdefault(w, len(vocab))
    vocab["\n"] = len(vocab)  # a line-break token, for the stop rule
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(" +"), behavior="removed"),
                                                pre_tokenizers.Split(Regex(r"\w+|[^\w ]"), behavior="isolated")])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    # pretrain on each caption said twice: a language model that knows how captions go and has learnt to attend
    # to (and copy) earlier content, which a prefix of soft tokens can then steer
    seqs = [[2] + 2 * tok(c, add_special_tokens=False)["input_ids"] + [3] for c in captions]
    L = max(map(len, seqs))
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only contend on a shared 2-core machine
    try:
        for _ in range(steps):
            idx = torch.randperm(len(seqs), generator=g)[:32]
            loss = model(input_ids=ids[idx], labels=labels[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
