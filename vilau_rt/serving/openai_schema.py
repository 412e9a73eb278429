"""The slice of the OpenAI API the server speaks: request bodies (pydantic, validated), the
error object, and OpenAI messages -> a vicuna_v1 prompt with ``<image>`` placeholders.

Unknown request fields are ignored (clients send ``user``, ``frequency_penalty`` ...); known
fields are checked, and every mistake is a 400 with an OpenAI error object.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlparse

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ImageError, PromptError
from ..images import load_image
from ..prompts import VICUNA_V1, build_chat_prompt, user_message


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)


class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1, le=4)
    size: str | None = None
    response_format: Literal["b64_json"] = "b64_json"
    guidance_scale: float = Field(3.0, ge=0)  # classifier-free guidance (``cfg_scale``)
    seed: int | None = None


def error_body(message: str, type_: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class MediaError(ImageError):
    """An image_url the server refuses or cannot read."""


def load_media(url: str, allowed_dir: Path | None):
    """An image_url -> an RGB PIL image: ``data:`` URLs, or local paths / ``file://`` URLs under
    ``allowed_dir``; http(s) URLs are refused (the server fetches nothing)."""
    if url.startswith("data:"):
        head, sep, payload = url.partition(",")
        if not sep or ";base64" not in head:
            raise MediaError("a data: URL must look like data:image/png;base64,<base64 data>")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise MediaError(f"the data: URL holds invalid base64: {e}") from e
        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.load()
                return load_image(im)
        except (OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise MediaError(f"the data: URL holds no readable image: {e}") from e
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        raise MediaError("http(s) image URLs are not fetched: send the image as a data: URL")
    if scheme == "file":
        path = Path(unquote(urlparse(url).path))
    elif scheme in ("",) or Path(url).is_absolute():
        path = Path(url)
    else:
        raise MediaError(f"unsupported image URL scheme {scheme!r}: use data: or a file path")
    if allowed_dir is None:
        raise MediaError(
            "local image files are disabled: start the server with --allowed-local-media-path"
        )
    real = path.resolve()
    if not real.is_relative_to(allowed_dir.resolve()):
        raise MediaError(f"image file {path} is outside the allowed folder {allowed_dir}")
    return load_image(real)


def conversation(
    messages: list[Message], allowed_dir: Path | None
) -> tuple[str, list[Image.Image]]:
    """OpenAI messages -> (vicuna_v1 prompt text with ``<image>`` placeholders, images in order).

    System messages (anywhere) replace the template's system text; consecutive messages of one
    role are joined with a newline; the conversation must end with a user message. The images
    of a message come before its text, as upstream places them.
    """
    system: list[str] = []
    turns: list[list] = []  # [role, texts, image count]
    images: list[Image.Image] = []
    for k, m in enumerate(messages):
        parts = (
            m.content
            if isinstance(m.content, list)
            else [TextPart(type="text", text=m.content or "")]
        )
        texts = [p.text for p in parts if isinstance(p, TextPart)]
        pics = [p for p in parts if isinstance(p, ImagePart)]
        if m.role == "system":
            if pics:
                raise PromptError(f"messages[{k}]: a system message cannot hold images")
            system += texts
            continue
        if pics and m.role != "user":
            raise PromptError(f"messages[{k}]: only user messages can hold images")
        if not turns and m.role == "assistant":
            raise PromptError(f"messages[{k}]: the conversation must start with a user message")
        images += [load_media(p.image_url.url, allowed_dir) for p in pics]
        if turns and turns[-1][0] == m.role:
            turns[-1][1] += texts
            turns[-1][2] += len(pics)
        else:
            turns.append([m.role, texts, len(pics)])
    if not turns or turns[-1][0] != "user":
        raise PromptError("the last message must come from the user")
    pairs: list[tuple[str, str | None]] = []
    for i in range(0, len(turns), 2):
        _, texts, n = turns[i]
        user = user_message("\n".join(t for t in texts if t), num_images=n)
        reply = "\n".join(turns[i + 1][1]) if i + 1 < len(turns) else None
        pairs.append((user, reply))
    if not pairs[-1][0].strip():
        raise PromptError("the last user message is empty: send text or an image")
    text = build_chat_prompt(pairs)
    if system:
        text = "\n".join(system) + text[len(VICUNA_V1.system) :]
    return text, images
