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


def transcriber_card(params: Params, signature: str, evaluation: dict[str, Any], data_version: str) -> str:
    """The note transcriber's card: both networks, the post-processing, the note scores on the test pieces."""
    notes, cfg = params.pitch_notes, params.pitch_transcribe
    nets = evaluation.get("networks", {})
    lines = [
        f"# Model card: {cfg.registry.model_name}",
        "",
        f"Signature `{signature}` (onset network + frame network) · family `pitch` · {notes.sample_rate} Hz audio, "
        f"{notes.frame_hop}-sample frames ({notes.frames_per_s:.1f} per s), MIDI {notes.min_midi}–"
        f"{notes.min_midi + notes.n_pitches - 1}.",
        "",
        "## Intended use",
        "Notes of a recording (`musicid transcribe AUDIO --out DIR`: a MIDI file and a CSV of onset, offset, "
        "pitch, velocity). Velocity is the onset network's peak probability, not a measured loudness.",
        "",
        "## Training data",
        f"Sources {', '.join(notes.sources)}, split by piece (no composition in two splits); data version "
        f"`{data_version or 'missing'}`.",
        "",
        "| network | best epoch | train P / R / F1 | eval P / R / F1 | pos_weight | conv L2 | fc L2 | context frames |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, section in (("onset", params.pitch_onset), ("frame", params.pitch_frame)):
        r = nets.get(kind, {})
        prf = lambda split: "/".join(f"{r.get(f'{split}_{m}', 0):.3f}" for m in ("precision", "recall", "f1"))  # noqa: E731
        lines.append(f"| {kind} | {r.get('best_epoch', '–')} | {prf('train')} | {prf('eval')} | {section.pos_weight:g} | "
                     f"{section.conv_l2:g} | {section.fc_l2:g} | {section.context_frames} |")
    post, tuning = evaluation.get("post_processing", {}), evaluation.get("tuning")
    lines += ["", "## Post-processing", ", ".join(f"`{k}` {v:g}" for k, v in post.items())]
    if tuning:
        lines.append(f"(thresholds chosen among {len(tuning['tried'])} settings on "
                     f"{sum(tuning['val_pieces'].values())} validation pieces: note onset F1 {tuning['val_note_onset_f1']:.3f} there)")
    lines += ["",
              "## Evaluation (whole test pieces, never trained on; mir_eval, mean over pieces)", "",
              "| set | pieces | audio min | note P / R / F1 (onset) | note F1 (onset + offset) | s per audio minute |",
              "|---|---|---|---|---|---|"]
    for source, r in evaluation.get("sets", {}).items():
        n = r["note"]
        lines.append(f"| {source} | {r['tracks']} | {r['audio_minutes']:.1f} | {n.get('onset_precision', 0):.3f} / "
                     f"{n.get('onset_recall', 0):.3f} / {n.get('onset_f1', 0):.3f} | {n.get('onset_offset_f1', 0):.3f} | "
                     f"{r['seconds_per_audio_minute']:.2f} |")
    lines += ["", "## Limits", "Trained on rendered audio only (fluidsynth General-MIDI instruments and the embedded "
              "synthesiser): recorded instruments, rooms, vibrato and dense piano textures are outside what it has seen.", ""]
    return "\n".join(lines)
