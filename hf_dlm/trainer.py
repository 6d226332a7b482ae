"""`DiffusionTrainer`: adapt or fine-tune a causal LM into a masked diffusion LM on
the `transformers.Trainer` stack (LoRA or full, gradient accumulation, DDP through torchrun / accelerate, resume).

The shape follows TRL's `SFTConfig` / `SFTTrainer` (huggingface/trl): the arguments live in `training_args.py`
(`DiffusionTrainingArguments`, whose field docs are the user docs), and this `Trainer` subclass that tokenises TRL-format datasets (`hf_dlm.data`) and replaces
the loss with the masked-diffusion objective (`hf_dlm.noise`):

    DiffuGPT / DiffuLLaMA (Gong et al. 2024, github.com/HKUNLP/DiffuLLaMA): adaptation of AR weights, attention
        annealing, t in [1e-3, 1], 1/t weights; SFT with LoRA on all linear layers plus trainable embeddings.
    LLaDA (Nie et al. 2025, github.com/ML-GSAI/LLaDA): per-token ELBO normalisation, prompt never noised, answers
        padded with EOS that carry loss.
    dLLM-Var (github.com/maomaocun/dLLM-Var): t in [0.1, 0.9], EOS always masked, multi-sample packing.
    MDLM (Sahoo et al. 2024, github.com/kuleshov-group/mdlm): antithetic noise levels, the ELBO.
    LLaDA 2.0's CAP (arXiv 2512.15745) / dParallel (github.com/czg1225/dParallel): the optional confidence term
        (`confidence_loss_weight`), entropy minimisation on the masked positions already predicted correctly.
    I-DLM (arXiv 2604.11035) / TiDAR (arXiv 2511.08923): gated drafters (`drafter="gated_lora"`) train their adapter
        to draft: every cut of an answer in one forward (`hf_dlm.draft_rows`), CE at the masks.

Run it with `hf-dlm train --help` (hf_dlm/cli/train.py) or from Python; docs/training.md has the guide.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import fields
from pathlib import Path

import torch
from transformers import (
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
)

from .checks import check_before_training
from .configuration_dlm import DiffusionLMConfig
from .data import (
    MODEL_COLUMNS,
    DataCollatorForDiffusion,
    block_rows,
    infer_format,
    left_padded,
    prepare_dataset,
    random_fill_lengths,
)
from .draft_rows import IGNORE, draft_cuts, draft_rows
from .loading import load_diffusion_lm
from .modeling_dlm import DiffusionLM, unwrap_peft
from .noise import (
    DiffusionNoise,
    NoisyBatch,
    complement,
    confidence_loss,
    diffusion_loss,
    maskable_positions,
    seeded_generator,
    stack_noisy,
)
from .training_args import DEFAULT_AR_LOSS_WEIGHT, DEFAULT_BLOCK_ROWS, DiffusionTrainingArguments
from .two_stream import cut_after_eos_block, two_stream_rows

# The batch key marking the rows that `all_blocks` shows as two-stream rows (set in get_batch_samples).
ALL_BLOCKS_KEY = "all_blocks"

logger = logging.getLogger(__name__)


class DiffusionSampleCallback(TrainerCallback):
    """Decode a few prompts with `diffusion_generate` during training and log them.

    Runs on the main process at every evaluation, or every `every_n_steps` steps. Samples are kept in `samples`
    and appended to `<output_dir>/samples.jsonl`. Prompts are used as given (apply a chat template yourself).
    """

    def __init__(self, prompts: list[str], tokenizer: PreTrainedTokenizerBase, every_n_steps: int | None = None,
                 **generate_kwargs):
        self.prompts = list(prompts)
        self.tokenizer = tokenizer
        self.every_n_steps = every_n_steps
        self.generate_kwargs = {"max_new_tokens": 64} | generate_kwargs
        self.samples: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self.sample(args, state, model)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.every_n_steps:
            self.sample(args, state, model)

    @torch.no_grad()
    def sample(self, args, state, model) -> None:
        if not state.is_world_process_zero or model is None:
            return
        was_training = model.training
        model.eval()
        encoded = {k: v.to(model.device) for k, v in left_padded(self.tokenizer, self.prompts).items()}
        try:
            if getattr(model.config, "drafter", None) is not None:  # a gated drafter answers as its base does
                sequences = model.speculative_generate(**encoded, max_new_tokens=self.generate_kwargs["max_new_tokens"]
                                                       ).sequences
            else:
                sequences = model.diffusion_generate(**encoded, **self.generate_kwargs)
        finally:
            model.train(was_training)
        completions = self.tokenizer.batch_decode(sequences[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        new = [{"step": state.global_step, "prompt": p, "completion": c} for p, c in zip(self.prompts, completions)]
        self.samples += new
        for s in new:
            logger.info("step %d sample: %r -> %r", s["step"], s["prompt"], s["completion"])
        os.makedirs(args.output_dir, exist_ok=True)
        with open(Path(args.output_dir) / "samples.jsonl", "a") as f:
            f.writelines(json.dumps(s) + "\n" for s in new)


class DiffusionTrainer(Trainer):
    """A `Trainer` for masked diffusion LMs: TRL-format data, the diffusion objective, LoRA or full fine-tuning.

    Args:
        model: a [`DiffusionLM`] (e.g. `DiffusionLM.from_causal_lm("gpt2")`), or a string: a DiffusionLM checkpoint
            or a causal LM (Hub id / directory) to adapt.
        args: [`DiffusionTrainingArguments`].
        data_collator: defaults to [`~hf_dlm.data.DataCollatorForDiffusion`] set from `args`.
        train_dataset / eval_dataset: `datasets.Dataset` or `IterableDataset` in a TRL format (text,
            prompt/completion, messages) or already tokenised (`input_ids` [+ `loss_mask`]).
        processing_class: the tokenizer (with the mask token); defaults to `model.tokenizer`.
        peft_config: a `peft` config (e.g. `LoraConfig(r=16)`) to train an adapter instead of every weight.
            `target_modules` defaults to "all-linear" (nn.Linear and GPT-2's Conv1D, LM head excluded), and for LoRA
            the mask token's embedding row trains too (`trainable_token_indices`): a mask token added by adaptation
            starts as the mean embedding and must learn its meaning.
        callbacks / optimizers / kwargs: as for `Trainer`.
    """

    _tag_names = ["hf_dlm", "diffusion-lm"]
    # compute_loss divides by the number of loss-carrying tokens of the whole accumulated batch (get_batch_samples),
    # so the Trainer must not divide again by the accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: DiffusionLM | str,
        args: DiffusionTrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        **kwargs,
    ):
        args = _training_arguments(args)
        model, processing_class = _model_and_tokenizer(model, processing_class)
        config = unwrap_peft(model).config
        self._set_training_mode(config, args, peft_config)
        check_before_training(model, processing_class, args.max_length)  # token ids agree, rows fit the positions
        if peft_config is not None:
            model = apply_peft(model, peft_config)
        train_dataset, eval_dataset, data_collator = self._prepare_data(
            args, processing_class, config, train_dataset, eval_dataset, data_collator)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        self._set_noise(config, args)
        self._eval_totals: torch.Tensor | None = None
        # Extra loss terms (the confidence term, the AR term), TRL's way: one dict of running sums per logging
        # window, each scaled like the loss so that its sum over one optimizer step is that step's term.
        self._metrics: dict[str, torch.Tensor] = {}
        self._metrics_since: int | None = None
        if args.sample_prompts:
            self.add_callback(
                DiffusionSampleCallback(
                    args.sample_prompts, processing_class, args.sample_steps, max_new_tokens=args.sample_max_new_tokens
                )
            )

    # ------------------------------------------------------------------ setup
    def _set_training_mode(self, config, args: DiffusionTrainingArguments, peft_config) -> None:
        """Which rows this model trains on (gated drafter: draft rows; causal-prefix: two-stream rows; else
        canvases and block rows), refusing the settings that mean nothing for it."""
        if not isinstance(config, DiffusionLMConfig) or config.mask_token_id is None:
            raise ValueError(
                "DiffusionTrainer trains a DiffusionLM with a mask token: adapt the causal LM first with "
                "DiffusionLM.from_causal_lm(model, tokenizer)."
            )
        self.drafter_mode = getattr(config, "drafter", None) is not None
        if self.drafter_mode:
            _check_drafter_training(args, peft_config)
        self.causal_prefix = config.attention == "causal_prefix" and not self.drafter_mode
        if self.causal_prefix and ((args.block_rows or 0) > 0 or args.anneal_steps > 1):
            raise ValueError(
                "This model has attention='causal_prefix': it trains on two-stream rows (every block of the answer, "
                "its context causal) and keeps the causal LM's attention in its context, so block_rows and "
                "anneal_steps do not apply. Set block_rows=0 and anneal_steps=0."
            )
        if self.causal_prefix and not config.shift_logits:
            raise ValueError("attention='causal_prefix' training needs shift_logits=True (block anchors score the "
                             "first token of each block).")
        _check_signal_options(args, self.drafter_mode, self.causal_prefix)
        # The AR term is on by default where there is a causal context to keep (docs/benchmarks.md, "Adaptation
        # signal per step": without it the diffusion term's gradients erode the base's next-token skill).
        self.ar_loss_weight = (args.ar_loss_weight if args.ar_loss_weight is not None
                               else DEFAULT_AR_LOSS_WEIGHT if self.causal_prefix else 0.0)

    def _prepare_data(self, args: DiffusionTrainingArguments, processing_class, config, train_dataset, eval_dataset,
                      data_collator):
        """Tokenise the datasets (TRL formats), resolve the data defaults (EOS fill, block rows) and build the
        collator. Returns (train_dataset, eval_dataset, data_collator)."""
        eos_id = processing_class.eos_token_id if processing_class.eos_token_id is not None else config.eos_token_ids[0]
        pad_id = processing_class.pad_token_id if processing_class.pad_token_id is not None else config.pad_token_id
        self.dataset_format = args.dataset_format
        reference = train_dataset if train_dataset is not None else eval_dataset
        if isinstance(reference, dict):
            reference = next(iter(reference.values()))
        if reference is not None and self.dataset_format is None:
            self.dataset_format = infer_format(reference, args.dataset_text_field)
        answers = self.dataset_format in ("prompt_completion", "messages")
        # A drafter's answers end at their first EOS, as the base's do (no EOS fill: nothing is decoded past it).
        eos_fill = args.eos_fill if args.eos_fill is not None else (answers and not self.drafter_mode)
        # Semi-AR block rows by default where there are answers to grow block by block (docs/benchmarks.md,
        # "Training defaults": on a bidirectional model they lift fixed, grow and predict alike).
        self.block_rows = args.block_rows if args.block_rows is not None else (
            DEFAULT_BLOCK_ROWS if answers and not self.causal_prefix and not self.drafter_mode else 0.0)
        # Block rows show every block at once by default (docs/benchmarks.md, "Learning curve": better at equal
        # wall time); all_blocks=False keeps one random block per row with a bidirectional context.
        self.all_blocks = (args.all_blocks if args.all_blocks is not None
                           else self.block_rows > 0 and not self.causal_prefix and not self.drafter_mode)
        prepare = dict(
            dataset_format=args.dataset_format,
            text_field=args.dataset_text_field,
            max_length=args.max_length,
            packing=args.packing,
            eos_token_id=eos_id,
            num_proc=args.dataset_num_proc,
        )
        if train_dataset is not None:
            train_dataset = prepare_dataset(train_dataset, processing_class, **prepare)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: prepare_dataset(v, processing_class, **prepare) for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = prepare_dataset(eval_dataset, processing_class, **prepare)
        self._pad_token_id = pad_id
        # padding='random' cuts the EOS fill of each row in get_batch_samples (seeded there, like the noise).
        self._random_fill = args.padding == "random" and eos_fill and data_collator is None
        if data_collator is None:
            data_collator = DataCollatorForDiffusion(
                pad_token_id=pad_id, eos_token_id=eos_id, eos_fill=eos_fill, padding=args.padding,
                max_length=args.max_length,
            )
        return train_dataset, eval_dataset, data_collator

    def _set_noise(self, config, args: DiffusionTrainingArguments) -> None:
        self.noise = DiffusionNoise(
            mask_token_id=config.mask_token_id,
            t_min=args.t_min,
            t_max=args.t_max,
            eos_token_ids=tuple(config.eos_token_ids),
            eos_always_masked=args.eos_always_masked,
            anneal_steps=args.anneal_steps,
            seed=args.seed if args.mask_seed is None else args.mask_seed,
            all_masked_share=args.all_masked_rows,
        )
        # Evaluation estimates the ELBO itself whatever the training variant: t ~ U[1e-3, 1], no forced EOS, full
        # attention, and a fixed noise stream so that checkpoints are compared on the same masks.
        self.eval_noise = DiffusionNoise(mask_token_id=config.mask_token_id, seed=self.noise.seed)

    # ------------------------------------------------------------------ data
    def _set_signature_columns_if_needed(self):
        # The model's forward does not take loss_mask; the collator does. Keep exactly what the collator reads.
        if self._signature_columns is None:
            self._signature_columns = list(MODEL_COLUMNS)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the micro-batches of one optimizer step; count their loss-carrying tokens over all devices (the
        loss normaliser, `num_items_in_batch`) and give their sequences antithetic noise levels."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        if self._random_fill:
            batch_samples = [self._random_fill_lengths(b) for b in batch_samples]
        if self.block_rows > 0:
            split = self._all_block_rows if self.all_blocks else self._block_rows
            batch_samples = [split(b) for b in batch_samples]
        if self.causal_prefix:
            batch_samples = [self._cut_after_eos_block(b) for b in batch_samples]
        if self.drafter_mode:
            num_items = torch.tensor(sum(self._draft_target_count(b) for b in batch_samples))
        else:
            num_items = sum(maskable_positions(b["loss_mask"]).sum() for b in batch_samples)
            if self.args.complementary_masks:  # every row is trained twice, once per mask of its pair
                num_items = num_items * 2
        num_items = num_items.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            num_items = self.accelerator.gather(num_items).sum()
        if self.args.antithetic:
            sizes = [b["input_ids"].shape[0] for b in batch_samples]
            t = self.noise.antithetic_t(sum(sizes), self.state.global_step, self.args.process_index)
            for batch, part in zip(batch_samples, t.split(sizes)):
                batch["t"] = part
        return batch_samples, num_items

    def _row_generators(self, batch: dict[str, torch.Tensor], purpose: bytes):
        """Seeded generators per row, like the noise (seed, step, the row's tokens): accumulation, DDP and resume
        make the same choices."""
        step, ids, real = self.state.global_step, batch["input_ids"].cpu(), batch["attention_mask"].cpu().bool()

        def generator_for(row: int) -> torch.Generator:
            return seeded_generator(self.noise.seed, step, ids[row][real[row]].numpy().tobytes(), purpose)

        return generator_for

    def _random_fill_lengths(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """padding='random': each row's EOS fill cut at a random length (`hf_dlm.data.random_fill_lengths`)."""
        return random_fill_lengths(batch, self.noise.eos_token_ids, self._pad_token_id,
                                   self._row_generators(batch, b"random_fill"))

    def _block_rows(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Semi-AR block rows (`self.block_rows`: `args.block_rows`, or its default); each row's choice is seeded like
        its noise (seed, step, tokens), so accumulation, DDP and resume make the same choice."""
        return block_rows(batch, self.args.block_length, self.block_rows, self.noise.eos_token_ids,
                          self._pad_token_id, self._row_generators(batch, b"block_rows"))

    def _all_block_rows(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`all_blocks`: the rows block_rows would pick (the same seeded draw) are marked to be shown as two-stream
        rows, every block of the answer at once, and cut after the block holding their answer's EOS (no block
        past it is decoded by grow; the loss normaliser counts what is trained)."""
        generator_for = self._row_generators(batch, b"block_rows")
        picked = torch.tensor([torch.rand(1, generator=generator_for(row)).item() < self.block_rows
                               for row in range(batch["input_ids"].shape[0])], dtype=torch.bool)
        batch = dict(batch)
        if picked.any():
            cut = self._cut_after_eos_block({k: batch[k][picked] for k in ("input_ids", "attention_mask", "loss_mask")})
            for key, value in cut.items():
                batch[key] = batch[key].clone()
                batch[key][picked] = value
        batch[ALL_BLOCKS_KEY] = picked.to(batch["input_ids"].device)
        return batch

    def _cut_after_eos_block(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return cut_after_eos_block(batch, self.args.block_length, self.noise.eos_token_ids, self._pad_token_id)

    # ------------------------------------------------------------ drafting
    def _draft_rows(self, inputs: dict[str, torch.Tensor]):
        config = unwrap_peft(self.model).config
        return draft_rows(inputs["input_ids"], inputs["attention_mask"], inputs["loss_mask"], self.args.draft_length,
                          config.mask_token_id, self._pad_token_id, config.attention, self.args.draft_cuts,
                          self._row_generators(inputs, b"draft_cuts"))

    def _draft_target_count(self, batch: dict[str, torch.Tensor]) -> int:
        """Targets of a batch's draft rows (the loss normaliser), without building them."""
        k, total = self.args.draft_length, 0
        real, loss_mask = batch["attention_mask"].bool().cpu(), batch["loss_mask"].cpu().bool()
        generator_for = self._row_generators(batch, b"draft_cuts")
        for row in range(real.shape[0]):
            length = int(real[row].nonzero().max()) + 1 if real[row].any() else 0
            generator = generator_for(row) if self.args.draft_cuts is not None else None
            for c in draft_cuts(loss_mask[row], length, self.args.draft_cuts, generator).tolist():
                end = min(c + k + 1, length)
                total += int(loss_mask[row, c + 1 : end].sum())
        return total

    def _draft(self, model, inputs: dict[str, torch.Tensor]):
        """The drafter's forward: the clean rows under no_grad (the frozen base's computation: the KV cache every
        draft block reads), then every cut's masks with gradients. (outputs, logits, targets)."""
        with torch.no_grad():
            clean = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=True,
                          logits_to_keep=1)
        rows = self._draft_rows(inputs)
        outputs = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, position_ids=rows.position_ids,
                        cache=clean.cache, use_cache=False, shift_logits=False)
        return outputs, outputs.logits, rows.targets

    # ------------------------------------------------------------------ loss
    def _denoise(self, model, inputs: dict[str, torch.Tensor], noisy: NoisyBatch):
        """The forwards over a noised batch: a list of (outputs, logits, targets, loss weights, kind), aligned; one
        entry per forward (length groups of canvas rows, the two-stream rows of `all_blocks`), kind "diffusion".
        Causal-prefix rows with `ar_loss_weight` add the clean stream's next-token term, kind "ar"."""
        if self.causal_prefix:
            return self._two_stream(model, inputs, noisy, "causal", self.ar_loss_weight)
        picked = inputs.get(ALL_BLOCKS_KEY)
        if picked is None:
            picked = torch.zeros(inputs["input_ids"].shape[0], dtype=torch.bool, device=inputs["input_ids"].device)
        parts = []
        for rows in length_groups(inputs["attention_mask"], ~picked, self.args.length_groups):
            group, group_noisy = _select(inputs, noisy, rows)
            outputs = model(input_ids=group_noisy.input_ids, attention_mask=group_noisy.attention_mask)
            parts.append((outputs, outputs.logits, group["input_ids"], group_noisy.loss_weight, "diffusion"))
        for rows in length_groups(inputs["attention_mask"], picked, self.args.length_groups):
            block_inputs, block_noisy = _select(inputs, noisy, rows)
            if block_noisy.attention_mask.dim() != 2:
                # Attention annealing eases the canvas rows into bidirectional attention; the two-stream rows have
                # their own block-causal pattern, built from the padding mask.
                block_noisy.attention_mask = block_inputs["attention_mask"]
            parts += self._two_stream(model, block_inputs, block_noisy, "block_causal", 0.0)
        return parts

    def _two_stream(self, model, inputs, noisy: NoisyBatch, context: str, ar_weight: float):
        rows = two_stream_rows(inputs["input_ids"], noisy.input_ids, inputs["attention_mask"], inputs["loss_mask"],
                               noisy.loss_weight, self.args.block_length, context)
        # Only the noisy streams carry the diffusion loss: without the AR term the LM head runs on them alone.
        outputs = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, position_ids=rows.position_ids,
                        logits_to_keep=0 if ar_weight > 0 else rows.noisy_length)
        if ar_weight <= 0:
            return [(outputs, outputs.logits, rows.targets, rows.loss_weight, "diffusion")]
        clean = rows.input_ids.shape[1] - rows.noisy_length
        # The clean stream is the causal LM itself: its aligned logits at position i score token i from the tokens
        # before it (the kept AR shift), TiDAR's L_AR on the answer's tokens.
        ar_weights = noisy.maskable[:, :clean].float()  # unweighted: compute_loss applies ar_loss_weight
        return [(outputs, outputs.logits[:, clean:], rows.targets, rows.loss_weight, "diffusion"),
                (outputs, outputs.logits[:, :clean], inputs["input_ids"][:, :clean], ar_weights, "ar")]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Masked-diffusion loss: sum over masked tokens of CE / t, divided by the number of loss-carrying tokens of
        the optimizer step's whole batch (`num_items_in_batch`; this micro-batch's when not given). Gated drafters:
        CE at every draft position with a target, divided by the step's count of such targets."""
        if self.drafter_mode:
            outputs, logits, targets = self._draft(model, inputs)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                     ignore_index=IGNORE, reduction="sum")
            return self._normalise(loss, (targets != IGNORE).sum(), num_items_in_batch, outputs, return_outputs)
        noisy = self.noise(
            inputs["input_ids"], inputs["attention_mask"], inputs["loss_mask"], self.state.global_step, inputs.get("t")
        )
        if self.args.complementary_masks:
            # Fast-dLLM v2: each row again, masked where it was not, in the same forward.
            noisy = stack_noisy(noisy, complement(noisy, inputs["input_ids"], self.noise.mask_token_id,
                                                  self.noise.t_min))
            inputs = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in inputs.items()}
        parts = self._denoise(model, inputs, noisy)
        outputs = parts[0][0]
        # One sum per kind of term: "diffusion" (the masked CE / t), "ar" (causal-prefix rows' next-token CE) and,
        # on the diffusion positions, "confidence". Each is normalised by the same count below.
        terms: dict[str, torch.Tensor] = {}
        for _, logits, targets, weights, kind in parts:
            terms[kind] = terms.get(kind, 0) + diffusion_loss(logits, targets, weights)
            if kind == "diffusion" and self.args.confidence_loss_weight > 0:
                # Normalised by the same count as the CE (the step's loss-carrying tokens, all micro-batches and
                # devices), not by the number of correct positions: that count is only known after every
                # micro-batch's forward, so dividing by it could not be exact under accumulation. The weight thus
                # acts on (share of loss-carrying tokens masked and right) x (their mean entropy).
                terms["confidence"] = terms.get("confidence", 0) + confidence_loss(logits, targets, weights)
        loss = terms["diffusion"]
        if "ar" in terms:
            loss = loss + self.ar_loss_weight * terms["ar"]
        if "confidence" in terms:
            loss = loss + self.args.confidence_loss_weight * terms["confidence"]
        loss, count, world = self._normalise(loss, noisy.maskable.sum(), num_items_in_batch)
        if model.training and len(terms) > 1:  # log each term (without its weight) beside the loss
            self._record_metrics({f"{name}_loss": (value * world / count).detach() for name, value in terms.items()})
        return (loss, outputs) if return_outputs else loss

    def _normalise(self, loss, local_count, num_items_in_batch, outputs=None, return_outputs=None):
        """`loss` / the step's count (`num_items_in_batch`, all micro-batches and devices; `local_count` when not
        given). With `return_outputs` set, what `compute_loss` returns; else (loss, count, world)."""
        world = 1
        if num_items_in_batch is None:
            count = torch.as_tensor(local_count, device=loss.device).clamp(min=1)
        else:
            count = torch.as_tensor(num_items_in_batch, device=loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                # DDP averages gradients over processes; the normaliser already counts every process's tokens.
                world = self.args.world_size
        loss = loss / count
        if world > 1:
            loss = loss * world
        if return_outputs is None:
            return loss, count, world
        return (loss, outputs) if return_outputs else loss

    def _record_metrics(self, values: dict[str, torch.Tensor]) -> None:
        if self._metrics_since is None:
            self._metrics_since = self.state.global_step
        for name, value in values.items():
            self._metrics[name] = self._metrics.get(name, torch.zeros((), device=value.device)) + value

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Adds the loss's terms to the training logs when it has several (`diffusion_loss`, `confidence_loss`,
        `ar_loss`): each one's mean per optimizer step since the last log, averaged over processes like `loss`."""
        if "loss" in logs and self._metrics_since is not None:
            steps = max(1, self.state.global_step - self._metrics_since)
            for name, total in self._metrics.items():
                logs[name] = self.accelerator.gather(total.reshape(1)).mean().item() / steps
            self._metrics, self._metrics_since = {}, None
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------ evaluation
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """ELBO terms of one batch: returns its per-token bound and accumulates the exact totals."""
        inputs = self._prepare_inputs(inputs)
        if self.drafter_mode:  # eval_loss: the drafts' CE per target (eval_ppl_bound is then exp of it)
            with torch.no_grad(), self.compute_loss_context_manager():
                _, logits, targets = self._draft(model, inputs)
                total = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                          ignore_index=IGNORE, reduction="sum")
            count = (targets != IGNORE).sum().float()
            if self._eval_totals is not None:
                self._eval_totals += torch.stack([total, count]).to(self._eval_totals.device)
            return (total / count.clamp(min=1)).detach(), None, None
        with torch.no_grad(), self.compute_loss_context_manager():
            if self.causal_prefix:
                inputs = self._cut_after_eos_block(inputs)
            noisy = self.eval_noise(inputs["input_ids"], inputs["attention_mask"], inputs["loss_mask"], step=None)
            if self.causal_prefix:  # the ELBO: the diffusion term alone, whatever ar_loss_weight trains
                (_, logits, targets, weights, _), = self._two_stream(model, inputs, noisy, "causal", 0.0)
                total = diffusion_loss(logits, targets, weights)
            else:
                logits = model(input_ids=noisy.input_ids, attention_mask=noisy.attention_mask).logits
                total = diffusion_loss(logits, inputs["input_ids"], noisy.loss_weight)
        count = noisy.maskable.sum().float()
        if self._eval_totals is not None:
            self._eval_totals += torch.stack([total, count]).to(self._eval_totals.device)
        return (total / count.clamp(min=1)).detach(), None, None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """Adds `{prefix}_loss` as the token-weighted ELBO over the whole eval set (the Trainer's own average weights
        batches by examples) and `{prefix}_ppl_bound = exp(loss)`, an upper bound on perplexity."""
        self._eval_totals = torch.zeros(2, device=self.args.device)  # float32: MPS has no float64
        try:
            output = super().evaluation_loop(dataloader, description, True, ignore_keys, metric_key_prefix)
            totals = self.accelerator.reduce(self._eval_totals, reduction="sum")
        finally:
            self._eval_totals = None
        if totals[1] > 0:
            loss = (totals[0] / totals[1]).item()
            output.metrics[f"{metric_key_prefix}_loss"] = loss
            output.metrics[f"{metric_key_prefix}_ppl_bound"] = math.exp(min(loss, 700.0))
        return output

    # ------------------------------------------------------------ model card
    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None) -> None:
        """transformers' hook (`Trainer.push_to_hub` calls it): write hf_dlm's model card to `output_dir`, with the
        training arguments that matter (max_length, block_length, t_min/t_max, steps, learning rate, LoRA rank...)
        and the datasets named in `dataset` / `dataset_tags` (Hub ids; local files are left out).

        `license` is carried to the card (else the base's, when known); `tags` are added to hf_dlm's;
        `model_name` (default: `hub_model_id`, else `output_dir`) is the name the card's usage snippet loads.
        `language`, `finetuned_from`, `tasks` and `dataset_args` are not used: the base model comes from the
        model's own config and the task is text generation. What is told here stays on the model, so a later
        `save_pretrained` writes the same card. A README.md of the user's in `output_dir` is never replaced."""
        if not self.is_world_process_zero():
            return
        from .model_card import remember, training_summary, write_model_card

        peft_config = None
        if hasattr(self.model, "peft_config"):
            peft_config = next(iter(self.model.peft_config.values()), None)
        names = []
        for group in (dataset, dataset_tags):
            names += [group] if isinstance(group, str) else list(group or [])
        remember(self.model, training=training_summary(self.args, peft_config), datasets=names or None,
                 license=license)
        extra = [tags] if isinstance(tags, str) else list(tags or [])
        write_model_card(self.args.output_dir, self.model, model_name or self.args.hub_model_id or None,
                         extra_tags=list(dict.fromkeys(self._tag_names + extra)))


