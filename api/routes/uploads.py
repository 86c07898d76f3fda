"""/v1/uploads: a reference image, an audio file or a video clip, judged by its content (never its name)."""

from __future__ import annotations

import io

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api.deps import Caller, Config, Files
from api.problems import ApiError, responses

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=responses(401, 422))

# the body is read by hand (streamed, capped), so FastAPI cannot see it: described here for the OpenAPI schema
MULTIPART_FILE = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}

MAX_IMAGE_SIDE = 8192
MIN_IMAGE_SIDE = 16


def _too_large(cap: int) -> ApiError:
    return ApiError(413, "Content Too Large", f"the upload is larger than {cap} bytes")


def media_kind(data: bytes) -> str:
    """'image', 'audio' or 'video' from the bytes; ApiError(415/422) saying why when it is none of them."""
    if not data:
        raise ApiError(422, "Unprocessable Content", "the file is empty")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE or min(width, height) < MIN_IMAGE_SIDE:
                raise ApiError(422, "Unprocessable Content", f"the image is {width}x{height} pixels; give one between "
                               f"{MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE} pixels on each side")  # fmt: skip
            image.load()
            return "image"
    except UnidentifiedImageError:
        pass
    except Image.DecompressionBombError:
        raise ApiError(422, "Unprocessable Content", "the image has too many pixels; give one at most "
                       f"{MAX_IMAGE_SIDE} pixels on each side") from None  # fmt: skip
    except (OSError, SyntaxError, ValueError) as e:
        raise ApiError(422, "Unprocessable Content", f"the image cannot be decoded: {e}") from None
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            if sound.frames == 0:
                raise ApiError(422, "Unprocessable Content", "the audio file holds no samples")
            sound.read(min(sound.frames, 16000))
            return "audio"
    except soundfile.LibsndfileError:
        pass
    return _av_kind(data)


def _av_kind(data: bytes) -> str:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = container.streams.video or container.streams.audio
            if not streams:
                raise ApiError(422, "Unprocessable Content", "the file holds no video or audio stream")
            kind = "video" if container.streams.video else "audio"
            for _ in container.decode(streams[0]):
                return kind
            raise ApiError(422, "Unprocessable Content", f"the {kind} stream holds no decodable frame")
    except av.FFmpegError as e:
        raise ApiError(415, "Unsupported Media Type", "not an image, audio or video file that can be decoded "
                       f"({type(e).__name__})")  from None  # fmt: skip


async def _read_file_field(request: Request, cap: int) -> bytes:
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise ApiError(415, "Unsupported Media Type", "send the file as multipart/form-data in the field 'file'")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap + 64 * 1024:
        raise _too_large(cap)

    async def limited():
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > cap + 64 * 1024:  # room for the multipart headers
                raise _too_large(cap)
            yield chunk

    try:
        form = await MultiPartParser(request.headers, limited(), max_files=1, max_fields=10).parse()
    except MultiPartException as e:
        raise ApiError(400, "Bad Request", f"the multipart body cannot be read: {e.message}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(422, "Unprocessable Content", "send the file in the multipart field 'file'")
        data = await file.read(cap + 1)
        if len(data) > cap:
            raise _too_large(cap)
        return data
    finally:
        await form.close()


@router.post("", status_code=201, openapi_extra=MULTIPART_FILE, responses=responses(400, 413, 415))
async def upload(request: Request, caller: Caller, files: Files, config: Config):
    data = await _read_file_field(request, config.max_upload_bytes)
    # decoding and writing take long (0.7 s for an 8192x8192 PNG): on a thread, not the event loop, which would
    # hold up every other request (event streams included) meanwhile
    kind = await run_in_threadpool(media_kind, data)
    upload_id = await run_in_threadpool(files.save_upload, caller, data, kind)
    return {"id": upload_id, "kind": kind, "bytes": len(data), "url": f"/v1/uploads/{upload_id}"}


@router.get("/{upload_id}", responses=responses(404))
def upload_info(upload_id: str, caller: Caller, files: Files):
    info = files.upload_info(caller, upload_id)
    if info is None:
        raise ApiError(404, "Not Found", f"no upload {upload_id!r}")
    return {"id": upload_id, **info, "url": f"/v1/uploads/{upload_id}"}
