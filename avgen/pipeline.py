"""Generation: transcript (and optional speech, reference face) in, frames + waveform out.

Clips longer than the model's chunk are generated chunk by chunk; each chunk starts with frames
already generated (video and audio latents held clean at t=0) so seams stay continuous, and only
new frames are emitted. Peak memory depends on the chunk length, not on the clip's duration.
Without a reference image, a clip of several chunks (or longer than the config's
`self_reference_over_seconds`) first generates its first second alone; a rest frame of it
(`rest_frame`) becomes the identity reference of every chunk, the first included, so the face and
background of the first second hold and no seam switches from unreferenced to referenced.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avgen import __version__
from avgen.alignment import speech_timeline
from avgen.audio_codec import AudioStream
from avgen.checkpoint import AVGenModel, default_checkpoint, file_hash, load_checkpoint
from avgen.config import Config, preset
from avgen.limits import MAX_SECONDS, MAX_STEPS, MAX_TEXT_CHARS  # noqa: F401 (re-exported)
from avgen.media import Mp4Writer, write_mp4
from avgen.model import DISTILLED_GUIDANCE, bf16_native, patchify, unpatchify
from avgen.objectives import SHORTCUT_STEPS
from avgen.phones import NULL_PHONE, PHONE_IDS, SILENCE, frame_phone_ids, phone_timeline, timeline_seconds
from avgen.progress import Progress
from avgen.sampling import CleanMask, Latents, denoise, get_schedule
from avgen.timeline import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, fit_samples, frames_for_samples, frames_for_seconds
from avgen.video_codec import frames_to_tensor, tensor_to_frames
from avgen.vocoder import VOCODERS, Vocoder, learned_vocoder_fits, load_vocoder


class GenerationError(ValueError):
    """A request that cannot be generated as asked; the message says what to change."""


@dataclass
class GenerationRequest:
    text: str = ""
    seconds: float | None = None  # None: as long as the transcript (or the given audio) takes
    steps: int | None = None  # None: the checkpoint config's defaults
    guidance: float | None = None  # classifier-free guidance scale (`--cfg`)
    shift: float | None = None
    sampler: str | None = None
    seed: int = 0
    reference_image: np.ndarray | None = None  # (H, W, 3) uint8, any size: identity
    audio: np.ndarray | None = None  # (N,) float32 at 16 kHz: audio-driven, kept in the output
    vocoder: str | None = None  # "learned" | "griffin-lim"; None: learned where its weights fit the model


@dataclass
class GenerationResult:
    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (T * 640,) float32 at 16 kHz
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.frames) / FPS


Piece = tuple[np.ndarray, np.ndarray]  # (frames (n, H, W, 3) uint8, waveform (m,) float32 at 16 kHz)


@dataclass
class GenerationStream:
    """A validated request whose output is generated as `pieces` is iterated."""

    frames: int
    height: int
    width: int
    metadata: dict[str, str]
    pieces: Iterator[Piece]

    @property
    def seconds(self) -> float:
        return self.frames / FPS


@dataclass(frozen=True)
class Settings:
    """A request resolved against the model's defaults and validated."""

    frames: int
    steps: int
    guidance: float
    shift: float
    sampler: str
    phones: torch.Tensor  # (T,) phone ids
    audio: np.ndarray | None  # exactly frames * 640 samples when given
    vocoder: str  # "learned" | "griffin-lim"
    # the phones were heard in the given audio, not a transcript aligned to it: a prior that reads
    # audio (Config.prior_audio) reads it then; a transcript's phones it follows alone, as it was fitted
    phones_heard: bool = False


MIN_REFERENCE_SIDE = 16  # pixels; the reference is centre-cropped and resized to the model's frame size
MAX_AUDIO_PEAK = 2.0  # samples belong in [-1, 1]; codec overshoot a little past 1 is tolerated


