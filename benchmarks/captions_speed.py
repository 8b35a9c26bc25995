"""Captioning speed of `edgekd captions` (transformers backend) on this machine, and the tokens a hosted endpoint
would bill per image.

The model is an Idefics3 (SmolVLM) architecture at the size of SmolVLM-256M-Instruct -- SigLIP-B/16 at 512 px
(12 layers, 768 wide) + a SmolLM2-135M text tower (30 layers, 576 wide, 9 heads / 3 KV heads), pixel shuffle x4 so
one 512 px tile is 64 image tokens -- built from its config with RANDOM weights (no download; speed does not depend
on the weights; the text it writes is noise). The tokenizer is a byte-level BPE trained here on a few sentences, so
the text part of the prompt token counts is approximate; the image token counts are exact for the processor
settings recorded. Generation always runs to --max-new-tokens (random weights never stop early), so output tokens
are that cap: an upper bound for a real model.

    python benchmarks/captions_speed.py            # ~3-5 min on 2 CPU cores; writes benchmarks/results/captions/
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edgekd.bench.env import collect_environment
from edgekd.textgen.backend import Request
from edgekd.textgen.hf import TransformersBackend
from edgekd.textgen.prompts import CAPTION_PROMPTS

OUT = Path(__file__).parent / "results" / "captions"
IMAGE_SEQ_LEN = 64  # (512 / 16)^2 / 4^2
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>", "<global-img>",
           "<end_of_utterance>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
CHAT = ("<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %} {{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n"
        "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


def build_model(path: Path, split: bool) -> Path:
    """Save a random SmolVLM-256M-sized Idefics3 model + processor to `path` (what a hub checkpoint looks like)."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    corpus = list(CAPTION_PROMPTS) + ["a small red bird with a long beak sits on a green branch near the water"]
    tok.train_from_iterator(corpus * 20, trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIAL,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<end_of_utterance>", pad_token="<|im_end|>",
                                      bos_token="<|im_start|>", unk_token="<|endoftext|>",
                                      extra_special_tokens={"image_token": "<image>"})
    size = {"longest_edge": 2048 if split else 512}
    ip = tf.Idefics3ImageProcessor(do_image_splitting=split, size=size, max_image_size={"longest_edge": 512})
    proc = tf.Idefics3Processor(image_processor=ip, tokenizer=fast, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT)
    cfg = tf.Idefics3Config(
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 512, "patch_size": 16},
        text_config={"model_type": "llama", "vocab_size": 49280, "hidden_size": 576, "intermediate_size": 1536,
                     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "tie_word_embeddings": True, "pad_token_id": fast.pad_token_id,
                     "eos_token_id": fast.eos_token_id},
        scale_factor=4, image_token_id=fast.convert_tokens_to_ids("<image>"), tie_word_embeddings=True)
    torch.manual_seed(0)
    model = tf.Idefics3ForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = None  # run to max_new_tokens: the cost of a full-length caption
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def images(n: int, side: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (side[1], side[0], 3), dtype=np.uint8)) for _ in range(n)]


def measure(model_dir: Path, n: int, batch: int, max_new: int, side: tuple[int, int]) -> dict:
    """images/s of TransformersBackend.generate over `n` images (one warm-up batch first), and token counts."""
    import torch

    b = TransformersBackend(str(model_dir), vision=True, device="cpu", batch_size=batch, max_new_tokens=max_new)
    reqs = [Request(CAPTION_PROMPTS[0], im) for im in images(n, side)]
    b.generate(reqs[:1])  # warm-up
    t0 = time.perf_counter()
    gens = [g for s in range(0, n, batch) for g in b.generate(reqs[s:s + batch])]
    seconds = time.perf_counter() - t0
    n_params = sum(p.numel() for p in b.model.parameters())
    return {"images": n, "batch": batch, "max_new_tokens": max_new, "image_size": list(side),
            "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 3),
            "s_per_image": round(seconds / n, 2), "torch_threads": torch.get_num_threads(),
            "params_millions": round(n_params / 1e6, 1),
            "prompt_tokens_per_image": gens[0].prompt_tokens, "output_tokens_per_image": gens[0].output_tokens}


def token_counts(model_dir: Path, side: tuple[int, int]) -> dict:
    """Prompt tokens of one caption request (image tokens counted from the processor's expansion)."""
    import transformers as tf

    proc = tf.AutoProcessor.from_pretrained(model_dir)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPTS[0]}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = proc(text=[text], images=[images(1, side)], return_tensors="np")["input_ids"][0]
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    n_image = int((ids == image_id).sum())
    return {"image_size": list(side), "prompt_tokens": int(len(ids)), "image_tokens": n_image,
            "other_tokens": int(len(ids)) - n_image}


def to_markdown(res: dict) -> str:
    cpu = res["environment"]["cpu"]
    lines = [f"# Captioning speed and billed tokens ({res['model']['name']}, random weights)", "",
             f"Host: {cpu.get('model')} ({cpu.get('cores_logical', '?')} logical cores, oneDNN ISA "
             f"{cpu.get('onednn_isa')}), torch threads "
             f"{res['speed'][0]['torch_threads']}, load average at the end of the run "
             f"{res['environment']['load_avg']}; "
             f"created {res['environment']['created']}.", "",
             "| image splitting | image px | batch | max new tokens | images/s | s/image | prompt tokens/image |",
             "|---|---|---|---|---|---|---|"]
    for r in res["speed"]:
        lines.append(f"| {r['splitting']} | {r['image_size'][0]}x{r['image_size'][1]} | {r['batch']} | "
                     f"{r['max_new_tokens']} | {r['images_per_s']} | {r['s_per_image']} | "
                     f"{r['prompt_tokens_per_image']} |")
    lines += ["", "Prompt tokens per caption request (what an endpoint serving this processor bills as input; output "
              "is at most --max-new-tokens):", "",
              "| image splitting | image px | prompt tokens | of which image tokens | text/template tokens (approx.) |",
              "|---|---|---|---|---|"]
    for t in res["tokens"]:
        lines.append(f"| {t['splitting']} | {t['image_size'][0]}x{t['image_size'][1]} | {t['prompt_tokens']} | "
                     f"{t['image_tokens']} | {t['other_tokens']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    res = {"model": {"name": "Idefics3 at SmolVLM-256M size", "weights": "random"}, "speed": [], "tokens": []}
    with tempfile.TemporaryDirectory() as tmp:
        for split in (False, True):
            d = build_model(Path(tmp) / f"split-{split}", split)
            for side in ((32, 32), (640, 480)):
                res["tokens"].append({"splitting": split, **token_counts(d, side)})
            if not split:  # splitting multiplies the vision work by up to 17 tiles: too slow to time on 2 cores
                r = measure(d, args.images, args.batch, args.max_new_tokens, (640, 480))
                res["speed"].append({"splitting": split, **r})
    res["environment"] = collect_environment([res["speed"][0]["torch_threads"]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "captions_speed.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "captions_speed.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
