"""The figures: loss curves, metric bars, a contact sheet of frames, mouth signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avgen.timeline import FPS
from results.common import COLORS, SHORT, SYSTEMS, System, finite


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: list[float], window: int = 10) -> np.ndarray:
    """Centred running mean over up to `window` rows (fewer for short logs; shorter at the ends)."""
    values = np.asarray(values, np.float64)
    window = max(1, min(window, len(values) // 5))
    kernel = np.ones(window)
    return np.convolve(values, kernel, mode="same") / np.convolve(np.ones(len(values)), kernel, mode="same")


def plot_losses(systems: dict[str, System], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for key in ("baseline", "selfflow"):
        system = systems.get(key)
        rows = [r for r in (system.log_rows if system else []) if finite(r.get("loss_gen")) is not None]
        if not rows:
            continue
        drawn = True
        steps = [r["step"] for r in rows]
        walls = [r.get("wall") for r in rows]
        losses = [r["loss_gen"] for r in rows]
        for ax, xs in ((axes[0], steps), (axes[1], [np.nan if w is None else w / 3600 for w in walls])):
            ax.plot(xs, losses, color=COLORS[key], alpha=0.25, linewidth=0.8)
            ax.plot(xs, _smooth(losses), color=COLORS[key], linewidth=1.8,
                    label=f"{SHORT[key]} (loss_gen, running mean)")  # fmt: skip
        if system.steps is not None:
            axes[0].axvline(system.steps, color=COLORS[key], linestyle=":", linewidth=1,
                            label=f"{SHORT[key]} checkpoint, step {system.steps}")  # fmt: skip
            if finite(system.train_seconds) is not None:
                axes[1].axvline(system.train_seconds / 3600, color=COLORS[key], linestyle=":", linewidth=1)
    axes[0].set(xlabel="training step", ylabel="flow-matching loss (loss_gen)", title="loss vs step")
    axes[1].set(
        xlabel="wall-clock training time (h)", ylabel="flow-matching loss (loss_gen)", title="loss vs wall-clock"
    )
    for ax in axes:
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no training log", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


BAR_METRICS = (
    ("abs_offset_learned", "|AV offset| (frames), learned"),
    ("conf_learned", "sync confidence, learned"),
    ("conf_mismatch", "mismatched-audio conf., learned"),
    ("conf_landmarks", "sync confidence, landmarks"),
    ("mouth_motion", "mouth-region motion"),
    ("temporal_flickering", "temporal flickering"),
    ("warping_error", "warping error"),
    ("audio_flicker", "audio flicker (dB)"),
)


def plot_bars(systems: dict[str, System], summary, path: Path, set_name: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    keys = [k for k, _ in SYSTEMS]
    for ax, (metric, title) in zip(axes.ravel(), BAR_METRICS):
        for x, key in enumerate(keys):
            stat = summary[metric].get(key) if systems[key].available else None
            mean, half = (finite(stat[0]), finite(stat[1])) if stat else (None, None)
            if mean is None:
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
                continue
            ax.bar(x, mean, color=COLORS[key], yerr=half if half is not None else None, capsize=4)
        ax.set_xticks(range(len(keys)), [SHORT[k] for k in keys], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if metric == "temporal_flickering":
            values = [finite(summary[metric][k][0]) for k in keys if systems[k].available and k in summary[metric]]
            values = [v for v in values if v is not None]
            if values:
                ax.set_ylim(min(values) - 0.02, 1.0)
    fig.suptitle(f"means with 95% confidence intervals over the {set_name} clips", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_contact_sheet(
    systems: dict[str, System], samples, count: int, path: Path, set_name: str, per_row: int = 8
) -> None:
    plt = _plt()
    count = min(count, len(samples))
    keys = [k for k, _ in SYSTEMS]
    fig, axes = plt.subplots(count * len(keys), 1, figsize=(per_row * 1.15, count * len(keys) * 1.3 + 0.3 * count),
                             squeeze=False)  # fmt: skip
    for c in range(count):
        n_frames = len(samples[c].frames)
        picks = np.linspace(0, n_frames - 1, per_row).round().astype(int)
        for r, key in enumerate(keys):
            ax = axes[c * len(keys) + r, 0]
            ax.set_xticks([]), ax.set_yticks([])
            system = systems[key]
            clip = system.clips[c] if system.available and c < len(system.clips) else None
            if clip is None or clip.frames is None:
                ax.set_facecolor("#dddddd")
                ax.text(0.5, 0.5, "not available" if not system.available else "no frames", ha="center", va="center",
                        transform=ax.transAxes)  # fmt: skip
            else:
                frames = clip.frames
                size = frames.shape[1]
                gap = np.full((size, 2, 3), 255, np.uint8)
                strip = np.concatenate([x for i in picks for x in (frames[min(i, len(frames) - 1)], gap)][:-1], axis=1)
                ax.imshow(strip, interpolation="nearest")
            ax.set_ylabel(SHORT[key], fontsize=9, rotation=0, ha="right", va="center")
            if r == 0:
                text = samples[c].text if len(samples[c].text) < 90 else samples[c].text[:87] + "..."
                ax.set_title(f'{set_name} clip {c}: "{text}"  (frames {", ".join(map(str, picks))})', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mouth_signals(systems: dict[str, System], samples, count: int, path: Path, set_name: str) -> None:
    from eval.landmarks import audio_signal

    plt = _plt()
    count = min(count, len(samples))
    fig, axes = plt.subplots(count, 1, figsize=(10, 2.6 * count), squeeze=False)
    for c in range(count):
        ax = axes[c, 0]
        sample = samples[c]
        t = np.arange(len(sample.frames)) / FPS
        loud_ax = ax.twinx()
        loud_ax.fill_between(t, audio_signal(sample.audio, len(sample.frames)), color="#bbbbbb", alpha=0.45)
        loud_ax.set_ylabel("GT speech loudness (1-3 kHz dB, high-passed; grey)", fontsize=7)
        ax.set_zorder(loud_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        for key, _ in SYSTEMS:
            system = systems[key]
            if system.available and c < len(system.clips) and system.clips[c].mouth_signal is not None:
                signal = system.clips[c].mouth_signal
                ax.plot(np.arange(len(signal)) / FPS, signal, color=COLORS[key], linewidth=1.2, label=SHORT[key])
        ax.set(
            xlabel="time (s)",
            ylabel="mouth signal",
            title=f"{set_name} clip {c}: mouth opening (eval.landmarks.mouth_signal)",
        )
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
