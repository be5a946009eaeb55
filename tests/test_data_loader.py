"""Sampler and step loader: shards cover the epoch, a resumed position gives the same batches."""

import pytest
import torch

from vlkit.data import ResumableSampler, StepLoader


class Numbers:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def collate(items):
    return {"index": torch.tensor(items)}


def test_shards_are_disjoint_and_cover_the_epoch():
    shards = [ResumableSampler(103, seed=5, rank=r, world_size=4) for r in range(4)]
    for s in shards:
        s.set_epoch(2)
    parts = [list(s) for s in shards]
    assert all(len(p) == 25 for p in parts)  # drop_last: equal counts on every rank
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == 100 and set(flat) <= set(range(103))
    # rank r takes every 4th index of the epoch's permutation, as DistributedSampler does
    order = ResumableSampler(103, seed=5).indices(2)
    assert parts[1] == order[:100][1::4]
    # so one global batch of 4 x b is one process's batch of 4 x b, as a set
    assert sorted(order[:8]) == sorted(parts[0][:2] + parts[1][:2] + parts[2][:2] + parts[3][:2])


def test_epochs_differ_and_start_offset():
    s = ResumableSampler(50, seed=0)
    assert s.indices(0) != s.indices(1) and sorted(s.indices(0)) == list(range(50))
    s.set_epoch(1, start=20)
    assert list(s) == s.indices(1)[20:] and len(s) == 30
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_step_loader_resumes_at_the_same_batch():
    loader = StepLoader(Numbers(23), collate, batch_size=4, seed=1)
    assert loader.steps_per_epoch == 5
    first = [(s, e, b["index"].tolist()) for (s, e, b), _ in zip(loader.batches(0), range(13))]
    assert [s for s, _, _ in first] == list(range(1, 14)) and first[5][1] == 1
    again = [(s, e, b["index"].tolist()) for (s, e, b), _ in zip(loader.batches(7), range(6))]
    assert again == first[7:13]
    ends = []
    gen = loader.batches(3, on_epoch_end=ends.append)
    steps = [next(gen)[0] for _ in range(7)]  # steps 4, 5 end epoch 0; 6..10 are epoch 1
    assert steps == list(range(4, 11)) and ends == [0]
    next(gen)
    assert ends == [0, 1]


def test_errors():
    with pytest.raises(ValueError, match="batch_size 8 x 2 processes"):
        StepLoader(Numbers(10), collate, batch_size=8, world_size=2)
    with pytest.raises(ValueError, match="rank 2"):
        ResumableSampler(10, rank=2, world_size=2)


class Texts(Numbers):
    def length(self, i):
        return (i * 37) % 50


def test_grouped_batches_are_runs_of_the_sorted_group():
    data, b = Texts(64 * 8 + 300), 8
    s = ResumableSampler(len(data), seed=3, lengths=data.length, batch_size=b)
    s.set_epoch(1)
    grouped, order = list(s), s.indices(1)
    assert sorted(grouped) == sorted(order) == list(range(len(data)))  # every sample once
    for begin in (0, 512):  # groups of 64 batches: each batch is a run of the group sorted by length
        group = sorted(order[begin : begin + 512], key=data.length)
        runs = [group[i : i + b] for i in range(0, len(group) // b * b, b)]
        batches = [grouped[i : i + b] for i in range(begin, begin + len(runs) * b, b)]
        assert sorted(batches) == sorted(runs) and batches != runs  # the same batches, shuffled
    assert grouped[-(300 % b) :] == group[-(300 % b) :]  # the partial batch stays last
    s.set_epoch(1, start=5 * b)
    assert list(s) == grouped[5 * b :]  # resumes inside a group
    s.set_epoch(1, start=70 * b)
    assert list(s) == grouped[70 * b :]  # and after skipping a whole group
    s.set_epoch(2)
    assert list(s) != grouped


def test_grouping_by_length_halves_the_padding_of_shapes_text():
    from vlkit.data.conversations import conversation_tokenizer
    from vlkit.data.text_corpus import ShapesText
    from vlkit.train.recipes.lm import TextCollator

    data, collate = ShapesText(size=1024), TextCollator(conversation_tokenizer(), max_length=64)

    def padded_tokens(group_by_length):
        loader = StepLoader(data, collate, batch_size=16, group_by_length=group_by_length)
        batches = [batch for (_, _, batch), _ in zip(loader.batches(0), range(loader.steps_per_epoch))]
        return sum(x["input_ids"].numel() for x in batches), sum(int(x["attention_mask"].sum()) for x in batches)

    (plain, real), (grouped, same) = padded_tokens(False), padded_tokens(True)
    assert same == real  # the same samples
    assert grouped < 0.7 * plain and grouped < 1.3 * real


def test_grouping_needs_lengths():
    with pytest.raises(ValueError, match="data.group_by_length needs a dataset"):
        StepLoader(Numbers(64), collate, batch_size=8, group_by_length=True)
