"""Adapt GPT-2 into a masked diffusion LM on a `datasets` text dataset (DiffuGPT's recipe), optionally fine-tune it on
prompt/completion pairs (DiffuLLaMA's SFT stage), then decode with variable length.

On your machine (downloads `gpt2` and WikiText-2 from the Hub; DiffuGPT used ~30B tokens and a GPU, so expect a
toy-quality model from this):

    python examples/adapt_gpt2.py --model gpt2 --dataset Salesforce/wikitext --dataset-config wikitext-2-raw-v1 \
        --max-length 512 --batch-size 8 --max-steps 5000 --learning-rate 3e-4 --anneal-steps 1000 \
        --output-dir runs/diffugpt2

Offline, in about a minute on this project's 2-core CPU (`--tiny`): the script first makes its own "pretrained
GPT-2", a tiny GPT-2 with a character tokenizer trained autoregressively on a toy task (sort the digits:
`sort 5039=0359`), saved to a local directory like a Hub checkpoint, and writes the task as a local text file and a
local prompt/completion JSONL. Then it runs the recipe above on those local paths (adaptation on the text file,
then SFT on the JSONL), and compares the held-out accuracy of the AR model (greedy `generate`) with that of the
diffusion model (`diffusion_generate`, length predicted from p(EOS)):

    python examples/adapt_gpt2.py --tiny

The model is saved to `<output-dir>/model` and loads anywhere with
`AutoModel.from_pretrained(path, trust_remote_code=True)`.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments
from hf_dlm.data import load_training_dataset


def train_stage(model: DiffusionLM, dataset, args, name: str, max_steps: int, **overrides) -> None:
    """One DiffusionTrainer run; the data format (text / prompt-completion) is detected from the columns."""
    training_args = DiffusionTrainingArguments(
        output_dir=str(Path(args.output_dir) / name),
        max_length=args.max_length,  # text: documents + EOS packed into rows of this length
        per_device_train_batch_size=args.batch_size,
        max_steps=max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, max_steps // 20),
        logging_steps=max(1, max_steps // 5),
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=args.tiny,
        **overrides,
    )
    trainer = DiffusionTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=model.tokenizer)
    trainer.train()


def adapt(args) -> DiffusionLM:
    """The recipe: causal LM -> DiffusionLM (mask token added, attention bidirectional) -> DiffusionTrainer on text
    (with DiffuGPT's attention annealing) -> optional SFT on prompt/completion pairs (EOS-filled answers)."""
    model = DiffusionLM.from_causal_lm(args.model)  # a Hub id or a local directory
    text = load_training_dataset(args.dataset, args.dataset_config, split="train")
    train_stage(model, text, args, "adaptation", args.max_steps, anneal_steps=args.anneal_steps)
    if args.sft_dataset:
        pairs = load_training_dataset(args.sft_dataset, split="train")
        train_stage(model, pairs, args, "sft", args.sft_steps)
    model.save_pretrained(str(Path(args.output_dir) / "model"))
    return model.eval()


# --------------------------------------------------------------------------- the offline, tiny case
def sort_lines(count: int, rng: random.Random) -> list[str]:
    lines = set()
    while len(lines) < count:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 8)))
        lines.add(f"sort {digits}={''.join(sorted(digits))}")
    return sorted(lines)


