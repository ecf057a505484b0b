"""Chat templates and rendering: one function turns a conversation into token ids, for training and
for generation alike, so the two can never drift apart.

A template produces `Segment`s: literal control tokens (looked up by id, never parsed from text, so
content cannot inject `<end_of_turn>`), template text, and message content, each marked as trained or
not. `render_for_training` tokenizes the segments into `input_ids` + `labels` (-100 where the loss is
masked); `render_prompt` tokenizes the same segments up to the generation prompt.

Templates:

- `gemma` (babeltune's default for base models without a template), Gemma's turn format::

      <bos><start_of_turn>user
      {system}\\n\\n{user}<end_of_turn>
      <start_of_turn>model
      {assistant}<end_of_turn>
      ...

  A system turn, if any, is prepended to the first user turn (Gemma has no system role). The loss
  covers each assistant turn's content and its `<end_of_turn>`, which is also the stop token; the
  newline after it is template text and is not trained. `<end_of_turn>` therefore appears exactly
  once per trained turn, and no extra EOS is appended.
- `tokenizer`: the model's own `chat_template` (Jinja, rendered by transformers). Assistant spans are
  found by rendering each prefix of the conversation with and without the assistant reply; the stop
  token is the tokenizer's EOS (or the template's end-of-turn token, when it has one).
- `auto`: `tokenizer` when the tokenizer has a chat template, else `gemma`. A tokenizer whose
  template is exactly `GEMMA_CHAT_TEMPLATE` (what babeltune writes into the models it trains from a
  base without a template) gets `gemma` too, so a tuned model renders exactly as its base did.

Every model babeltune writes carries the template it was trained with (`with_chat_template`): the
`gemma` template as the Jinja `GEMMA_CHAT_TEMPLATE`, which transformers' `apply_chat_template(...,
tokenize=True)` (and so vLLM, TGI, other harnesses) turns into the token ids `render_prompt` and
`render_for_training` give, or the base model's own template, kept as it is. One difference is left:
a Jinja template emits control tokens as text, so message content that spells `<end_of_turn>` becomes
the control token there, while babeltune keeps such content as text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from babeltune.data.records import Message

IGNORE_INDEX = -100
TemplateName = Literal["auto", "gemma", "tokenizer"]
TrainOn = Literal["all_assistant", "last_assistant"]


class RenderError(ValueError):
    """A conversation that cannot be rendered as asked (missing tokens, broken template, EOS rule)."""


@dataclass(frozen=True)
class Segment:
    """A piece of rendered conversation."""

    text: str
    special: bool = False
    """True: `text` is one control token, looked up by id. False: text to tokenize."""
    train: bool = False
    """Whether the loss covers these tokens."""
    turn: int = -1
    """Index of the message this segment belongs to (-1 for template text outside a message)."""
    parse_special: bool = False
    """Whether control tokens spelled inside `text` become control tokens (Jinja templates emit them
    as text). False keeps message content from injecting them."""


class ChatTemplate(Protocol):
    """What babeltune needs from a chat template."""

    name: str

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        """Render `messages`; trained segments are marked. With `add_generation_prompt`, end with the
        header of an assistant turn."""
        ...

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """Token ids that end an assistant turn."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for run logs."""
        ...


class GemmaTurnTemplate:
    """Gemma's turn format (see the module docstring); babeltune's default template."""

    name = "gemma"
    start_of_turn = "<start_of_turn>"
    end_of_turn = "<end_of_turn>"
    roles: ClassVar[dict[str, str]] = {"user": "user", "assistant": "model"}

    def __init__(self, bos_token: str | None) -> None:
        self.bos_token = bos_token

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        segs: list[Segment] = []
        if self.bos_token:
            segs.append(Segment(self.bos_token, special=True))
        system = ""
        for i, msg in enumerate(messages):
            if msg.role == "system":
                system = msg.content
                continue
            content = msg.content
            if msg.role == "user" and system:
                content, system = f"{system}\n\n{content}", ""
            trained = msg.role == "assistant"
            segs.append(Segment(self.start_of_turn, special=True))
            segs.append(Segment(f"{self.roles[msg.role]}\n"))
            segs.append(Segment(content, train=trained, turn=i))
            segs.append(Segment(self.end_of_turn, special=True, train=trained, turn=i))
            segs.append(Segment("\n"))
        if add_generation_prompt:
            segs.append(Segment(self.start_of_turn, special=True))
            segs.append(Segment(f"{self.roles['assistant']}\n"))
        return segs

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        return [_token_id(tokenizer, self.end_of_turn)]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": "<bos><start_of_turn>user\\n{user}<end_of_turn>\\n<start_of_turn>model\\n{assistant}"
            "<end_of_turn>\\n",
            "system": "prepended to the first user turn, separated by a blank line",
            "trained": "assistant content + <end_of_turn>",
            "stop": self.end_of_turn,
        }


