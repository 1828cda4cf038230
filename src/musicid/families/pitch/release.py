"""The pitch model's card (the checklist shape is the spine's)."""

from __future__ import annotations

from typing import Any

from musicid.config import Params


def model_card(params: Params, model: dict[str, Any], train: dict[str, Any], evaluation: dict[str, Any],
               synth: dict[str, Any], data_version: str) -> str:
    spec, cfg = model["spec"], params.pitch
    lines = [
        f"# Model card: {cfg.registry.model_name}",
        "",
        f"Signature `{model['signature']}` · family `pitch` · {spec['window_samples']}-sample windows at "
        f"{spec['sample_rate']} Hz · {spec['n_bins']} log bins {spec['fmin_hz']:g}–{spec['fmax_hz']:g} Hz.",
        "",
        "## Intended use",
        "Per-window pitch confidence and energy (`musicid pitch predict AUDIO --json`): which pitches sound "
        "in each frame, to sub-bin precision. The note transcription (onsets, offsets) builds on it.",
        "",
        "## Training data",
        "Generated only (stage `pitch-synth`, deterministic from `pitch.synth.seed`): single notes in every bin "
        f"(sanity set) and polyphonic windows; {cfg.synth.n_timbres} harmonic timbres with ADSR envelopes; "
        f"random start phase: {cfg.synth.random_phase}. No recorded audio.",
        "",
        "| set | windows | generated in |",
        "|---|---|---|",
        *[f"| {name} | {s['rows']} | {s['seconds']} s ({s['windows_per_s']:.0f}/s) |" for name, s in synth["sets"].items()],
        "",
        f"Best epoch {train['best_epoch']} of {train['epochs_run']} (lowest validation loss); data version `{data_version or 'missing'}`.",
        "",
        "## Evaluation (held-out windows, never trained on)",
    ]
    if "polyphonic" in evaluation:
        m = evaluation["polyphonic"]["multipitch"]
        lines.append(f"- Polyphonic: P {m['precision']:.3f} / R {m['recall']:.3f} / F1 {m['f1']:.3f} "
                     f"(peaks ≥ {evaluation['threshold']:g}, ±{evaluation['tolerance_cents']:g} cents).")
    if "sanity" in evaluation:
        s = evaluation["sanity"]["summary"]
        lines.append(f"- Single notes 20–5000 Hz: median |error| {s['median_abs_cents']:.2f} cents, "
                     f"{100 * s['within_50c']:.1f} % within 50 cents.")
        lines += ["", "| band (Hz) | notes | median abs (cents) | within 50 c |", "|---|---|---|---|"]
        lines += [f"| {r['band_hz']} | {r['notes']} | {r['median_abs_cents']:.2f} | {r['within_50c']:.3f} |"
                  for r in evaluation["sanity"]["by_band"] if r.get("notes")]
    lines += ["", "| probe | window offset | mean ± std (cents) | within 50 c |", "|---|---|---|---|"]
    lines += [f"| {r['hz']:g} Hz | {r['offset']} | {r['mean_cents']:+.1f} ± {r['std_cents']:.1f} | {r['within_50c']:.2f} |"
              for r in evaluation.get("probes", [])]
    lat = evaluation["latency_ms"]
    lines += ["", f"Latency: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms per window (CPU, model loaded); "
              f"{lat['windows_per_s']:.0f} windows/s batched.", "",
              "## Limits", "Trained on synthetic harmonic tones only: inharmonic instruments, percussion, vibrato and "
              "reverberant recordings are outside what it has seen. Below ~80 Hz a 4096-sample window holds only a few "
              "periods, and octave errors are most frequent there (see the band table).", ""]
    return "\n".join(lines)