# ---------------------------------------------------------------------- helpers
def _check_drafter_training(args: DiffusionTrainingArguments, peft_config) -> None:
    """Settings that mean nothing for a gated drafter, refused rather than ignored."""
    if peft_config is not None:
        raise ValueError("A gated drafter trains its own adapter (the base stays frozen): leave peft_config=None.")
    if (args.block_rows or 0) > 0 or args.anneal_steps > 1 or args.confidence_loss_weight > 0:
        raise ValueError(
            "block_rows, anneal_steps and confidence_loss_weight shape the diffusion objective; a gated drafter "
            "trains on draft rows (every cut of the answer, CE at the masks): leave them at 0 / None."
        )
    if args.eos_fill:
        raise ValueError("eos_fill=True trains EOS padding for diffusion canvases; a gated drafter stops at the base's "
                         "first EOS: leave eos_fill=None (off for drafters).")


def _training_arguments(args) -> DiffusionTrainingArguments:
    if args is None:
        return DiffusionTrainingArguments(output_dir="hf_dlm_output")
    if not isinstance(args, DiffusionTrainingArguments):
        raise TypeError(
            f"args must be DiffusionTrainingArguments (got {type(args).__name__}): "
            f"DiffusionTrainingArguments(**your_args.to_dict()) keeps every TrainingArguments field."
        )
    return args


