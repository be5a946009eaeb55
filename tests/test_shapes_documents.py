"""The text-only documents of the BLIP-2 demo's LLM: known words, facts before the questions."""

from __future__ import annotations

from vlkit.data.conversations import conversation_tokenizer
from vlkit.data.shapes_documents import DESCRIBE_PROMPT, shapes_document, write_documents
from vlkit.data.synthetic import POSITION_ANSWERS, ShapesDataset, full_caption


def test_documents_use_known_words_and_answer_from_their_own_caption(tmp_path):
    tok = conversation_tokenizer()
    unk = tok.token_to_id("[UNK]")
    ds = ShapesDataset("train", size=300, seed=0)
    docs = [shapes_document(ds, i) for i in range(300)]
    assert all(unk not in tok.encode(d) for d in docs)
    assert docs == [shapes_document(ShapesDataset("train", size=300, seed=0), i) for i in range(300)]  # pure
    kinds = {"qa": 0, "describe": 0, "caption": 0}
    for i, doc in enumerate(docs):
        caption = full_caption(ds.attributes(i))
        if DESCRIBE_PROMPT in doc:
            kinds["describe"] += 1
            assert doc == f"{caption} {DESCRIBE_PROMPT} {caption}"
        elif "question:" in doc:
            kinds["qa"] += 1
            assert doc.startswith(caption + " question: ")  # the facts come first
            a = ds.attributes(i)
            facts = {a.colour, a.shape, a.size, POSITION_ANSWERS[a.position], "yes", "no"}
            answers = [part.split(" question:")[0] for part in doc.split(" answer: ")[1:]]
            assert answers and set(answers) <= facts, (doc, facts)  # answers about this very shape
        else:
            kinds["caption"] += 1
    assert min(kinds.values()) > 60, kinds
    train, val = write_documents(tmp_path, train_size=5, val_size=3)
    assert len(train.read_text().splitlines()) == 5 and len(val.read_text().splitlines()) == 3
