"""Text tokenizer of VILA-U: the slow ``LlamaTokenizer(legacy=False)`` of transformers 4.36, on
sentencepiece alone.

The official code loads ``llm/`` with ``AutoTokenizer.from_pretrained(path, use_fast=False,
legacy=False)`` under transformers 4.36.2 with the repository's patched
``tokenization_llama.py`` (it adds ``add_prefix_space``, default true). ``Tokenizer`` reproduces
what that object computes, id for id:

encode(text)
  1. every "\u2581" in the text becomes a space, then (add_prefix_space) one "\u2581" goes in front;
  2. the text is cut at the added tokens (``<unk> <s> </s>``, ``<im_start> <im_end> <vi_start>
     <vi_end>``): they are never seen by sentencepiece, so ``"<s>"`` typed by a user is BOS;
  3. each remaining piece goes to sentencepiece with ``add_dummy_prefix`` switched off. A piece
     that starts with a space or "\u2581" is encoded behind ``"<unk>"`` and the pieces of
     ``"<unk>"`` are dropped again (legacy=False trick: it keeps the leading space as a "\u2581"
     instead of letting sentencepiece eat it); pieces that follow an added token get no prefix;
  4. a lone "\u2581" directly in front of a special token at the very start is dropped;
  5. BOS first (add_bos_token).

decode(ids)
  Byte-fallback pieces are joined into UTF-8 by sentencepiece (each invalid byte -> U+FFFD), the
  first piece loses its leading "\u2581" (the prefix space of step 1). With
  ``skip_special_tokens=False`` the 4.36 rules for added tokens apply (see ``decode``).

| token | fixture id | 7B id |
|---|---|---|
| ``<unk>`` / ``<s>`` / ``</s>`` | 0 / 1 / 2 | 0 / 1 / 2 |
| ``<im_start> <im_end> <vi_start> <vi_end>`` | 512..515 | 32000..32003 |
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from .errors import CheckpointError, CheckpointNotFoundError

SPIECE_UNDERLINE = "\u2581"
IM_START, IM_END, VI_START, VI_END = "<im_start>", "<im_end>", "<vi_start>", "<vi_end>"

# A serialized ModelProto holding only normalizer_spec { add_dummy_prefix: false }: field 3
# (length-delimited, 2 bytes) wrapping field 3 (varint 0). Protobuf merges a repeated singular
# message field into the earlier one, so appending these bytes to tokenizer.model is the
# wire-level equivalent of the ``normalizer_spec.MergeFrom`` that transformers does with protobuf
# for legacy=False, without needing protobuf at run time.
_NO_DUMMY_PREFIX = b"\x1a\x02\x18\x00"

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass(frozen=True)
class AddedToken:
    """A token cut out of the text before sentencepiece runs (``added_tokens_decoder`` entry)."""

    content: str
    id: int
    special: bool  # one of bos/eos/unk/pad/additional_special_tokens: skipped by decode
    lstrip: bool = False  # eats the whitespace on its left
    rstrip: bool = False  # eats the whitespace on its right


def _content(value) -> str | None:
    """A token in tokenizer_config.json is a string or an AddedToken dict with "content"."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise CheckpointError(f"token entry {value!r} is neither a string nor a dict with 'content'")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


