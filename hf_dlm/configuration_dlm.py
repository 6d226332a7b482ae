"""Configuration of a masked diffusion LM built on the backbone of a causal LM.

Remote code: this file is copied next to every saved checkpoint, so it imports only transformers and its sibling
`settings_dlm.py` (standard library).

The recipe is DiffuGPT / DiffuLLaMA (Gong et al. 2024, "Scaling Diffusion Language Models via Adaptation from
Autoregressive Models", github.com/HKUNLP/DiffuLLaMA): the causal LM's own embeddings, blocks and LM head, run
with bidirectional attention, the AR shift kept, plus a dedicated mask token.
"""

from transformers import AutoConfig, PreTrainedConfig

from .settings_dlm import token_id_list

ATTENTION_PATTERNS = ("bidirectional", "causal_prefix", "causal")
DRAFTERS = ("gated_lora",)
# Attention among the masks of a gated drafter's draft block (clean positions are causal either way).
DRAFT_ATTENTION = ("causal", "causal_prefix")
# Kernels that honour an arbitrary (bidirectional or 4D) attention mask. FlashAttention-2/3 take only a causal
# flag and padding, so they would silently run the model causally (DiffuLLaMA's code notes FlashAttention-2 ignores its annealing masks).
MASK_HONOURING_ATTENTION = ("eager", "sdpa")


class DiffusionLMConfig(PreTrainedConfig):
    r"""
    Args:
        backbone_config (`PreTrainedConfig` or `dict`):
            The config of the causal LM the diffusion model is built from (any causal-LM type of transformers:
            gpt2, llama, qwen2, ...). Stored nested in `config.json`; a dict is turned back into its config class.
        mask_token_id (`int`):
            Id of the dedicated mask token ([MASK]) that marks positions still to be denoised. Never pad, eos or
            bos (see `hf_dlm.adapt`): a reused id would make real occurrences of that token ambiguous.
        shift_logits (`bool`, defaults to `True`):
            Keep the AR shift: the hidden state at position i-1 scores token i, as in the causal LM the weights
            come from (DiffuLLaMA, Dream). `DiffusionLM.forward` returns logits already aligned to positions.
            Consequence: position 0 is never predicted, so every sequence starts with a real token.
        attention (`str`, defaults to `"bidirectional"`):
            `"bidirectional"`: every position attends to every other (DiffuLLaMA, LLaDA, Dream).
            `"causal_prefix"`: block diffusion with a causal context (BD3-LM, Arriola et al. 2025; Fast-dLLM v2,
            github.com/NVlabs/Fast-dLLM): the context (prompt and committed blocks) attends causally, exactly as
            in the causal LM, and the canvas (the block being denoised) attends to the whole context and
            bidirectionally within its block; the decoder keeps it block-causal (no block sees the masks of later
            blocks), the view two-stream training gives. The context is then the AR model's own computation, so
            adaptation has less to learn and the KV cache is exact. Forwards need `canvas_start` (where the canvas
            begins) or a 4D attention mask; training uses two-stream rows (`hf_dlm.two_stream`).
            `"causal"`: gated drafters only (below): every position causal, masks included (I-DLM).
        drafter (`str`, *optional*):
            `"gated_lora"`: the model drafts for its own base (`hf_dlm.drafter_dlm`, I-DLM's R-ISD, arXiv
            2604.11035): the base weights stay frozen, a low-rank adapter acts only at mask positions, clean
            positions are causal and never see a mask, so they compute exactly the causal LM. `attention` then says
            how the masks of a draft block attend to each other: `"causal"` or `"causal_prefix"` (bidirectional
            within the block). Decode with `model.speculative_generate(...)`.
        drafter_rank / drafter_alpha / drafter_target_modules:
            The adapter's rank, scale numerator (delta = B A x * alpha / rank; default 2 * rank) and the names of the
            adapted linear layers (default: every attention and MLP projection of Llama-like and GPT-2 blocks).
        drafter_base_vocab_size (`int`, *optional*):
            Rows of the causal LM's vocabulary before adaptation added the mask (and pad) token: the verifier never
            emits an id at or past it.
        pad_token_id / eos_token_id / bos_token_id:
            The tokenizer's special tokens; `eos_token_id` may be a list (chat models end turns with several).
    """

    model_type = "diffusion_lm"
    sub_configs = {"backbone_config": AutoConfig}
    # What `register_for_auto_class()` would set, declared on the class so that every save writes `auto_map` and
    # copies this file, whether or not anything registered the class (transformers sets it again on remote loads).
    _auto_class = "AutoConfig"

    def __init__(self, backbone_config=None, mask_token_id=None, shift_logits=True, attention="bidirectional",
                 pad_token_id=None, eos_token_id=None, bos_token_id=None, drafter=None, drafter_rank=32,
                 drafter_alpha=None, drafter_target_modules=None, drafter_base_vocab_size=None, **kwargs):
        if attention not in ATTENTION_PATTERNS:
            raise ValueError(f"attention must be one of {ATTENTION_PATTERNS}, got {attention!r}.")
        if drafter is not None and drafter not in DRAFTERS:
            raise ValueError(f"drafter must be None or one of {DRAFTERS}, got {drafter!r}.")
        if drafter is not None and attention not in DRAFT_ATTENTION:
            raise ValueError(
                f"A gated drafter's draft block attends {DRAFT_ATTENTION[0]!r} (I-DLM) or {DRAFT_ATTENTION[1]!r} "
                f"(bidirectional within the block), got attention={attention!r}."
            )
        if drafter is None and attention == "causal":
            raise ValueError("attention='causal' is for gated drafters (drafter='gated_lora'); a diffusion model "
                             "attends 'bidirectional' or 'causal_prefix'.")
        if drafter is not None and (not isinstance(drafter_rank, int) or isinstance(drafter_rank, bool)
                                    or drafter_rank < 1):
            raise ValueError(f"drafter_rank must be an integer >= 1, got {drafter_rank!r}.")
        self.drafter = drafter
        self.drafter_rank = drafter_rank
        self.drafter_alpha = drafter_alpha
        self.drafter_target_modules = list(drafter_target_modules) if drafter_target_modules else None
        self.drafter_base_vocab_size = drafter_base_vocab_size
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        self.backbone_config = backbone_config
        self.mask_token_id = mask_token_id
        self.shift_logits = shift_logits
        self.attention = attention
        # Declared here (transformers 5 configs no longer define them): a config built without one still has it.
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id
        super().__init__(**kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            # A plain causal-LM checkpoint would otherwise load as an empty DiffusionLM config.
            raise ValueError(
                f"{pretrained_model_name_or_path} is a {model_type!r} checkpoint, not a DiffusionLM one. Adapt it first: "
                f"model = DiffusionLM.from_causal_lm({str(pretrained_model_name_or_path)!r}), then "
                f"model.save_pretrained(...) writes a checkpoint that DiffusionLM.from_pretrained loads."
            )
        return config_dict, kwargs

    @property
    def eos_token_ids(self) -> list[int]:
        """`eos_token_id` as a list (empty when unset)."""
        return token_id_list(self.eos_token_id)


__all__ = ["ATTENTION_PATTERNS", "DRAFTERS", "DRAFT_ATTENTION", "DiffusionLMConfig"]