def _model_and_tokenizer(model, processing_class):
    """A DiffusionLM (loading or adapting a string) and the tokenizer with its mask token."""
    if isinstance(model, str):
        model = load_diffusion_lm(model, adapt=True)
    processing_class = processing_class if processing_class is not None else getattr(model, "tokenizer", None)
    if processing_class is None:
        raise ValueError("Pass processing_class=<the tokenizer with the mask token> (model.tokenizer is not set).")
    return model, processing_class


def _check_signal_options(args: DiffusionTrainingArguments, drafter_mode: bool, causal_prefix: bool) -> None:
    """The options that add training signal per forward (docs/training.md), refused where they mean nothing."""
    if drafter_mode and (args.complementary_masks or args.all_masked_rows > 0 or args.all_blocks
                         or (args.ar_loss_weight or 0) > 0):
        raise ValueError("complementary_masks, all_masked_rows, all_blocks and ar_loss_weight shape the diffusion "
                         "objective; a gated drafter trains on draft rows: leave them off.")
    if args.all_blocks and causal_prefix:
        raise ValueError("attention='causal_prefix' models already train every block in one forward (two-stream "
                         "rows): leave all_blocks unset.")
    if (args.ar_loss_weight or 0) > 0 and not causal_prefix:
        raise ValueError("ar_loss_weight is the next-token loss of a causal context: only attention='causal_prefix' "
                         "models have one. Leave it at 0 for bidirectional models.")


