"""Numbers that several families and converters share, defined once."""

# Per-channel image normalisation of OpenAI's CLIP (also used by ALBEF and BLIP).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