GEMMA_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] %}"
    "{% elif message['role'] in ['user', 'assistant'] %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'user' and ns.system %}"
    "{% set content = ns.system + '\\n\\n' + content %}{% set ns.system = '' %}{% endif %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' }}"
    "{{ content + '<end_of_turn>\\n' }}"
    "{% else %}{{ raise_exception('unknown role ' + message['role'] + '; use system, user or assistant') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
"""`GemmaTurnTemplate` as a Jinja chat template (transformers' `chat_template`): the same text, turn
by turn, so `apply_chat_template` gives the same token ids as `render_prompt` / `render_for_training`
(tested in every bundled language). Written into the tokenizer of every model babeltune trains with
the `gemma` template."""


class TokenizerTemplate:
    """The tokenizer's own Jinja chat template, split into segments by prefix differences."""

    name = "tokenizer"

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise RenderError("template 'tokenizer' asked for, but the tokenizer has no chat_template")
        self.tokenizer = tokenizer

    def _text(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            [m.to_dict() for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(text)

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        segs: list[Segment] = []
        done = ""
        for i, msg in enumerate(messages):
            if msg.role != "assistant":
                continue
            prefix = self._text(messages[:i], add_generation_prompt=True)
            full = self._text(messages[: i + 1], add_generation_prompt=False)
            if not prefix.startswith(done) or not full.startswith(prefix):
                raise RenderError(
                    "the tokenizer's chat template does not render conversations as growing prefixes; "
                    "use template=gemma or fix the template"
                )
            segs.append(Segment(prefix[len(done):], parse_special=True))
            segs.append(Segment(full[len(prefix):], train=True, turn=i, parse_special=True))
            done = full
        final = self._text(messages, add_generation_prompt=add_generation_prompt)
        if not final.startswith(done):
            raise RenderError("the tokenizer's chat template changes earlier turns when a turn is added")
        if final[len(done):]:
            segs.append(Segment(final[len(done):], parse_special=True))
        return segs

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        ids: list[int] = []
        for token in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"):
            with contextlib.suppress(RenderError):
                ids.append(_token_id(tokenizer, token))
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
            ids.append(tokenizer.eos_token_id)
        if not ids:
            raise RenderError("the tokenizer has no EOS or end-of-turn token to stop generation on")
        return ids

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "chat_template": self.tokenizer.chat_template, "trained": "assistant turns"}


def get_template(tokenizer: Any, name: TemplateName = "auto") -> ChatTemplate:
    """The chat template to use with `tokenizer` (see the module docstring for `auto`)."""
    own = getattr(tokenizer, "chat_template", None)
    if name == "tokenizer" or (name == "auto" and own and own != GEMMA_CHAT_TEMPLATE):
        return TokenizerTemplate(tokenizer)
    if name not in ("auto", "gemma"):
        raise RenderError(f"unknown template {name!r}; choose auto, gemma or tokenizer")
    template = GemmaTurnTemplate(tokenizer.bos_token)
    for token in (template.start_of_turn, template.end_of_turn):
        _token_id(tokenizer, token)
    return template


def _token_id(tokenizer: Any, token: str) -> int:
    # A direct lookup with a round trip, not get_vocab(): that builds the whole 262k-entry dict per call.
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or tokenizer.convert_ids_to_tokens(int(token_id)) != token:
        raise RenderError(
            f"the tokenizer has no {token} token, which the gemma template needs; use a model with its "
            "own chat template (template=tokenizer) or a tokenizer with Gemma's turn tokens"
        )
    return int(token_id)


def jinja_template(template: ChatTemplate, tokenizer: Any) -> str:
    """The Jinja chat template that renders as `template` does: `GEMMA_CHAT_TEMPLATE` for the gemma
    template, the tokenizer's own for the tokenizer template."""
    if isinstance(template, GemmaTurnTemplate):
        return GEMMA_CHAT_TEMPLATE
    own = getattr(tokenizer, "chat_template", None)
    if not isinstance(own, str) or not own:
        raise RenderError(f"template {template.name!r} has no Jinja form to save with the model")
    return own


@contextlib.contextmanager
def with_chat_template(tokenizer: Any, template: ChatTemplate) -> Iterator[Any]:
    """The tokenizer with `chat_template` set to `template`'s Jinja form while the block runs (to save
    it with a model), restored afterwards."""
    before = getattr(tokenizer, "chat_template", None)
    tokenizer.chat_template = jinja_template(template, tokenizer)
    try:
        yield tokenizer
    finally:
        tokenizer.chat_template = before


@dataclass
class RenderedExample:
    """Token ids of one conversation and its labels (-100 where the loss is masked)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _encode(tokenizer: Any, seg: Segment) -> list[int]:
    if seg.special:
        return [_token_id(tokenizer, seg.text)]
    if not seg.text:
        return []
    # split_special_tokens: content that spells "<end_of_turn>" stays text, it cannot end a turn.
    ids = tokenizer(seg.text, add_special_tokens=False, split_special_tokens=not seg.parse_special)["input_ids"]
    return list(ids)


def render_for_training(
    tokenizer: Any, template: ChatTemplate, messages: Sequence[Message], train_on: TrainOn = "all_assistant"
) -> RenderedExample:
    """Tokenize a conversation and mask the loss to assistant tokens.

    `train_on='last_assistant'` trains only the final assistant turn. Checks that every trained turn
    ends with exactly one stop token (no missing or duplicated EOS) and that BOS is not doubled.
    """
    segs = template.segments(messages, add_generation_prompt=False)
    last_turn = max((s.turn for s in segs if s.train), default=-1)
    stop_ids = set(template.stop_token_ids(tokenizer))
    input_ids: list[int] = []
    labels: list[int] = []
    trained_turns: dict[int, list[int]] = {}
    for seg in segs:
        ids = _encode(tokenizer, seg)
        train = seg.train and (train_on == "all_assistant" or seg.turn == last_turn)
        input_ids.extend(ids)
        labels.extend(ids if train else [IGNORE_INDEX] * len(ids))
        if train:
            trained_turns.setdefault(seg.turn, []).extend(ids)
    if not trained_turns:
        raise RenderError("the conversation has no assistant turn to train on")
    for turn, ids in trained_turns.items():
        stop_at = [k for k, token in enumerate(ids) if token in stop_ids]
        # Exactly one stop token, at the end; a template's own trailing newline token may follow it.
        if len(stop_at) != 1 or stop_at[0] < len(ids) - 2:
            raise RenderError(
                f"assistant turn {turn} has {len(stop_at)} stop token(s) in its trained span; exactly one, "
                "at its end, is required (check the template's EOS handling)"
            )
    _check_bos(tokenizer, input_ids)
    return RenderedExample(input_ids, labels)


def render_prompt(tokenizer: Any, template: ChatTemplate, messages: Sequence[Message]) -> list[int]:
    """Token ids of the conversation followed by the assistant turn header: what generation continues."""
    if messages and messages[-1].role == "assistant":
        messages = messages[:-1]
    ids: list[int] = []
    for seg in template.segments(messages, add_generation_prompt=True):
        ids.extend(_encode(tokenizer, seg))
    _check_bos(tokenizer, ids)
    return ids


def _check_bos(tokenizer: Any, ids: list[int]) -> None:
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        raise RenderError("rendered sequence starts with two BOS tokens (template and tokenizer both add one)")