def make_tiny_pretrained_gpt2(directory: Path, corpus: list[str], steps: int, seed: int) -> None:
    """A stand-in for the `gpt2` checkpoint: tiny GPT-2 trained as a causal LM on the toy corpus, saved locally."""
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    model = tiny_causal_lm("gpt2", vocab_size=len(tokenizer), hidden=64, layers=2, heads=4, positions=128)
    stream = torch.tensor([t for line in corpus for t in tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    batch, length = 32, 48
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - length, (batch,), generator=generator)
        x = torch.stack([stream[s : s + length] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    print(f"AR pretraining: {steps} steps, final loss {loss.item():.3f}")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def answer_text(tokenizer, ids: list[int]) -> str:
    """The characters before the first EOS (the char tokenizer's `decode` would put spaces between them)."""
    tokens = tokenizer.convert_ids_to_tokens(ids)
    eos = tokenizer.eos_token
    return "".join(tokens[: tokens.index(eos)] if eos in tokens else tokens)


def accuracy(answers: list[str], lines: list[str]) -> float:
    return sum(a == line.split("=")[1] for a, line in zip(answers, lines)) / len(lines)


@torch.no_grad()
def answer_ar(directory: Path, prompts: list[str]) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    answers = []
    for prompt in prompts:  # one at a time: the char tokenizer has no pad token
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.eos_token_id)
        answers.append(answer_text(tokenizer, out[0, ids.shape[1] :].tolist()))
    return answers


@torch.no_grad()
def answer_diffusion(model: DiffusionLM, prompts: list[str]) -> tuple[list[str], int]:
    tokenizer = model.tokenizer
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.diffusion_generate(**encoded, max_new_tokens=10, block_length=10, length_strategy="predict",
                                   threshold=0.9, return_dict_in_generate=True)
    return [answer_text(tokenizer, row) for row in out.sequences[:, encoded["input_ids"].shape[1] :].tolist()], out.nfe


def run_tiny(args) -> None:
    started = time.time()
    work = Path(args.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    lines = sort_lines(args.tiny_examples + 200, rng)
    rng.shuffle(lines)
    train, held_out = lines[:-200], lines[-200:]
    (work / "train.txt").write_text("\n".join(train) + "\n")  # a `text` dataset: one document per line
    with open(work / "train.jsonl", "w") as f:  # the same task as prompt/completion pairs
        for line in train:
            prompt, completion = line.split("=")
            f.write(json.dumps({"prompt": prompt + "=", "completion": completion}) + "\n")
    make_tiny_pretrained_gpt2(work / "tiny-gpt2", train, args.ar_steps, args.seed)

    args.model, args.dataset, args.dataset_config = str(work / "tiny-gpt2"), str(work / "train.txt"), None
    args.sft_dataset = str(work / "train.jsonl")
    model = adapt(args)

    prompts = [line.split("=")[0] + "=" for line in held_out]
    ar = accuracy(answer_ar(work / "tiny-gpt2", prompts), held_out)
    answers, nfe = answer_diffusion(model, prompts)
    diffusion = accuracy(answers, held_out)
    for prompt, answer in list(zip(prompts, answers))[:3]:
        print(f"  {prompt}{answer}")
    print(f"held-out accuracy on {len(prompts)} prompts: AR {ar:.1%}, diffusion {diffusion:.1%} "
          f"(one batch, {nfe} forwards)")
    print(f"total {time.time() - started:.0f}s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="offline toy run: local tiny GPT-2 + local data files")
    parser.add_argument("--model", default="gpt2", help="causal LM to adapt: Hub id or local directory")
    parser.add_argument("--dataset", default="Salesforce/wikitext", help="text dataset: Hub id, local file or folder")
    parser.add_argument("--dataset-config", default="wikitext-2-raw-v1")
    parser.add_argument("--sft-dataset", default=None, help="optional prompt/completion (or messages) dataset")
    parser.add_argument("--output-dir", default="runs/adapt_gpt2")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=1000, help="adaptation steps")
    parser.add_argument("--sft-steps", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="DiffuGPT: 3e-4")
    parser.add_argument("--anneal-steps", type=int, default=0, help="DiffuGPT: 10000 on its full run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ar-steps", type=int, default=400, help="--tiny: AR pretraining steps of the stand-in")
    parser.add_argument("--tiny-examples", type=int, default=4000, help="--tiny: training lines of the toy task")
    args = parser.parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)  # a tiny model runs fastest on one thread
        defaults = dict(max_length=48, batch_size=32, max_steps=150, sft_steps=400, learning_rate=3e-3,
                        anneal_steps=50, output_dir="runs/adapt_gpt2_tiny")
        for name, value in defaults.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
        run_tiny(args)
    else:
        model = adapt(args)
        tokenizer = model.tokenizer
        tokenizer.padding_side = "left"
        prompt = tokenizer(["The history of the city"], return_tensors="pt")
        print(tokenizer.decode(model.diffusion_generate(**prompt, max_new_tokens=64)[0]))


if __name__ == "__main__":
    main()
