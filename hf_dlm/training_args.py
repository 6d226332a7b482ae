"""`DiffusionTrainingArguments`: `transformers.TrainingArguments` plus the masked-diffusion objective and the data.

TRL's split (huggingface/trl `sft_config.py` / `sft_trainer.py`): the arguments live here, the trainer in
`hf_dlm.trainer`; every field's `help` is the user documentation, and `__post_init__` checks every setting with
`hf_dlm.training_settings.check_training_settings`, the checks the noise, the data and `hf-dlm distill` call too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .noise import ELBO_T_MIN
from .training_settings import check_training_settings

# block_rows=None resolves to this share for bidirectional models trained on answers (prompt/completion, messages).
DEFAULT_BLOCK_ROWS = 0.5
# ar_loss_weight=None on attention="causal_prefix" models: the AR term at this weight keeps the AR base's next-token
# skill through adaptation (benchmarks/ar_retention.py: 96.9% of held-out sort answers kept after 100 steps at lr
# 1e-4, against 78.1% at weight 1 and 43.8% without the term; docs/benchmarks.md, "Adaptation signal per step").
DEFAULT_AR_LOSS_WEIGHT = 10.0


@dataclass
class DiffusionTrainingArguments(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the settings of the masked-diffusion objective and of the data.

    Every field below can be given on the command line (`hf-dlm train --max_length 512 ...`). Defaults follow the
    papers named in each help text; `docs/training.md` explains the choices.
    """

    # ------------------------------------------------------------------ data
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Tokens per row: the packed chunk size for text (DiffuGPT used 1024), the truncation length of SFT "
            "examples, and the padded length with padding='max_length'. None keeps whole examples (no packing)."
        },
    )
    dataset_text_field: str = field(
        default="text", metadata={"help": "Column holding the documents of a 'text' dataset (TRL's name)."}
    )
    dataset_format: str | None = field(
        default=None,
        metadata={
            "help": "'text', 'prompt_completion' or 'messages' (TRL's formats). None detects it from the columns: "
            "'messages', else 'prompt' + 'completion', else dataset_text_field. Tokenised datasets (an 'input_ids' "
            "column, optional 'loss_mask') are used as they are."
        },
    )
    packing: bool | None = field(
        default=None,
        metadata={
            "help": "Pack several examples into each max_length row (dLLM-Var's multi-sample packing, full attention "
            "across them). None: pack 'text' (documents are concatenated and cut), not SFT formats; True for SFT "
            "packs whole examples first-fit (none is split)."
        },
    )
    eos_fill: bool | None = field(
        default=None,
        metadata={
            "help": "Pad rows with EOS tokens that are attended and carry loss (LLaDA's SFT) instead of masked padding, "
            "so that p(EOS) at canvas position j learns P(answer length <= j), the signal of "
            "length_strategy='predict'. None: on for 'prompt_completion' and 'messages', off for 'text'."
        },
    )
    padding: str = field(
        default="random",
        metadata={
            "help": "EOS fill length. 'random': to max_length, each row cut at a random length past its answer, so "
            "long canvases (fixed, predict) and short ones (grow) are both trained; 'longest': the batch's longest "
            "row (LLaDA); 'max_length': every row full. docs/training.md compares them."
        },
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for tokenisation (datasets.map num_proc)."}
    )
    # ------------------------------------------------------------- objective
    t_min: float = field(
        default=ELBO_T_MIN,
        metadata={
            "help": "Lowest noise level t (share of maskable tokens masked). MDLM / DiffuLLaMA's eps = 1e-3; "
            "dLLM-Var uses 0.1. Loss weights are 1/t, so t_min bounds them."
        },
    )
    t_max: float = field(
        default=1.0, metadata={"help": "Highest noise level t. 1.0 for the ELBO; dLLM-Var uses 0.9."}
    )
    antithetic: bool = field(
        default=True,
        metadata={
            "help": "Stratify the noise levels of the sequences one device processes per optimizer step (all "
            "accumulation micro-batches together): t_i = t_min + (t_max - t_min) * ((u + i) / n mod 1) (MDLM). "
            "Lowers the loss variance; False draws each t independently."
        },
    )
    block_rows: float | None = field(
        default=None,
        metadata={
            "help": "Share of training rows shown as semi-autoregressive *block rows* (hf_dlm.data.block_rows): the "
            "answer's blocks before a random block k clean, block k noised, nothing after it: the view of "
            "length_strategy='grow' and of every later block. 0 trains on whole canvases only (LLaDA / DiffuLLaMA). "
            "None (default): 0.5 for bidirectional models on prompt/completion or messages data (measured better for "
            "all three length strategies, docs/benchmarks.md), 0 for text data and attention='causal_prefix' models."
        },
    )
    block_length: int = field(
        default=32,
        metadata={
            "help": "Block size of block_rows, and of the two-stream rows of attention='causal_prefix' models; match "
            "the block_length you decode with."
        },
    )
    eos_always_masked: bool = field(
        default=False,
        metadata={
            "help": "Mask every loss-carrying EOS whatever t (dLLM-Var), so the model always has to predict where "
            "the text ends. Those tokens get weight 1 (they are masked with probability 1), not 1/t."
        },
    )
    anneal_steps: int = field(
        default=0,
        metadata={
            "help": "Attention annealing (DiffuGPT): for the first anneal_steps optimizer steps the attention mask is "
            "causal OR Bernoulli(min(1, (step + 1) / anneal_steps)). 0 (or 1) means bidirectional from the start "
            "(DiffuLLaMA's SFT); DiffuGPT's adaptation used 10000."
        },
    )
    length_groups: int = field(
        default=4,
        metadata={
            "help": "Split each micro-batch into up to this many forwards of rows of similar length. EOS fills cut at "
            "random lengths and block rows make a batch's rows differ widely in length, and one padded forward "
            "would spend most of its positions on padding that carries no loss; the groups are chosen to minimise "
            "the padded positions. The loss is the same sum (rounding aside). 1 = one forward per micro-batch."
        },
    )
    complementary_masks: bool = field(
        default=False,
        metadata={
            "help": "Train every row twice in one forward, the second copy masked exactly where the first is not "
            "(t' = 1 - t; Fast-dLLM v2's complementary masks, arXiv 2509.26328), so each pair supervises every "
            "loss-carrying token once. Doubles the rows per forward."
        },
    )
    all_masked_rows: float = field(
        default=0.0,
        metadata={
            "help": "Share of rows noised at t = 1: every loss-carrying token masked (TiDAR's all-masked rows, arXiv "
            "2511.08923), the view of a canvas's or a block's first forward. 0 turns it off."
        },
    )
    all_blocks: bool | None = field(
        default=None,
        metadata={
            "help": "Bidirectional models: show the block_rows share of rows as two-stream rows holding *every* "
            "block of the answer in one forward (BD3-LM's [x_t | x_0] layout; hf_dlm.two_stream with a "
            "block-causal context: each block sees the prompt and the blocks before it clean, as the decoder's KV "
            "cache holds them) instead of one random block per row with a bidirectional context. None (default): "
            "on wherever block rows are (measured better at equal wall time, docs/benchmarks.md 'Learning curve'); "
            "False restores one block per row."
        },
    )
    ar_loss_weight: float | None = field(
        default=None,
        metadata={
            "help": "attention='causal_prefix' models: add this weight times the next-token loss of the clean stream "
            "(the causal context of the two-stream rows) to the masked CE (TiDAR's alpha * L_AR), which keeps the "
            "base's next-token skill. Both terms are divided by the step's count of loss-carrying tokens. 0 = off. "
            "None (default): 10 on causal-prefix models (measured to keep the AR skill, docs/benchmarks.md), 0 "
            "elsewhere."
        },
    )
    confidence_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the confidence term (LLaDA 2.0's confidence-aware parallel training, CAP, arXiv "
            "2512.15745; dParallel's certainty forcing): loss = masked CE + weight * (sum of the entropies of the "
            "model's predictions at the masked positions it already gets right, argmax == target), both divided by "
            "the step's count of loss-carrying tokens. Sharpens correct predictions so that threshold decoding "
            "commits more tokens per forward. Logged as 'confidence_loss'. 0 turns it off (the loss is then exactly "
            "the diffusion loss); CAP and diffusers' compute_confidence_aware_loss leave the weight to the user, "
            "docs/training.md reports what 0.5-1 did here."
        },
    )
    mask_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the noise (t, masks, annealed attention). None uses `seed`. The noise of an example "
            "depends only on (mask_seed, optimizer step, its tokens), so accumulation, DDP and resume see the same "
            "masks."
        },
    )
    # ------------------------------------------------------------ gated drafters
    draft_length: int = field(
        default=4,
        metadata={
            "help": "Gated drafters (drafter='gated_lora'): masks per cut in the draft rows, the draft_length you "
            "decode with (speculative_generate). Each cut of an answer adds this many positions to the forward."
        },
    )
    draft_cuts: int | None = field(
        default=None,
        metadata={
            "help": "Gated drafters: cuts per row at most (a random subset, seeded like the noise); None trains "
            "every cut of the answer in one forward. Lower it when long rows do not fit in memory."
        },
    )
    # ------------------------------------------------------------ monitoring
    sample_prompts: list[str] | None = field(
        default=None,
        metadata={
            "help": "Prompts decoded with model.diffusion_generate at every evaluation (or every sample_steps) and "
            "logged (written to <output_dir>/samples.jsonl)."
        },
    )
    sample_steps: int | None = field(
        default=None, metadata={"help": "Decode sample_prompts every this many steps; None: at each evaluation."}
    )
    sample_max_new_tokens: int = field(default=64, metadata={"help": "Token budget of each sample."})
    # ------------------------------------------------- TrainingArguments defaults
    logging_steps: float = field(
        default=10, metadata={"help": "Log every this many optimizer steps (TrainingArguments: 500; TRL: 10)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_training_settings({
            name: getattr(self, name)
            for name in ("max_length", "dataset_format", "padding", "packing", "t_min", "t_max", "anneal_steps",
                         "block_rows", "confidence_loss_weight", "block_length", "draft_length", "draft_cuts",
                         "sample_steps", "sample_max_new_tokens", "length_groups", "all_masked_rows",
                         "ar_loss_weight")
        })
        if self.label_names is None:
            # The diffusion loss needs no label tensor; an explicit empty list silences the Trainer's guess.
            self.label_names = []


__all__ = ["DiffusionTrainingArguments"]
