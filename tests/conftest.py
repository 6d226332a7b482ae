import pytest
import torch

from hf_dlm import DiffusionLM
from hf_dlm.testing import char_tokenizer, tiny_causal_lm

BACKBONES = ["gpt2", "llama", "qwen2"]
KERNELS = ["eager", "sdpa"]


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine can be 30x slower.
    Real-model tests (marker `slow`) keep torch's default."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer():
    return char_tokenizer()


def make_dlm(model_type="gpt2", attn_implementation="sdpa", seed=0, attention="bidirectional", **kwargs):
    """A tiny adapted model and its tokenizer (mask + pad tokens added)."""
    torch.manual_seed(seed)
    tok = char_tokenizer()
    causal = tiny_causal_lm(model_type, vocab_size=len(tok), attn_implementation=attn_implementation, **kwargs)
    model = DiffusionLM.from_causal_lm(causal, tok, attn_implementation=attn_implementation, attention=attention)
    return model, tok


@pytest.fixture
def dlm():
    return make_dlm()