def length_groups(attention_mask: torch.Tensor, rows: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Split the `rows` (bool [B]) of a right-padded batch into at most `groups` sets of rows of similar length,
    minimising the positions their padded forwards compute (sum over sets of rows x longest row). Rows sorted by
    length, the best split points by dynamic programming (B <= a few hundred, groups small). Returns bool [B]
    masks, shortest rows first."""
    index = rows.nonzero().squeeze(-1)
    if index.numel() == 0:
        return []
    real = attention_mask[index].bool()
    lengths = torch.where(real.any(1), real.shape[1] - real.flip(1).int().argmax(1), 0).tolist()
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    n, k = len(order), min(groups, len(order))
    inf = float("inf")
    # best[g][j]: least padded positions covering the j shortest rows with g groups; cut[g][j]: where the last starts
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for g in range(1, k + 1):
        for j in range(1, n + 1):
            for i in range(g - 1, j):
                cost = best[g - 1][i] + (j - i) * sorted_lengths[j - 1]
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
    g = min(range(1, k + 1), key=lambda g: (best[g][n], g))  # fewest forwards among the cheapest splits
    bounds, j = [], n
    while g > 0:
        bounds.append((cut[g][j], j))
        j, g = cut[g][j], g - 1
    masks = []
    for start, end in reversed(bounds):
        mask = torch.zeros_like(rows)
        mask[index[[order[i] for i in range(start, end)]]] = True
        masks.append(mask)
    return masks


def _select(inputs: dict, noisy: NoisyBatch, rows: torch.Tensor) -> tuple[dict, NoisyBatch]:
    """The `rows` of a batch and of its noised copy, cut to the longest of them (padding columns cost forwards)."""
    real = inputs["attention_mask"][rows].bool()
    length = int(real.any(0).nonzero().max()) + 1 if real.any() else 1

    def cut(value: torch.Tensor) -> torch.Tensor:  # [B] per row, [B, L] per position, [B, 1, L, L] a 4D mask
        value = value[rows]
        return value if value.dim() == 1 else value[..., :length, :length] if value.dim() == 4 else value[:, :length]

    picked = {k: cut(v) for k, v in inputs.items() if torch.is_tensor(v)}
    return picked, NoisyBatch(*(cut(getattr(noisy, f.name)) for f in fields(NoisyBatch)))


def apply_peft(model: DiffusionLM, peft_config):
    """Wrap `model` with `peft_config`, with defaults that suit any backbone.

    - `target_modules=None` -> "all-linear": peft collects nn.Linear and transformers' Conv1D (GPT-2) and leaves out
      the LM head; a custom model type has no default in peft's table.
    - LoRA's `trainable_token_indices` gets the mask token: its row starts as the mean embedding (adapt.py) and must
      learn to mean "to be predicted". With tied embeddings peft must see the tie to update the LM head's row too:
      it reads `_tied_weights_keys` on the outer model, which DiffusionLM sets to `{}` so that peft collects the
      backbone's own tie (otherwise the adapter model and the merged one would disagree on logits).
    """
    from peft import LoraConfig, get_peft_model

    config = copy.deepcopy(peft_config)
    if hasattr(config, "target_modules") and config.target_modules is None:
        config.target_modules = "all-linear"
    mask_id = model.config.mask_token_id
    if isinstance(config, LoraConfig):
        indices = config.trainable_token_indices
        if indices is None:
            config.trainable_token_indices = [mask_id]
        elif isinstance(indices, list) and mask_id not in indices:
            config.trainable_token_indices = [*indices, mask_id]
    else:
        logger.warning("%s has no trainable_token_indices: the mask token's embedding stays frozen.", type(config).__name__)
    return get_peft_model(model, config)


__all__ = [
    "DiffusionSampleCallback",
    "DiffusionTrainer",
    "DiffusionTrainingArguments",
    "apply_peft",
]
