"""The transformers backend on tiny random models built from configs (nothing downloaded): a LLaVA-architecture
image-text-to-text model for captions, a Llama causal LM for descriptions, both with a BPE tokenizer trained here."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_image

from edgekd.cli import cli
from edgekd.data.captions import load_captions

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %} </s>{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
WORDS = ("a photo of a red bird with a long beak on a green branch near the water , small dog runs in grass . "
         "describe the object colour shape parts and its surroundings what distinguishes it")


def tiny_tokenizer():
    """A byte-level BPE tokenizer (~300 tokens) with pad/eos/bos/<image> and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "</s>", "<s>", "<unk>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([WORDS] * 4, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                bos_token="<s>", unk_token="<unk>",
                                                extra_special_tokens={"image_token": "<image>"})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _text_config(tok):
    return transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                                    eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)


def save_tiny_vlm(path: Path, silent: bool = False) -> Path:
    """A random LLaVA (CLIP-ViT 32px/16 + 1-layer Llama) with its processor, saved like a hub checkpoint.
    `silent`: its generation config suppresses every token but <pad> and </s>: empty answers, greedy or sampled."""
    tok = tiny_tokenizer()
    proc = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32,
                                                                                               "width": 32}),
        tokenizer=tok, patch_size=16, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE)
    cfg = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                    num_attention_heads=2, image_size=32, patch_size=16),
        text_config=_text_config(tok), image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(cfg)
    if silent:
        model.generation_config.suppress_tokens = [i for i in range(len(tok))
                                                   if i not in (tok.pad_token_id, tok.eos_token_id)]
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def save_tiny_llm(path: Path) -> Path:
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(_text_config(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return save_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


def _images(root: Path) -> Path:
    for ci, name in enumerate(("bird", "dog")):
        for i in range(3):
            make_image(root / name / f"{i}.png", (200 * ci, 120, 60 * i), size=(28 + 6 * i, 24), seed=ci * 10 + i)
    return root


def test_backend_generates_batched_text_through_the_real_path(tiny_vlm):
    from PIL import Image

    from edgekd.textgen.backend import Request
    from edgekd.textgen.factory import create_backend

    b = create_backend(str(tiny_vlm), vision=True, device="cpu", batch_size=4, max_new_tokens=6)
    reqs = [Request("describe the bird", Image.new("RGB", (40 + 9 * i, 30), (50 * i, 0, 0))) for i in range(3)]
    gens = b.generate(reqs)
    alone = b.generate(reqs[1:2])[0]
    assert len(gens) == 3 and all(isinstance(g.text, str) for g in gens)
    assert gens[1].text == alone.text  # left padding: a batch answers like single requests
    assert all(g.prompt_tokens > 4 and 1 <= g.output_tokens <= 6 for g in gens)  # image tokens are counted
    assert b.identity() == {"backend": "transformers", "model": str(tiny_vlm), "max_new_tokens": 6}


def test_captions_cli_with_a_local_model(tiny_vlm, tmp_path):
    data, out = _images(tmp_path / "imgs"), tmp_path / "captions.jsonl"
    args = ["captions", "--data", str(data), "--out", str(out), "--model", str(tiny_vlm), "--device", "cpu",
            "--batch-size", "4", "--max-new-tokens", "8", "--with-label", "--per-image", "2", "--no-progress"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    caps = load_captions(out, [p.relative_to(data).as_posix() for p in data.rglob("*.png")])
    assert sum(bool(c) for c in caps.values()) >= 5  # random weights still write text (rarely only specials)
    assert all(len(c) <= 2 and all(x.strip() for x in c) for c in caps.values())


def test_empty_generations_are_retried_then_missing(tmp_path):
    model = save_tiny_vlm(tmp_path / "silent", silent=True)
    data, out = _images(tmp_path / "imgs"), tmp_path / "captions.jsonl"
    r = CliRunner().invoke(cli, ["captions", "--data", str(data), "--out", str(out), "--model", str(model),
                                 "--device", "cpu", "--max-new-tokens", "3", "--empty-retries", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "0 images captioned, 6 missing" in r.output and "6 image(s) without caption" in r.output
    assert all(c == [] for c in load_captions(out).values())


def test_model_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["captions", "--data", str(_images(tmp_path / "i")), "--out", str(tmp_path / "c"),
                                 "--model", str(tmp_path / "no-such-model"), "--device", "cpu"])
    assert r.exit_code == 1 and "--model" in r.output and "cannot load" in r.output, r.output
    r = CliRunner().invoke(cli, ["captions", "--data", str(tmp_path / "i"), "--out", str(tmp_path / "c"),
                                 "--model", "x", "--device", "cuda:7"])
    assert r.exit_code == 1 and "--device cuda:7" in r.output
