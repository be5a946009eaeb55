"""VQA accuracy as the official VQA evaluation (GT-Vision-Lab/VQA, ``vqaEval.py``) computes it.

An answer's accuracy against the 10 human answers of a question is ``min(#matching / 3, 1)``
averaged over the 10 subsets of 9 annotators (each annotator left out once), so that a
prediction given by 1, 2, 3 or 4+ annotators scores 0.3, 0.6, 0.9 and 1.0.

Normalisation, as the official script does it:
- the predicted answer: newlines and tabs to spaces, stripped, punctuation processed, then
  lower-cased, number words mapped to digits, articles dropped and contractions restored;
- the human answers: newlines and tabs to spaces, stripped, and, only when the annotators
  disagree, punctuation processed (the released annotations are normalised already).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# The official pattern, kept as written: "(?!<=\d)" is a look-ahead (not the intended
# look-behind), so every period not followed by a digit is removed.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP_MAX = 32  # the official call passes re.UNICODE (32) where ``sub`` takes its count


def process_punctuation(text: str) -> str:
    """Drop each punctuation mark when it touches a space (or the text has a digit,digit comma),
    else turn it into a space; then remove periods that are not followed by a digit."""
    out = text
    has_number_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or has_number_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_MAX)


def process_digit_article(text: str) -> str:
    """Lower-case, number words to digits ("two" -> "2"), drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """The official normalisation of a predicted answer."""
    return process_digit_article(process_punctuation(_clean(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy in [0, 1] of one predicted answer against the human answers of one question."""
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError("answers must be a non-empty list of the human answers (strings)")
    pred = normalize_answer(prediction)
    gts = [_clean(a) for a in answers]
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    matches = sum(a == pred for a in gts)
    # leaving annotator i out removes one match exactly when annotator i gave the answer
    total = sum(min(1.0, (matches - (a == pred)) / 3) for a in gts)
    return total / len(gts)


def vqa_score(predictions, answers) -> tuple[float, list[float]]:
    """Mean accuracy over questions and the per-question accuracies (both in [0, 1]).

    ``predictions``/``answers``: parallel sequences (a string and a list of human answers per
    question) or mappings question id -> prediction / list of human answers. The official
    script reports 100 x this, rounded to 2 decimals.
    """
    if isinstance(predictions, Mapping) != isinstance(answers, Mapping):
        raise TypeError("predictions and answers must both be mappings (question id -> ...) or both sequences")
    if isinstance(predictions, Mapping):
        missing = [q for q in predictions if q not in answers]
        if missing:
            raise ValueError(f"no human answers for question ids {missing[:5]}")
        keys = list(predictions)
        predictions, answers = [predictions[q] for q in keys], [answers[q] for q in keys]
    elif len(predictions) != len(answers):
        raise ValueError(f"got {len(predictions)} predictions but {len(answers)} answer lists")
    if len(predictions) == 0:
        raise ValueError("no questions to score")
    scores = [vqa_accuracy(p, a) for p, a in zip(predictions, answers)]
    return sum(scores) / len(scores), scores