class Tokenizer:
    """VILA-U text tokenizer (see the module docstring for the exact rules)."""

    def __init__(
        self,
        sp: spm.SentencePieceProcessor,
        added_tokens: list[AddedToken],
        *,
        bos_token: str,
        eos_token: str,
        unk_token: str,
        pad_token: str,
        additional_special_tokens: tuple[str, ...] = (),
        add_prefix_space: bool = True,
    ):
        self.sp = sp  # add_dummy_prefix already off
        self.add_prefix_space = add_prefix_space
        self.added = {t.content: t for t in added_tokens}
        self._added_by_id = {t.id: t for t in added_tokens}
        for name, tok in (("bos", bos_token), ("eos", eos_token), ("unk", unk_token)):
            if tok not in self.added:
                raise CheckpointError(f"{name} token {tok!r} is not among the added tokens")
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.unk_token = unk_token
        self.pad_token = pad_token
        self.special_ids = frozenset(t.id for t in added_tokens if t.special)
        # Longest first so that, at one position, the longest added token wins (leftmost-longest,
        # as the transformers Trie cuts).
        alternatives = sorted(self.added, key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._unk_len = len(self.sp.encode(unk_token))
        self._n_sp = self.sp.get_piece_size()
        extra = sorted(t.id for t in added_tokens if t.id >= self._n_sp)
        if extra != list(range(self._n_sp, self._n_sp + len(extra))):
            raise CheckpointError(
                f"added token ids {extra} do not continue the sentencepiece vocabulary of "
                f"{self._n_sp} pieces without gaps"
            )
        self._vocab_size = self._n_sp + len(extra)
        # transformers 4.36 "legacy added tokens": non-special added tokens, and additional
        # special tokens past the sentencepiece vocabulary (<im_start> ...). ``decode`` keeps them
        # out of sentencepiece decoding.
        self._legacy_added = frozenset(
            t.content
            for t in added_tokens
            if not t.special or (t.content in additional_special_tokens and t.id >= self._n_sp)
        )

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, llm_dir: str | Path) -> Tokenizer:
        """Load ``tokenizer.model`` + ``tokenizer_config.json`` (+ ``special_tokens_map.json`` and
        ``added_tokens.json`` when present, as transformers does) from an HF LLaMA folder."""
        folder = Path(llm_dir)
        if not folder.is_dir():
            raise CheckpointNotFoundError(f"tokenizer folder {folder} does not exist")
        for name in ("tokenizer.model", "tokenizer_config.json"):
            if not (folder / name).is_file():
                raise CheckpointNotFoundError(
                    f"{name} not found in {folder}: the folder must be the checkpoint's llm/ "
                    "folder as saved by the official code"
                )
        model_path = folder / "tokenizer.model"
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model_path.read_bytes() + _NO_DUMMY_PREFIX)
        except (RuntimeError, OSError) as e:
            raise CheckpointError(f"{model_path} is not a sentencepiece model: {e}") from e

        # The file's "legacy" flag is not read: the official code always passes legacy=False.
        config = _read_json(folder / "tokenizer_config.json")
        klass = config.get("tokenizer_class", "LlamaTokenizer")
        if klass not in ("LlamaTokenizer", "LlamaTokenizerFast"):
            raise CheckpointError(
                f"tokenizer_class {klass!r} in {folder / 'tokenizer_config.json'}: only the "
                "LLaMA sentencepiece tokenizer of VILA-U is supported"
            )
        if config.get("add_eos_token", False):
            raise CheckpointError(
                f"add_eos_token is true in {folder / 'tokenizer_config.json'}; VILA-U prompts "
                "are built without a trailing EOS, set it to false"
            )
        if config.get("sp_model_kwargs"):
            raise CheckpointError(
                f"sp_model_kwargs {config['sp_model_kwargs']!r} (sampling options) are not "
                "supported; remove them from tokenizer_config.json"
            )
        # transformers lets special_tokens_map.json override the config's special tokens.
        specials = {k: _content(config.get(k)) for k in _SPECIAL_KEYS}
        additional = [_content(t) for t in config.get("additional_special_tokens") or []]
        map_path = folder / "special_tokens_map.json"
        if map_path.is_file():
            smap = _read_json(map_path)
            for k in _SPECIAL_KEYS:
                if k in smap:
                    specials[k] = _content(smap[k])
            if "additional_special_tokens" in smap:
                additional = [_content(t) for t in smap["additional_special_tokens"]]
        for k in ("bos_token", "eos_token", "unk_token"):
            if not specials[k]:
                raise CheckpointError(f"{k} is not set in {folder / 'tokenizer_config.json'}")
        # --version v1 (VILA-U training) sets pad_token = unk_token when none is configured.
        specials["pad_token"] = specials["pad_token"] or specials["unk_token"]
        special_set = set(specials.values()) | set(additional)

        added: dict[str, AddedToken] = {}
        for key, entry in (config.get("added_tokens_decoder") or {}).items():
            if not isinstance(entry, dict) or entry.get("single_word"):
                raise CheckpointError(
                    f"added token {key}: {entry!r} in {folder / 'tokenizer_config.json'} is not "
                    "supported (single_word tokens are not used by VILA-U)"
                )
            text = _content(entry)
            added[text] = AddedToken(
                text,
                int(key),
                text in special_set,
                bool(entry.get("lstrip", False)),
                bool(entry.get("rstrip", False)),
            )
        added_path = folder / "added_tokens.json"
        if added_path.is_file():
            for text, idx in _read_json(added_path).items():
                if text in added and added[text].id != idx:
                    raise CheckpointError(
                        f"{added_path} gives {text!r} id {idx} but tokenizer_config.json gives "
                        f"id {added[text].id}; the two files disagree"
                    )
                added.setdefault(text, AddedToken(text, int(idx), text in special_set))
        # Special tokens are never split either, even when not listed as added tokens.
        for text in special_set:
            if text not in added:
                idx = sp.piece_to_id(text)
                if sp.id_to_piece(idx) != text:
                    raise CheckpointError(
                        f"special token {text!r} has no id: it is neither a sentencepiece piece "
                        f"nor listed in {folder / 'added_tokens.json'}"
                    )
                added[text] = AddedToken(text, idx, True)
        for tok in added.values():
            if tok.id < sp.get_piece_size() and sp.id_to_piece(tok.id) != tok.content:
                raise CheckpointError(
                    f"added token {tok.content!r} claims id {tok.id}, which is the sentencepiece "
                    f"piece {sp.id_to_piece(tok.id)!r} in {model_path}"
                )
        return cls(
            sp,
            list(added.values()),
            bos_token=specials["bos_token"],
            eos_token=specials["eos_token"],
            unk_token=specials["unk_token"],
            pad_token=specials["pad_token"],
            additional_special_tokens=tuple(additional),
            add_prefix_space=bool(config.get("add_prefix_space", True)),
        )

    # -- ids -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Sentencepiece pieces + added tokens (the LLM's embedding rows)."""
        return self._vocab_size

    def token_to_id(self, token: str) -> int:
        """Id of an added/special token such as ``"<im_start>"``."""
        if token not in self.added:
            raise ValueError(
                f"{token!r} is not an added token of this tokenizer; known: {sorted(self.added)}"
            )
        return self.added[token].id

    bos_id = property(lambda self: self.token_to_id(self.bos_token))
    eos_id = property(lambda self: self.token_to_id(self.eos_token))
    unk_id = property(lambda self: self.token_to_id(self.unk_token))
    pad_id = property(lambda self: self.token_to_id(self.pad_token))
    im_start_id = property(lambda self: self.token_to_id(IM_START))
    im_end_id = property(lambda self: self.token_to_id(IM_END))
    vi_start_id = property(lambda self: self.token_to_id(VI_START))
    vi_end_id = property(lambda self: self.token_to_id(VI_END))

    def id_to_piece(self, idx: int) -> str:
        """The token string of one id (added-token content or sentencepiece piece)."""
        if not isinstance(idx, int) or isinstance(idx, bool):
            idx = int(idx)  # numpy / torch integer scalars
        if not 0 <= idx < self._vocab_size:
            raise ValueError(
                f"token id {idx} is outside the vocabulary [0, {self._vocab_size}); image "
                "placeholders (-200) and image codes are not text tokens"
            )
        tok = self._added_by_id.get(idx)
        return tok.content if tok is not None else self.sp.id_to_piece(idx)

    # -- encode ----------------------------------------------------------------------------
    def _split_added(self, text: str) -> list[tuple[str, AddedToken | None]]:
        """Cut ``text`` at added tokens, applying their lstrip/rstrip to the neighbours."""
        parts = self._split_re.split(text)
        # Odd indices are matches; drop empty text so neighbours are what the Trie would give.
        segs = [(p, self.added[p] if i % 2 else None) for i, p in enumerate(parts) if p]
        for i, (_, tok) in enumerate(segs):
            if tok is None:
                continue
            if tok.rstrip and i + 1 < len(segs) and segs[i + 1][1] is None:
                segs[i + 1] = (segs[i + 1][0].lstrip(), None)
            if tok.lstrip and i > 0 and segs[i - 1][1] is None:
                segs[i - 1] = (segs[i - 1][0].rstrip(), None)
        return segs

    def _sp_pieces(self, text: str) -> list[str]:
        """Sentencepiece pieces of one chunk between added tokens (legacy=False rule)."""
        if not text.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp.encode(text, out_type=str)
        # A leading space could be dropped by sentencepiece's normalizer (remove_extra_whitespaces
        # models); behind "<unk>" it is kept as a "\u2581", then the "<unk>" pieces are dropped.
        pieces = self.sp.encode(self.unk_token + text, out_type=str)
        return pieces[self._unk_len :] if len(pieces) >= self._unk_len else pieces

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` (no BOS), as ``LlamaTokenizer.tokenize``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            return []
        text = text.replace(SPIECE_UNDERLINE, " ")
        if self.add_prefix_space:
            text = SPIECE_UNDERLINE + text
        tokens: list[str] = []
        for chunk, tok in self._split_added(text):
            if tok is not None:
                tokens.append(chunk)
            elif chunk:
                tokens.extend(self._sp_pieces(chunk))
        # The prefix "\u2581" of a text that starts with a special token stays alone: drop it.
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE:
            second = self.added.get(tokens[1])
            if second is not None and second.special:
                tokens = tokens[1:]
        return tokens

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``; BOS first when ``add_bos`` (as ``tokenizer(text).input_ids``)."""
        ids = [
            self.added[t].id if t in self.added else self.sp.piece_to_id(t)
            for t in self.tokenize(text)
        ]
        return [self.bos_id, *ids] if add_bos else ids

    # -- decode ----------------------------------------------------------------------------
    def _pieces_to_text(self, pieces: list[str]) -> str:
        """``LlamaTokenizer.convert_tokens_to_string``: strip the prefix space of the first
        piece, let sentencepiece decode runs of pieces (bytes -> UTF-8), keep specials as text."""
        if not pieces:
            return ""
        if self.add_prefix_space and pieces[0].startswith(SPIECE_UNDERLINE):
            pieces = [pieces[0][1:], *pieces[1:]]
        out, run = "", []
        for p in pieces:
            tok = self.added.get(p)
            if tok is not None and tok.special:
                out += self.sp.decode_pieces(run) + p
                run = []
            else:
                run.append(p)
        return out + self.sp.decode_pieces(run)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` exactly as transformers 4.36 ``tokenizer.decode`` (the official
        ``generate_content`` uses ``skip_special_tokens=True``).

        With ``skip_special_tokens=False``, added tokens beyond the sentencepiece vocabulary
        (``<im_start>`` ...) cut the ids into runs decoded separately (each run loses its leading
        prefix space) and the runs are joined with single spaces, as 4.36 does
        (``spaces_between_special_tokens`` defaults to true in ``_decode``).
        """
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        pieces = [self.id_to_piece(i) for i in ids]
        texts, run = [], []
        for p in pieces:
            if p in self._legacy_added:
                if run:
                    text = self._pieces_to_text(run)
                    if text:
                        texts.append(text)
                    run = []
                texts.append(p)
            else:
                run.append(p)
        if run:
            texts.append(self._pieces_to_text(run))
        return " ".join(texts)

    def __len__(self) -> int:
        return self._vocab_size

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self._vocab_size}, sentencepiece={self._n_sp}, "
            f"added={sorted(self.added, key=lambda t: self.added[t].id)})"
        )


def _incomplete_utf8_tail(data: bytes) -> bool:
    """True when the end of ``data`` could still be completed into a UTF-8 character by more
    bytes (lead byte whose continuation bytes have not all arrived). Lenient on purpose: holding
    back too much only delays text, emitting too early would show a wrong U+FFFD."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if 0x80 <= b <= 0xBF:  # continuation byte: look further back for the lead byte
            continue
        need = 2 if 0xC0 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if b >= 0xF0 else 1
        return need > back
    return False


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class StreamDecoder:
    """Incremental detokenizer for streamed generation (``skip_special_tokens=True`` rules).

    ``push(id)`` returns the text that became final with this id (often ""); ``flush()`` returns
    the rest. The concatenation of all returned pieces equals ``tokenizer.decode(all_ids)``.
    A multi-byte character spelled by byte-fallback pieces is only emitted once complete.

    Sentencepiece decoding (add_dummy_prefix off) is concatenative between pieces unless a
    UTF-8 sequence spelled by byte pieces is cut, so only the byte pieces of an unfinished
    character are kept; everything else is decoded and emitted at once.
    """

    def __init__(self, tokenizer: Tokenizer):
        if any(not t.special for t in tokenizer.added.values()):
            raise ValueError(
                "StreamDecoder needs every added token to be special (skipped when decoding); "
                "this tokenizer has non-special added tokens, use Tokenizer.decode instead"
            )
        self.tok = tokenizer
        self._held: list[str] = []  # byte pieces of a character that is not complete yet
        self._at_start = True  # nothing decoded yet: the first piece loses its prefix space

    def _take(self) -> str:
        pieces, self._held = self._held, []
        if not pieces:
            return ""
        if self._at_start:
            self._at_start = False
            return self.tok._pieces_to_text(pieces)
        return self.tok.sp.decode_pieces(pieces)

    def push(self, token_id: int) -> str:
        """Feed one generated id; returns the newly final text (possibly "")."""
        if int(token_id) in self.tok.special_ids:  # decode skips them; byte runs join across
            return ""
        piece = self.tok.id_to_piece(token_id)
        self._held.append(piece)
        if _BYTE_PIECE.fullmatch(piece) is not None:
            tail = bytearray()
            for p in reversed(self._held):
                m = _BYTE_PIECE.fullmatch(p)
                if m is None:
                    break
                tail.insert(0, int(m.group(1), 16))
            if _incomplete_utf8_tail(bytes(tail)):
                return ""
        return self._take()

    def flush(self) -> str:
        """Text still held back (an unfinished byte sequence decodes to U+FFFD per byte)."""
        return self._take()
