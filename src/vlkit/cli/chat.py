"""``vlkit chat``: talk with a LLaVA-style VLM about images, the answer streamed as it is generated.

    vlkit chat --model FOLDER photo.png                  # interactive; the conversation is kept
    vlkit chat --model FOLDER photo.png --prompt "what shape is it?"   # one answer, then exit

Interactive commands (one per line): ``/image PATH`` adds an image (the next message is about
it; earlier turns stay), ``/reset`` forgets the conversation and the images, ``/quit`` (or end of
input) ends. A line that fails (a missing image, an unknown command) prints one error line and the
session goes on.
"""

from __future__ import annotations

import sys

import torch

from ..eval.chat import answer
from ..eval.resolve import load_model_and_tokenizer
from ..models.vlm import VLM
from ..runtime import resolve_device
from ..tokenizers.chat import IMAGE_TOKEN
from .caption import read_images

HELP = "commands: /image PATH (add an image), /reset (new conversation), /quit"


def add_commands(commands) -> None:
    p = commands.add_parser(
        "chat",
        help="chat with a LLaVA-style VLM about images (streamed answers)",
        description="Answer --prompt once, or read messages from the input and answer each, keeping the conversation. "
        + HELP,
    )
    p.add_argument("image", nargs="?", default=None, metavar="IMAGE", help="the image to talk about (optional)")
    p.add_argument("--model", required=True, help="a VLM: model folder, run folder, checkpoint, or hub id")
    p.add_argument("--tokenizer", default=None, help="tokenizer name or folder (default: the model's own)")
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--sample", action="store_true", help="sample (with --temperature) instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0, help="seed of --sample")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    p.set_defaults(run=run_chat)


class Session:
    """A conversation: the turns so far, the images shown, and whether the next message gets one."""

    def __init__(self, model: VLM, tokenizer, args) -> None:
        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.turns: list[dict] = []
        self.images: list[torch.Tensor] = []
        self.pending = False  # an image was added and no message has referred to it yet

    def add_image(self, path: str) -> None:
        self.images.append(read_images([path], self.model)[0])
        self.pending = True

    def reset(self) -> None:
        self.turns, self.images, self.pending = [], [], False

    def say(self, text: str, out) -> str:
        """Answer ``text``, streaming the answer to ``out``; the turn pair joins the conversation."""
        content = f"{IMAGE_TOKEN}\n{text}" if self.pending else text
        turns = [*self.turns, {"from": "human", "value": content}]
        pixels = torch.stack(self.images) if self.images else None
        options = {}
        if self.args.sample:
            generator = torch.Generator(device=self.args.device).manual_seed(self.args.seed)
            options = dict(do_sample=True, temperature=self.args.temperature, generator=generator)

        def show(piece: str) -> None:
            out.write(piece)
            out.flush()

        reply = answer(
            self.model,
            self.tokenizer,
            pixels,
            turns,
            max_new_tokens=self.args.max_new_tokens,
            on_text=show,
            **options,
        )
        out.write("\n")
        out.flush()
        self.turns = [*turns, {"from": "gpt", "value": reply.strip()}]
        self.pending = False
        return reply


def _load(args) -> tuple[VLM, object]:
    args.device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer)
    if not isinstance(model, VLM):
        raise TypeError(f"{args.model} holds a {type(model).__name__}, not a VLM (LLaVA-style) model")
    if tokenizer is None:
        raise ValueError(f"{args.model} has no tokenizer; pass --tokenizer")
    return model.to(args.device).eval(), tokenizer


def _command(session: Session, line: str) -> bool:
    """Run a /command; False for /quit."""
    name, _, rest = line.partition(" ")
    if name == "/quit":
        return False
    if name == "/reset":
        session.reset()
        print("(new conversation)", flush=True)
    elif name == "/image":
        if not rest.strip():
            raise ValueError("/image needs a path: /image PATH")
        session.add_image(rest.strip())
        print(f"(image {rest.strip()} added)", flush=True)
    else:
        raise ValueError(f"unknown command {name!r}; {HELP}")
    return True


def run_chat(args) -> int:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    model, tokenizer = _load(args)
    session = Session(model, tokenizer, args)
    if args.image is not None:
        session.add_image(args.image)
    if args.prompt is not None:
        session.say(args.prompt, sys.stdout)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print(HELP, flush=True)
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(session, line):
                    return 0
            else:
                session.say(line, sys.stdout)
        except (ValueError, OSError, KeyError, TypeError) as e:  # one line, and the session goes on
            from . import error_line

            print(f"vlkit chat: error: {error_line(e)}", file=sys.stderr, flush=True)