def validate_request(request: GenerationRequest) -> None:
    """Reject a malformed reference image or audio array up front, saying what to change."""
    if request.reference_image is not None:
        image = np.asarray(request.reference_image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise GenerationError(f"the reference image must be RGB, shape (height, width, 3), not {image.shape}; "
                                  "convert grayscale or RGBA pictures to RGB")  # fmt: skip
        if image.dtype != np.uint8:
            raise GenerationError(f"the reference image must be uint8 (0-255), not {image.dtype}")
        if min(image.shape[:2]) < MIN_REFERENCE_SIDE:
            raise GenerationError(f"the reference image is {image.shape[1]}x{image.shape[0]} pixels; "
                                  f"give one at least {MIN_REFERENCE_SIDE} pixels on each side")  # fmt: skip
    if request.audio is not None:
        audio = np.asarray(request.audio)
        if audio.ndim != 1:
            raise GenerationError(f"the audio must be mono, shape (samples,), not {audio.shape}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise GenerationError(f"the audio must be float samples in [-1, 1], not {audio.dtype}; "
                                  "scale 16-bit PCM by 1/32768")  # fmt: skip
        if audio.size == 0:
            raise GenerationError("the audio is empty")
        if not np.isfinite(audio).all():
            raise GenerationError(f"the audio has {int((~np.isfinite(audio)).sum())} NaN or infinite samples")
        peak = float(np.abs(audio).max())
        if peak > MAX_AUDIO_PEAK:
            raise GenerationError(f"the audio samples must be in [-1, 1], not up to {peak:g}; "
                                  "scale 16-bit PCM by 1/32768")  # fmt: skip


def resolve(request: GenerationRequest, cfg: Config) -> Settings:
    validate_request(request)
    text = request.text or ""
    if len(text) > MAX_TEXT_CHARS:
        raise GenerationError(f"text is {len(text)} characters; the maximum is {MAX_TEXT_CHARS}")
    if request.seconds is not None:
        if not np.isfinite(request.seconds) or request.seconds <= 0:
            raise GenerationError(f"seconds must be positive, not {request.seconds}")
        if request.seconds > MAX_SECONDS:
            raise GenerationError(f"seconds must be at most {MAX_SECONDS:g}, not {request.seconds:g}")
        frames = frames_for_seconds(request.seconds)
        if frames < 1:
            raise GenerationError(f"seconds must be at least {1 / FPS:g} (one frame), not {request.seconds:g}")
    elif request.audio is not None:
        frames = frames_for_samples(len(request.audio))
    elif text.strip():
        frames = max(1, frames_for_seconds(timeline_seconds(phone_timeline(text))))
    else:
        raise GenerationError("nothing to generate: give a text, an audio file or a duration in seconds")
    if frames > frames_for_seconds(MAX_SECONDS):
        raise GenerationError(f"the clip would last {frames / FPS:g} s; the maximum is {MAX_SECONDS:g} s")

    steps = cfg.steps if request.steps is None else request.steps
    if not 1 <= steps <= MAX_STEPS:
        raise GenerationError(f"steps must be between 1 and {MAX_STEPS}, not {steps}")
    guidance = cfg.guidance if request.guidance is None else request.guidance
    if not np.isfinite(guidance) or not 0 <= guidance <= 30:
        raise GenerationError(f"cfg must be between 0 and 30, not {guidance}")
    shift = cfg.shift if request.shift is None else request.shift
    if not np.isfinite(shift) or shift <= 0:
        raise GenerationError(f"shift must be positive, not {shift}")
    sampler = cfg.sampler if request.sampler is None else request.sampler
    if sampler not in ("euler", "heun"):
        raise GenerationError(f"sampler must be 'euler' or 'heun', not {sampler!r}")

    if text.strip():
        phones = frame_phone_ids(phone_timeline(text, seconds=frames / FPS), frames)
    else:
        phones = torch.full((frames,), PHONE_IDS[NULL_PHONE], dtype=torch.long)
    audio, phones_heard = None, False
    if request.audio is not None:
        if np.asarray(request.audio).size == 0:
            raise GenerationError("the audio is empty")
        audio = fit_samples(request.audio, frames * SAMPLES_PER_FRAME)
        timeline, aligned = speech_timeline(audio, text)  # what is said when, from the speech
        phones, phones_heard = frame_phone_ids(timeline, frames), not aligned
    vocoder = request.vocoder or ("learned" if learned_vocoder_fits(cfg) else "griffin-lim")
    if vocoder not in VOCODERS:
        raise GenerationError(f"vocoder must be one of {', '.join(VOCODERS)}, not {vocoder!r}")
    if vocoder == "learned" and not learned_vocoder_fits(cfg):
        raise GenerationError("this model's mel spectrogram does not fit the shipped learned vocoder: use griffin-lim")
    return Settings(frames, steps, float(guidance), float(shift), sampler, phones, audio, vocoder, phones_heard)


REST_PHONE_IDS = (PHONE_IDS[SILENCE], PHONE_IDS[NULL_PHONE])


def rest_frame(phones: torch.Tensor, within: int) -> int:
    """The frame among the first `within` that lies deepest inside a pause of the phone track
    (farthest from any spoken phone; the earliest on ties): a face at rest, lips closed, like the
    training references. Text-driven clips start with silence, so this is usually frame 0. With
    no pause among them (or no phones at all), frame 0."""
    spoken = torch.nonzero(~torch.isin(phones, torch.tensor(REST_PHONE_IDS, device=phones.device)))[:, 0]
    if spoken.numel() == 0:
        return 0
    candidates = torch.arange(min(within, len(phones)), device=phones.device)
    distance = (candidates[:, None] - spoken[None, :]).abs().min(dim=1).values
    return int(torch.argmax(distance))  # the first maximum


def chunk_spans(frames: int, chunk: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start, end, context) per chunk: frames [start, start+context) were generated before.

    Each chunk after the first starts `overlap` frames before the previous one ended; the last
    one is only as long as needed (a full-length last chunk would recompute up to a chunk of
    context for a few new frames: measured 22% slower on an 8 s clip). No chunk is mostly context:
    a remainder of at most `overlap` frames joins the chunk before it, which grows by that much
    (a 4.2 s clip is one chunk of 105 frames, not 100 + 25 of which 20 are context).
    """
    spans, start, context = [], 0, 0
    while True:
        end = min(start + chunk, frames)
        if frames - end <= overlap:
            spans.append((start, frames, context))
            return spans
        spans.append((start, end, context))
        start, context = end - overlap, overlap


def guidance_mode(cfg: Config, guidance: float) -> str:
    """How a step is guided: 'off' (scale 1: the conditional velocity), 'distilled' (a distilled
    model told the scale: one forward) or 'classifier-free' (conditional and unconditional
    branches mixed: two forwards, batched)."""
    if guidance == 1.0:
        return "off"
    if cfg.distilled and DISTILLED_GUIDANCE[0] <= guidance <= DISTILLED_GUIDANCE[1]:
        return "distilled"
    return "classifier-free"


def trained_step(step: float) -> float:
    """The step size to tell a distilled model: `step` if it is one of the sizes it learned to jump
    (SHORTCUT_STEPS: 1, 2, 4 or 8 uniform Euler steps, whose times lie on that size's grid), else 0."""
    return next((size for size in SHORTCUT_STEPS if abs(step - size) < 1e-6), 0.0)


def sampler_inputs(cfg: Config, guidance: float, step: float = 0.0) -> dict[str, torch.Tensor]:
    """What a forward of a distilled model is told: the guidance scale (1 when the scale falls back
    to two classifier-free branches) and the step size; nothing for an undistilled model."""
    if not cfg.distilled:
        return {}
    scale = 1.0 if guidance_mode(cfg, guidance) == "classifier-free" else guidance
    return {"guidance": torch.tensor([scale]), "step": torch.tensor([step])}


def _frames(x: Latents, count: int) -> Latents:
    return Latents(x.video[:, :count], x.audio[:, :count])


class Generator:
    """A loaded model on a device, ready to serve generation requests."""

    def __init__(self, model: AVGenModel, checkpoint_id: str, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.model.video_codec.to(memory_format=torch.channels_last)  # its convolutions run faster so on CPUs
        self.cfg = model.cfg
        self.checkpoint_id = checkpoint_id
        self.device = torch.device(device)
        self.trained = not checkpoint_id.startswith("untrained")
        # Without a reference image, a clip of several chunks (or longer than the config's
        # self_reference_over_seconds) takes a rest frame of its first second
        # (generated alone first: one more second's work) as the reference of every chunk;
        # False: no reference at all (the old behaviour).
        self.self_reference = True
        # bf16 (autocast) where the device computes it natively (avx512_bf16/AMX CPUs, Ampere+ GPUs), else fp32
        self.precision = "bf16" if bf16_native(self.device) else "fp32"
        self._learned_vocoder: Vocoder | None = None  # loaded on first use

    def learned_vocoder(self) -> Vocoder:
        if self._learned_vocoder is None:
            self._learned_vocoder = load_vocoder(n_mels=self.cfg.n_mels, n_fft=self.cfg.n_fft).to(self.device)
        return self._learned_vocoder

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        preset_name: str = "tiny",
        seed: int = 0,
        warn: Callable[[str], None] | None = None,
    ) -> Generator:
        """From a checkpoint file, else the shipped weights, else a model initialised from `seed`."""
        path = Path(checkpoint) if checkpoint is not None else default_checkpoint(preset_name)
        if path is not None:
            return cls(load_checkpoint(path, device), file_hash(path), device)
        (warn or (lambda m: print(m, file=sys.stderr)))(
            f"avgen: no trained weights for preset '{preset_name}' in this install; "
            f"using an UNTRAINED model initialised from seed {seed}: expect noise, not a face"
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AVGenModel(preset(preset_name))
        return cls(model, f"untrained-{preset_name}-seed{seed}", device)

    def _velocity_fn(
        self, phones: torch.Tensor, reference: torch.Tensor | None, guidance: float, sampler: str, prior_audio: bool
    ):
        """The (guided) velocity. The transformer runs under bf16 autocast where `precision` is bf16;
        what it returns, the guidance mix and the ODE state stay fp32. A distilled model makes a
        guided step in one forward for a scale in its trained range; other scales (and undistilled
        models) take two, classifier-free guidance. It is told the size of an Euler step it learned
        to take in one jump (`trained_step`), else 0: the instantaneous velocity, which it learned at
        every time (Heun's corrector, shifted or off-grid schedules). `prior_audio`: whether a phone
        prior that reads audio reads the clean audio (Settings.phones_heard)."""
        transformer, cfg = self.model.transformer, self.cfg
        null = torch.full_like(phones, PHONE_IDS[NULL_PHONE])
        bf16 = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        one_forward = guidance_mode(cfg, guidance) != "classifier-free"
        sampler_name = sampler

        def velocity(x: Latents, video_t: torch.Tensor, audio_t: torch.Tensor, step: float) -> Latents:
            sampler = sampler_inputs(cfg, guidance, trained_step(step) if sampler_name == "euler" else 0.0)
            if one_forward:
                with bf16:
                    v = transformer(
                        x.video, x.audio, video_t, audio_t, phones, reference, **sampler, prior_audio=prior_audio
                    )
                return Latents(v.video.float(), v.audio.float())
            ref = None if reference is None else torch.cat([reference, reference])
            with bf16:
                v = transformer(
                    torch.cat([x.video, x.video]), torch.cat([x.audio, x.audio]),
                    torch.cat([video_t, video_t]), torch.cat([audio_t, audio_t]), torch.cat([phones, null]), ref,
                    **sampler, prior_audio=prior_audio,
                )  # fmt: skip
            (cv, uv), (ca, ua) = v.video.float().chunk(2), v.audio.float().chunk(2)
            return Latents(uv + guidance * (cv - uv), ua + guidance * (ca - ua))

        return velocity

    def _encode_reference(self, image: np.ndarray) -> torch.Tensor:
        cfg = self.cfg
        img = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        h, w = img.shape[:2]
        side = min(h, w)  # centre square crop, then resize to the model's frame size
        img = img[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        x = frames_to_tensor(img[None])
        x = F.interpolate(x, size=(cfg.height, cfg.width), mode="bilinear", antialias=True, align_corners=False)
        latents = self.model.video_codec.encode(x)  # (1, C, h, w)
        return patchify(latents[:, None], cfg.patch_size)[:, 0]  # (1, Nv, Pv)

    def check(self, request: GenerationRequest) -> None:
        """Raise GenerationError if this model cannot generate `request` as asked."""
        resolve(request, self.cfg)

    def open(self, request: GenerationRequest, progress: Progress | None = None) -> GenerationStream:
        """Validate `request` now; the returned stream generates it chunk by chunk as it is read."""
        s = resolve(request, self.cfg)
        reference_kind = self._reference_kind(request, s)
        metadata = {
            "comment": "AI-generated video and audio (avgen)",
            "avgen_ai_generated": "true",
            "avgen_version": __version__,
            "avgen_seed": str(request.seed),
            "avgen_steps": str(s.steps),
            "avgen_cfg": f"{s.guidance:g}",
            "avgen_guidance": guidance_mode(self.cfg, s.guidance),
            "avgen_sampler": s.sampler,
            "avgen_shift": f"{s.shift:g}",
            "avgen_checkpoint": self.checkpoint_id,
            "avgen_audio": "given" if s.audio is not None else "generated",
            "avgen_vocoder": s.vocoder,
            "avgen_precision": self.precision,
            "avgen_reference": reference_kind,
            "avgen_evaluations_per_chunk": str(s.steps * (2 if s.sampler == "heun" else 1)),
        }
        return GenerationStream(s.frames, self.cfg.height, self.cfg.width, metadata,
                                self._pieces(request, s, progress or (lambda fraction, message: None),
                                             self_reference=reference_kind == "first-chunk"))  # fmt: skip

    def _reference_kind(self, request: GenerationRequest, s: Settings) -> str:
        """'given' (the request's image), 'first-chunk' (a generated rest frame, for the whole clip) or 'none'."""
        if request.reference_image is not None:
            return "given"
        chunks = len(chunk_spans(s.frames, self.cfg.chunk_frames, self.cfg.overlap_frames))
        long = chunks > 1 or s.frames > round(self.cfg.self_reference_over_seconds * FPS)
        return "first-chunk" if self.self_reference and long else "none"

    def generate(self, request: GenerationRequest, progress: Progress | None = None) -> GenerationResult:
        """The whole clip in memory (frames and waveform); `open` + `write_stream` keep memory flat."""
        stream = self.open(request, progress)
        frames, audio = [], []
        for video_piece, audio_piece in stream.pieces:
            frames.append(video_piece)
            audio.append(audio_piece)
        return GenerationResult(np.concatenate(frames), np.concatenate(audio), stream.metadata)

    @torch.no_grad()  # not inference_mode: under it autocast re-casts every weight at every call
    def _pieces(
        self, request: GenerationRequest, s: Settings, report: Progress, self_reference: bool
    ) -> Iterator[Piece]:
        """(frames, waveform) pieces in order as chunks finish; the waveform lags by up to a
        vocoder segment (avgen.audio_codec.AudioStream). Holds one chunk, whatever the duration.
        `self_reference`: the first second is generated alone first (the first chunk's noise); its
        rest frame becomes the reference of every chunk, the first included, so the whole clip, not
        only chunks 2+, holds to it."""
        cfg, model, device = self.cfg, self.model, self.device
        reference = None if request.reference_image is None else self._encode_reference(request.reference_image)
        given_audio = None
        if s.audio is not None:
            given_audio = model.audio_codec.encode(torch.from_numpy(s.audio)[None].to(device))  # (1, T, Pa)
        learned = self.learned_vocoder() if s.vocoder == "learned" else None
        vocoder = AudioStream(model.audio_codec, s.frames, seed=request.seed, vocoder=learned)
        no_audio = np.zeros(0, np.float32)

        spans = chunk_spans(s.frames, cfg.chunk_frames, cfg.overlap_frames)
        schedule = get_schedule(s.steps, s.shift)
        noise_rng = torch.Generator().manual_seed(request.seed)
        nv, pv, pa = cfg.video_tokens_per_frame, cfg.video_token_dim, cfg.audio_latent_channels
        previous: Latents | None = None
        previous_start = 0
        # the rest frame is chosen among the first second: the pass that finds it generates only that
        head = min(FPS, spans[0][1]) if self_reference else 0
        work, done = (head + sum(end - start for start, end, _ in spans)) * s.steps, 0  # frame-steps, for progress
        for index, (start, end, context) in enumerate(spans):
            length = end - start
            noise = Latents(
                torch.randn(1, length, nv, pv, generator=noise_rng).to(device),
                torch.randn(1, length, pa, generator=noise_rng).to(device),
            )
            condition = Latents(torch.zeros_like(noise.video), torch.zeros_like(noise.audio))
            clean = CleanMask(torch.zeros(1, length, nv, dtype=torch.bool, device=device),
                              torch.zeros(1, length, dtype=torch.bool, device=device))  # fmt: skip
            if context:
                offset = start - previous_start
                condition.video[:, :context] = previous.video[:, offset : offset + context]
                condition.audio[:, :context] = previous.audio[:, offset : offset + context]
                clean.video[:, :context] = True
                clean.audio[:, :context] = True
            if given_audio is not None:
                condition.audio[:] = given_audio[:, start:end]
                clean.audio[:] = True
            phones = s.phones[start:end][None].to(device)

            def on_step(step: int, frames: int, index=index) -> None:
                nonlocal done
                done += frames
                report(0.99 * done / work, f"chunk {index + 1}/{len(spans)}, step {step}/{s.steps}")

            if self_reference and index == 0:  # (1, Nv, Pv) latent tokens, like an encoded reference image
                first = denoise(self._velocity_fn(phones[:, :head], None, s.guidance, s.sampler, s.phones_heard), _frames(noise, head),
                                _frames(condition, head), CleanMask(clean.video[:, :head], clean.audio[:, :head]),
                                schedule, s.sampler, lambda step: on_step(step, head))  # fmt: skip
                reference = first.video[:, rest_frame(s.phones, head)].clone()
            x = denoise(self._velocity_fn(phones, reference, s.guidance, s.sampler, s.phones_heard), noise, condition, clean, schedule,
                        s.sampler, lambda step, length=length: on_step(step, length))  # fmt: skip
            frames = self._decode_video(x.video[:, context:])
            if s.audio is not None:
                audio = s.audio[(start + context) * SAMPLES_PER_FRAME : end * SAMPLES_PER_FRAME]
            else:
                waves = vocoder.push(x.audio[:, context:].cpu())
                audio = torch.cat(waves, dim=-1)[0].numpy() if waves else no_audio
            yield frames, audio
            previous, previous_start = x, start
        if s.audio is None:
            report(0.995, "vocoding the last audio")
            waves = vocoder.finish()
            if waves:
                yield np.zeros((0, cfg.height, cfg.width, 3), np.uint8), torch.cat(waves, dim=-1)[0].numpy()
        report(1.0, "done")

    def _decode_video(self, video_tokens: torch.Tensor, batch: int = 32) -> np.ndarray:
        """Frames from latent tokens: channels-last convolutions (exact, 1.6x faster on the CPU
        here) under bf16 autocast where `precision` is bf16 (1.5x more; 0.16 of 255 from fp32)."""
        cfg = self.cfg
        latents = unpatchify(video_tokens, cfg.patch_size, cfg.latent_height, cfg.latent_width)[0]
        latents = latents.contiguous(memory_format=torch.channels_last)
        bf16 = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        pieces = []
        for i in range(0, latents.shape[0], batch):
            with bf16:
                images = self.model.video_codec.decode(latents[i : i + batch])
            pieces.append(tensor_to_frames(images.float()).cpu().numpy())
        return np.concatenate(pieces)


def write_result(result: GenerationResult, path: str | Path) -> None:
    write_mp4(path, result.frames, result.audio, fps=FPS, sample_rate=SAMPLE_RATE, metadata=result.metadata)


def write_stream(stream: GenerationStream, path: str | Path) -> None:
    """Generate `stream` into an MP4 at `path`, each piece encoded as it comes (flat memory)."""
    size = (stream.width, stream.height)
    with Mp4Writer(path, *size, fps=FPS, sample_rate=SAMPLE_RATE, metadata=stream.metadata) as out:
        for frames, audio in stream.pieces:
            out.add_video(frames)
            out.add_audio(audio)
