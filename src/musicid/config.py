"""Load and validate params.yaml into one typed, frozen object.

Every stage reads its section from here, so a typo or out-of-range value fails before any work is
done, with a one-line message that names the key and the allowed values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in: dvc.lock parses ~10× faster

from musicid.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthConfig(Section):
    """Synthetic music archive: `n_works` compositions, each rendered as several versions."""

    seed: int = 0
    n_works: int = Field(40, ge=1)
    versions_per_work: int = Field(3, ge=1, le=26)
    min_duration_s: float = Field(20.0, gt=0)
    max_duration_s: float = Field(90.0, gt=0)
    formats: list[Literal["flac", "ogg", "wav"]] = Field(
        default_factory=lambda: ["flac", "ogg", "wav"], min_length=1
    )

    @model_validator(mode="after")
    def _durations_ordered(self) -> "SynthConfig":
        if self.max_duration_s < self.min_duration_s:
            raise ValueError(
                f"max_duration_s ({self.max_duration_s}) must be >= min_duration_s ({self.min_duration_s})"
            )
        return self


class IngestConfig(Section):
    """Where the raw audio comes from and what counts as usable audio."""

    source: str = "data/raw/synthetic.tar.gz"
    source_type: Literal["auto", "fma", "mtg_jamendo"] = "auto"  # auto: a folder or archive (+ metadata CSV)
    metadata: str = "metadata.csv"
    min_duration_s: float = Field(1.0, ge=0)
    silence_threshold_db: float = Field(-60.0, le=0)
    max_silent_fraction: float = Field(0.95, gt=0, le=1)
    query_duration_s: float = Field(10.0, gt=0)


SliceStrategy = Literal["random", "silence_aware", "high_energy", "beat_aware", "repeated_section_aware", "hybrid"]


class PrepareConfig(Section):
    """Split by work into train/val/test and plan evaluation queries on the held-out test works."""

    seed: int = 0
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    query_lengths_s: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 3.0, 5.0, 10.0], min_length=1
    )
    queries_per_track: int = Field(2, ge=1)
    query_strategy: SliceStrategy = "random"  # where queries start (musicid.audio.slicing)
    split_by: Literal["work", "source"] = "work"  # source: keep a catalog's official split (FMA, MTG-Jamendo)
    query_stride_s: float = Field(0.0, ge=0)  # > 0: a query every stride along each test track (overlapping if < length)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "PrepareConfig":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1 so some works remain for training")
        if any(length <= 0 for length in self.query_lengths_s):
            raise ValueError("query_lengths_s must all be > 0")
        return self


Compressor = Literal["none", "zstd", "blosc"]


class StoreEncodingConfig(Section):
    """How a window store is encoded on disk (musicid.store): sample dtype, codecs, chunk and shard sizes."""

    dtype: Literal["float16", "float32", "int16"] = "float16"
    compressor: Compressor = "zstd"
    level: int = Field(3, ge=0, le=22)
    target_compressor: Literal["same", "none", "zstd", "blosc"] = "same"  # targets' codec ("same": as the waveform)
    chunk_mb: float = Field(1.0, gt=0)
    target_chunk_kb: float | None = Field(None, gt=0)  # chunk of a large target array (None: chunk_mb): a random row decodes one
    shard_mb: float = Field(64.0, gt=0)

    @model_validator(mode="after")
    def _level_fits_compressor(self) -> "StoreEncodingConfig":
        if "blosc" in (self.compressor, self.target_compressor) and self.level > 9:
            raise ValueError(f"level {self.level} is out of range for blosc (allowed 0-9)")
        if self.shard_mb < self.chunk_mb:
            raise ValueError(f"shard_mb ({self.shard_mb}) must be >= chunk_mb ({self.chunk_mb})")
        return self

    @property
    def targets_codec(self) -> str:
        return self.compressor if self.target_compressor == "same" else self.target_compressor


class ShardsConfig(StoreEncodingConfig):
    """Fixed-length windows at the model rate, written as sharded Zarr v3 stores."""

    sample_rate: int = Field(8000, ge=1000, le=192000)
    window_s: float = Field(2.0, gt=0)
    hop_s: float = Field(2.0, gt=0)
    splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["train", "val", "test"], min_length=1
    )
    strategy: Literal[("grid", *get_args(SliceStrategy))] = "grid"  # type: ignore[valid-type]
    windows_per_track: int = Field(0, ge=0)  # with a strategy other than grid; 0 = as many as the grid gives
    seed: int = 0

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))


Device = Literal["auto", "cpu", "cuda"]
NoiseKind = Literal["pink", "brown", "babble", "music", "hum"]


class ModelConfig(Section):
    """Fingerprinter network: log-mel front-end, separable conv encoder, L2-normalised embedding."""

    segment_s: float = Field(1.0, gt=0)
    n_fft: int = Field(1024, ge=64)
    hop_length: int = Field(256, ge=16)
    n_mels: int = Field(64, ge=16)
    f_min: float = Field(300.0, ge=0)
    f_max: float = Field(4000.0, gt=0)
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 128], min_length=1)
    hidden: int = Field(512, ge=8)
    embedding_dim: int = Field(128, ge=4)

    @model_validator(mode="after")
    def _head_divides(self) -> "ModelConfig":
        if self.hidden % self.embedding_dim:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of embedding_dim ({self.embedding_dim})")
        if self.f_max <= self.f_min:
            raise ValueError(f"f_max ({self.f_max}) must be > f_min ({self.f_min})")
        return self


class TrainConfig(Section):
    """Contrastive training on (clean segment, degraded copy) pairs with NT-Xent."""

    seed: int = 0
    device: Device = "auto"
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(30, ge=1)
    batch_size: int = Field(96, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.05, gt=0)
    max_shift_s: float = Field(0.25, ge=0)  # positive segment offset from its anchor (within the index hop)
    snr_db_min: float = 0.0
    snr_db_max: float = 10.0
    noise_kinds: list[NoiseKind] = Field(
        default_factory=lambda: ["pink", "brown", "babble", "music", "hum"], min_length=1
    )
    reverb_prob: float = Field(0.5, ge=0, le=1)
    bandlimit_prob: float = Field(0.5, ge=0, le=1)
    codec_prob: float = Field(0.3, ge=0, le=1)
    val_queries: int = Field(256, ge=8)
    val_hop_s: float = Field(0.5, gt=0)  # clean val segments every this (the index hop it anticipates)
    patience: int = Field(4, ge=1)  # epochs without validation improvement before stopping

    def ddp_batch(self, section: str) -> tuple[str, int]:
        """(the keys that set it, the batch DDP ranks split): each rank embeds batch / world size pairs."""
        return f"{section}.batch_size", self.batch_size

    @model_validator(mode="after")
    def _snr_ordered(self) -> "TrainConfig":
        if self.snr_db_max < self.snr_db_min:
            raise ValueError(f"snr_db_max ({self.snr_db_max}) must be >= snr_db_min ({self.snr_db_min})")
        return self


class VectorIndexConfig(Section):
    """A FAISS index of reference vectors (exact by default); any family's."""

    kind: Literal["flat", "ivf_flat", "ivf_pq"] = "flat"
    nlist: int = Field(256, ge=1)
    nprobe: int = Field(16, ge=1)
    pq_m: int = Field(16, ge=1)
    device: Device = "auto"


class IndexConfig(VectorIndexConfig):
    """Reference segment embeddings every `hop_s` in a FAISS index, embedded resumably."""

    hop_s: float = Field(0.5, gt=0)
    checkpoint_every_refs: int = Field(50, ge=1)
    batch_size: int = Field(256, ge=1)
    decode_workers: int = Field(2, ge=0)  # processes decoding ahead while the model embeds (0 = in-process)
    density_neighbors: int = Field(10, ge=0)  # per segment: neighbours of other tracks averaged for hub discounting (0 = none)
    # who embeds the refs: this process (local), or Dask workers (dask: a scheduler at dask_address,
    # or with dask_address "" a LocalCluster of dask_workers processes started for the build)
    engine: Literal["local", "dask"] = "local"
    dask_address: str = ""
    dask_workers: int = Field(2, ge=1)

    @field_validator("dask_address")
    @classmethod
    def _dask_address_is_host_port(cls, value: str) -> str:
        if value and not re.fullmatch(r"([a-z]+://)?[^\s:/]+:\d+", value):
            raise ValueError(f"{value!r} is not a Dask scheduler address such as tcp://host:8786 (\"\" = a local cluster)")
        return value

    @model_validator(mode="after")
    def _dask_settings_need_dask_engine(self) -> "IndexConfig":
        if self.engine != "dask" and self.dask_address:
            raise ValueError(f"dask_address is set ({self.dask_address}) but engine is {self.engine!r}; set engine: dask")
        return self


class IdentifyConfig(Section):
    """Query side: segment hop, neighbours per segment and offset-consistent voting."""

    query_hop_s: float = Field(0.25, gt=0)
    neighbors: int = Field(20, ge=1)
    top: int = Field(5, ge=1)
    offset_bin_s: float = Field(0.5, gt=0)
    # open set: a best match scoring below this is "not in the catalog" (null: the threshold that
    # fingerprint-evaluate calibrated for the model, carried by its registered bundle)
    min_score: float | None = None
    hub_penalty: float = Field(0.0, ge=0.0)  # hit similarity − penalty × (segment density − median): hubs discounted
    # resampling factors tried per query, best answer kept (1.0 = as heard; 1.0595 undoes +1 semitone / +6 % speed)
    warps: list[float] = Field(default_factory=lambda: [1.0], min_length=1)

    @field_validator("warps")
    @classmethod
    def _warps_start_as_heard(cls, value: list[float]) -> list[float]:
        if value[0] != 1.0 or any(not 0.5 <= w <= 2.0 for w in value):
            raise ValueError("warps must start with 1.0 (the query as heard) and lie in [0.5, 2.0]")
        return value


class EvaluateConfig(Section):
    """Degraded queries on held-out tracks; metrics per query length and condition."""

    seed: int = 0
    conditions: list[Literal["noise", "noise_reverb", "codec_noise", "telephone", "speed", "pitch"]] = Field(
        default_factory=lambda: ["noise", "noise_reverb", "codec_noise", "telephone", "speed", "pitch"], min_length=1
    )
    snr_db_min: float = 0.0
    snr_db_max: float = 10.0
    max_queries: int = Field(0, ge=0)  # 0 = every planned query
    offset_tolerance_s: float = Field(0.5, gt=0)
    target_fpr: float = Field(0.01, gt=0.0, lt=1.0)  # open-set threshold: share of out-of-catalog queries let through


GATE_METRIC = r"^[A-Za-z][A-Za-z0-9_.]*$"


class TrackingConfig(Section):
    """MLflow tracking. The URI is not here: MLFLOW_TRACKING_URI, else `sqlite:///<repo>/mlflow.db`."""

    enabled: bool = True
    experiment: str = Field("musicid", min_length=1)
    system_metrics: bool = True  # CPU/RAM/GPU samples alongside the training metrics
    system_metrics_interval_s: float = Field(5.0, gt=0)


class SpineTrainConfig(Section):
    """Settings every family's training shares (params.yaml `train:`)."""

    deterministic: bool = False  # seeded Python/NumPy/torch + torch's deterministic algorithms (cuDNN, cuBLAS)
    # > 1: a training stage runs as this many DDP processes (gloo on CPU, nccl on CUDA); under torchrun its env decides
    world_size: int = Field(1, ge=1, le=64)


class GatesConfig(Section):
    """Release gates: `min` metrics must reach, `max` metrics must not exceed (names as `registry list` shows)."""

    min: dict[str, float] = Field(default_factory=lambda: {"main_top1_3s": 0.90, "main_top1_10s": 0.95})
    max: dict[str, float] = Field(default_factory=lambda: {"latency_p95_ms": 250.0})

    @model_validator(mode="after")
    def _names_are_metric_names(self) -> "GatesConfig":
        import re

        for kind in ("min", "max"):
            for name in getattr(self, kind):
                if not re.match(GATE_METRIC, name):
                    raise ValueError(f"{kind}.{name}: gate names are metric names like main_top1_3s or latency_p95_ms")
        return self


class RegistryConfig(Section):
    """MLflow model registry: what the `report` stage registers and what promotion demands."""

    model_name: str = Field("musicid-fingerprinter", min_length=1)
    candidate_alias: str = Field("candidate", min_length=1)
    champion_alias: str = Field("champion", min_length=1)
    bundle_index: bool = True  # ship the FAISS index inside the registered model so it can answer queries
    gates: GatesConfig = Field(default_factory=GatesConfig)


# --- the works family (cover-song / work identification) ------------------------------------------


class WorksSplitConfig(Section):
    """CoverHunterMPS's four knobs: unseen works for val/test, held-out performances of seen works."""

    seed: int = 0
    val_unseen_works: float = Field(0.15, ge=0, lt=1)  # share of works kept out of training, for validation
    test_unseen_works: float = Field(0.2, ge=0, lt=1)  # share of works kept out of training, for testing
    val_seen_performances: float = Field(0.1, ge=0, lt=1)  # share of a seen work's performances held out for val
    test_seen_performances: float = Field(0.1, ge=0, lt=1)  # ... and for test
    min_performances: int = Field(2, ge=2)  # works with fewer performances only ever train

    @model_validator(mode="after")
    def _leaves_training_works(self) -> "WorksSplitConfig":
        if self.val_unseen_works + self.test_unseen_works >= 1:
            raise ValueError("val_unseen_works + test_unseen_works must be < 1 so some works remain for training")
        if self.val_seen_performances + self.test_seen_performances >= 1:
            raise ValueError("val_seen_performances + test_seen_performances must be < 1")
        return self


class WorksFeaturesConfig(Section):
    """Constant-Q spectrogram per performance (CoverHunter defaults); ragged Zarr store per split."""

    sample_rate: int = Field(16000, ge=4000, le=48000)
    n_bins: int = Field(96, ge=12)
    bins_per_octave: int = Field(12, ge=12)  # 24/36 for music outside 12-TET
    fmin_hz: float = Field(32.70, gt=0)
    hop_s: float = Field(0.04, gt=0)
    max_duration_s: float = Field(300.0, gt=0)  # longer performances are cut (memory bound)
    train_speeds: list[float] = Field(default_factory=lambda: [0.9, 1.0, 1.1], min_length=1)  # train split only
    # extra training works rendered by the embedded generator (never indexed or evaluated): a work
    # identifier needs many works to generalise, far more than a small catalog holds
    extra_synthetic_works: int = Field(150, ge=0)
    extra_synthetic_versions: int = Field(3, ge=2, le=26)
    extra_synthetic_seed: int = 777
    extra_synthetic_duration_s: list[float] = Field(default_factory=lambda: [20.0, 30.0], min_length=2, max_length=2)
    dtype: Literal["float16", "float32"] = "float16"
    compressor: Literal["none", "zstd", "blosc"] = "zstd"
    level: int = Field(3, ge=0, le=22)
    chunk_mb: float = Field(1.0, gt=0)
    shard_mb: float = Field(64.0, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> "WorksFeaturesConfig":
        if any(not 0.5 <= s <= 2.0 for s in self.train_speeds):
            raise ValueError("train_speeds must all lie in [0.5, 2.0]")
        if 1.0 not in self.train_speeds:
            raise ValueError("train_speeds must include 1.0 (the performance as recorded)")
        top = self.fmin_hz * 2 ** ((self.n_bins - 1) / self.bins_per_octave)
        if top >= self.sample_rate / 2:
            raise ValueError(f"the top CQT bin ({top:.0f} Hz) must be below Nyquist ({self.sample_rate / 2:.0f} Hz)")
        return self

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))


class WorksModelConfig(Section):
    """CQT → backbone → attention pooling → L2-normalised embedding (+ a classifier for training)."""

    backbone: Literal["conformer", "cqtnet"] = "conformer"
    embedding_dim: int = Field(64, ge=8)
    dim: int = Field(64, ge=16)  # conformer width / cqtnet final channels
    conformer_layers: int = Field(2, ge=1)
    conformer_heads: int = Field(4, ge=1)
    conformer_ffn: int = Field(128, ge=16)
    conformer_kernel: int = Field(15, ge=3)
    cqtnet_channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    key_normalize: bool = True  # rotate each input so its strongest pitch class comes first (transposition invariance)

    @model_validator(mode="after")
    def _heads_divide(self) -> "WorksModelConfig":
        if self.dim % self.conformer_heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of conformer_heads ({self.conformer_heads})")
        if self.conformer_kernel % 2 == 0:
            raise ValueError(f"conformer_kernel ({self.conformer_kernel}) must be odd")
        return self


class WorksTrainConfig(Section):
    """Focal + triplet + center losses over m-per-class batches of CQT chunks; AdamW, lr decay."""

    seed: int = 0
    device: Device = "auto"
    epochs: int = Field(20, ge=1)
    steps_per_epoch: int = Field(30, ge=1)
    works_per_batch: int = Field(16, ge=2)  # m-per-class sampler: classes per batch
    per_work: int = Field(2, ge=2)  # ... and chunks of each
    chunk_frames: list[int] = Field(default_factory=lambda: [300, 400], min_length=1)  # 12 s, 16 s at hop 0.04 s
    # chunk lengths in frames: the seconds follow from works.features.hop_s (the model card and the
    # minimum query length state them)
    lr: float = Field(2e-3, gt=0)
    betas: list[float] = Field(default_factory=lambda: [0.8, 0.99], min_length=2, max_length=2)  # CoverHunter's
    weight_decay: float = Field(1e-3, ge=0)
    lr_decay: float = Field(0.95, gt=0, le=1)  # per epoch
    min_lr: float = Field(1e-4, gt=0)
    focal_weight: float = Field(1.0, ge=0)
    focal_gamma: float = Field(2.0, ge=0)
    triplet_weight: float = Field(0.3, ge=0)
    triplet_margin: float = Field(0.3, ge=0)
    center_weight: float = Field(0.01, ge=0)
    erase_prob: float = Field(0.3, ge=0, le=1)  # spec augmentation: random erase of a time/frequency band
    roll_prob: float = Field(0.8, ge=0, le=1)  # pitch roll (key change) of the CQT
    roll_method: Literal["default", "low_melody", "flex_melody"] = "default"
    max_roll_bins: int = Field(12, ge=0)
    patience: int = Field(10, ge=1)  # epochs without a val mAP gain before stopping
    eval_every: int = Field(5, ge=1)  # named test sets are scored every N epochs (MLflow mAP_<testset>)

    def ddp_batch(self, section: str) -> tuple[str, int]:
        """(the keys that set it, the batch DDP ranks split): works × chunks of each (fewer if fewer works)."""
        return f"{section}.works_per_batch × {section}.per_work", self.works_per_batch * self.per_work


class WorksEvaluateConfig(Section):
    """Ranking metrics on unseen works and on seen works' held-out performances, reported apart."""

    testsets: list[Literal["test_unseen", "test_seen", "val_unseen", "val_seen"]] = Field(
        default_factory=lambda: ["test_unseen", "test_seen"], min_length=1
    )
    tsne: bool = True


HeldOutSet = Literal["test_unseen", "val_unseen"]


class ProdTrainConfig(Section):
    """Production training (stage <family>-train-prod): stratified K-fold over everything but the
    held-out data, each later fold continuing at `later_lr`, then a final run early-stopped on held-out data."""

    folds: int = Field(3, ge=2)
    seed: int = 0  # of the fold assignment
    epochs: int = Field(6, ge=1)  # per fold
    later_lr: float = Field(5e-4, gt=0)  # folds after the first and the final run start here
    final_epochs: int = Field(6, ge=1)


class WorksProdConfig(ProdTrainConfig):
    """works-train-prod: the held-out sets are whole works never trained on."""

    holdout: list[HeldOutSet] = Field(default_factory=lambda: ["test_unseen", "val_unseen"], min_length=1)
    early_stop_on: HeldOutSet = "test_unseen"  # the held-out set the final run selects its best epoch on

    @model_validator(mode="after")
    def _stops_on_a_holdout(self) -> "WorksProdConfig":
        if self.early_stop_on not in self.holdout:
            raise ValueError(f"early_stop_on {self.early_stop_on!r} must be one of holdout {self.holdout}")
        return self


class WorksRerankConfig(Section):
    """Second stage: the embedding's top_k candidates re-ordered by chroma alignment (Qmax)."""

    top_k: int = Field(100, ge=0)  # candidates aligned per query (0 = embedding ranking only)
    average_frames: int = Field(5, ge=1)  # CQT frames averaged per chroma frame (5 × 0.04 s = 0.2 s)
    embed_frames: int = Field(9, ge=1)  # chroma frames stacked per recurrence point (delay embedding)
    kappa: float = Field(0.1, gt=0.0, le=1.0)  # share of nearest frames kept per row and column
    gap_open: float = Field(0.5, ge=0.0)
    gap_extend: float = Field(0.5, ge=0.0)
    # the chroma each performance is aligned on (works-index stores it; queries use the index's recipe)
    peaks: bool = True  # keep only each CQT frame's spectral peaks
    harmonic_weight: float = Field(0.6, ge=0.0, le=1.0)  # credit a bin with its harmonics' energy (w, w², …); 0 = off
    harmonics: int = Field(4, ge=2, le=8)  # harmonics 2…N credited


class WorksIdentifyConfig(Section):
    """Query side: rank works by their nearest performances (or their centroids), then re-rank by alignment."""

    top: int = Field(10, ge=1)
    neighbors: int = Field(50, ge=1)  # performances fetched from FAISS before ranking works
    centroids: bool = False  # rank by work centroid instead of the best performance
    rerank: WorksRerankConfig = Field(default_factory=WorksRerankConfig)


def _works_registry() -> "RegistryConfig":
    return RegistryConfig(
        model_name="musicid-work-identifier",
        gates=GatesConfig(min={"test_unseen_mAP": 0.5}, max={"latency_p95_ms": 2000.0}),
    )


class WorksParams(Section):
    """The work identifier's sections (stages works-*)."""

    split: WorksSplitConfig = Field(default_factory=WorksSplitConfig)
    features: WorksFeaturesConfig = Field(default_factory=WorksFeaturesConfig)
    model: WorksModelConfig = Field(default_factory=WorksModelConfig)
    train: WorksTrainConfig = Field(default_factory=WorksTrainConfig)
    prod: WorksProdConfig = Field(default_factory=WorksProdConfig)
    evaluate: WorksEvaluateConfig = Field(default_factory=WorksEvaluateConfig)
    index: VectorIndexConfig = Field(default_factory=VectorIndexConfig)
    identify: WorksIdentifyConfig = Field(default_factory=WorksIdentifyConfig)
    registry: RegistryConfig = Field(default_factory=_works_registry)


class FingerprintParams(Section):
    """The fingerprinter's sections (stages fingerprint-*)."""

    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prod: ProdTrainConfig = Field(default_factory=lambda: ProdTrainConfig(later_lr=2e-4))  # the test tracks are held out
    index: IndexConfig = Field(default_factory=IndexConfig)
    identify: IdentifyConfig = Field(default_factory=IdentifyConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)


class PitchSynthConfig(StoreEncodingConfig):
    """Generated windows of synthetic notes with per-bin targets (stage pitch-synth; families/pitch/synth.py)."""

    seed: int = 0
    sample_rate: int = Field(44100, ge=8000, le=192000)
    window_samples: int = Field(4096, ge=256)
    n_bins: int = Field(2048, ge=16)
    fmin_hz: float = Field(20.0, gt=0)
    fmax_hz: float = Field(5000.0, gt=0)
    samples_per_bin: dict[Literal["train", "val", "test"], int] = Field(
        default_factory=lambda: {"train": 10, "val": 1, "test": 1})  # sanity set: single notes per bin
    polyphonic_windows: dict[Literal["train", "val", "test"], int] = Field(
        default_factory=lambda: {"train": 20000, "val": 2000, "test": 2000})
    polyphony: list[int] = Field(default_factory=lambda: [1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12, 16], min_length=1)
    n_timbres: int = Field(100, ge=1)
    max_harmonics: int = Field(30, ge=1)
    random_phase: bool = True  # off: every note starts at phase 0 (the ablation)
    energy_sigma_bins: float = Field(1.5, gt=0)
    # the waveform stays uncompressed (memory-mapped reads); targets compress well (mostly zeros)
    dtype: Literal["float16", "float32", "int16"] = "float16"
    compressor: Compressor = "none"
    target_compressor: Literal["same", "none", "zstd", "blosc"] = "zstd"
    target_chunk_kb: float | None = Field(64.0, gt=0)

    @model_validator(mode="after")
    def _fits(self) -> "PitchSynthConfig":
        if self.window_samples & (self.window_samples - 1):
            raise ValueError(f"window_samples {self.window_samples} must be a power of two (the model's FFT front end); "
                             f"e.g. {1 << (self.window_samples.bit_length() - 1)} or {1 << self.window_samples.bit_length()}")
        if self.fmax_hz <= self.fmin_hz:
            raise ValueError(f"fmax_hz ({self.fmax_hz}) must be > fmin_hz ({self.fmin_hz})")
        if self.fmax_hz >= self.sample_rate / 2:
            raise ValueError(f"fmax_hz ({self.fmax_hz}) must lie below Nyquist ({self.sample_rate / 2:g} Hz at "
                             f"sample_rate {self.sample_rate})")
        if min(self.polyphony) < 1:
            raise ValueError("polyphony: every entry must be >= 1")
        if min(self.samples_per_bin.values(), default=1) < 0 or min(self.polyphonic_windows.values(), default=1) < 0:
            raise ValueError("samples_per_bin / polyphonic_windows: counts must be >= 0")
        return self

    @property
    def hop_samples(self) -> int:
        return self.window_samples

    @property
    def max_polyphony(self) -> int:
        return max(self.polyphony)


class PitchModelConfig(Section):
    """Window → per-bin confidence and energy: fixed log-frequency DFT, harmonic stacking, 1-D convs."""

    harmonics: list[float] = Field(default_factory=lambda: [0.2, 0.333333, 0.5, 1, 2, 3, 4, 5, 6], min_length=1)
    channels: list[int] = Field(default_factory=lambda: [32, 32, 32], min_length=1)
    kernel: int = Field(5, ge=1)
    dilations: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    periodicity: bool = True


class PitchTrainConfig(Section):
    """Training of the pitch model on the generated sets (the spine's loop)."""

    seed: int = 0
    device: Device = "auto"
    sets: list[Literal["sanity", "polyphonic"]] = Field(default_factory=lambda: ["sanity", "polyphonic"], min_length=1)
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    pos_weight: float = Field(1.0, gt=0)  # BCE weight of positive confidence bins
    energy_weight: float = Field(10.0, ge=0)
    confidence_blur_bins: float = Field(4.0, ge=0)  # train against the confidence target blurred by a Gaussian (σ bins; 0 = exact bins)
    conv_l2: float = Field(0.0, ge=0)  # L2 on convolution weights
    fc_l2: float = Field(0.0, ge=0)  # L2 on the output (1×1) layer
    patience: int = Field(4, ge=1)
    val_windows: int = Field(512, ge=8)  # per validation set

    def ddp_batch(self, section: str) -> tuple[str, int]:
        """(the keys that set it, the batch DDP ranks split): the rows drawn from each set per step."""
        return (f"{section}.batch_size / len({section}.sets) ({self.batch_size} / {len(self.sets)})",
                max(1, self.batch_size // len(self.sets)))


class PitchEvaluateConfig(Section):
    """Held-out windows: bin-level P/R/F1, single-note cents errors, the phase probes."""

    threshold: float | None = Field(None, gt=0, lt=1)  # None: the one chosen on validation, stored with the model
    tolerance_cents: float = Field(50.0, gt=0)
    probe_hz: list[float] = Field(default_factory=lambda: [220.0, 440.0, 880.0], min_length=1)
    probe_notes: int = Field(50, ge=1)
    probe_offsets: list[int | Literal["mid"]] = Field(default_factory=lambda: [0, 512, "mid"], min_length=1)
    seed: int = 0


class PitchPredictConfig(Section):
    hop_samples: int = Field(1024, ge=1)
    threshold: float | None = Field(None, gt=0, lt=1)  # None: the model's own (chosen on validation)


def _pitch_registry() -> "RegistryConfig":
    return RegistryConfig(
        model_name="musicid-pitch", bundle_index=False,
        gates=GatesConfig(min={"sanity_within_50c": 0.5}, max={"latency_p95_ms": 500.0}),
    )


class PitchParams(Section):
    """The pitch family's sections (stages pitch-*)."""

    synth: PitchSynthConfig = Field(default_factory=PitchSynthConfig)
    model: PitchModelConfig = Field(default_factory=PitchModelConfig)
    train: PitchTrainConfig = Field(default_factory=PitchTrainConfig)
    evaluate: PitchEvaluateConfig = Field(default_factory=PitchEvaluateConfig)
    predict: PitchPredictConfig = Field(default_factory=PitchPredictConfig)
    registry: RegistryConfig = Field(default_factory=_pitch_registry)


CHORALE_STYLES = ("church_organ", "reed_organ", "piano", "harpsichord", "string_ensemble", "string_quartet",
                  "choir_aahs", "brass", "woodwinds")  # data.chorales.STYLES: GM programs per style
SplitName = Literal["train", "val", "test"]


class NotesSyntheticConfig(Section):
    """Note-labelled audio from the embedded composer: its own works (own seed), split by work."""

    seed: int = 4242  # not the archive's synth.seed: no transcription piece is an archive work
    works: dict[SplitName, int] = Field(default_factory=lambda: {"train": 16, "val": 3, "test": 3})
    versions: int = Field(2, ge=1, le=26)  # renderings per work (tempo, key, instruments, mix)
    max_duration_s: float = Field(30.0, gt=0)


class NotesChoralesConfig(Section):
    """Note-labelled audio from music21's Bach chorales rendered by fluidsynth; split by chorale."""

    seed: int = 0
    pieces: int = Field(0, ge=0)  # the first N chorales in BWV order (0: all of them, ~350)
    val_share: float = Field(0.1, ge=0, lt=1)
    test_share: float = Field(0.1, ge=0, lt=1)
    renderings: dict[SplitName, int] = Field(default_factory=lambda: {"train": 2, "val": 1, "test": 1})
    tempo_range: list[float] = Field(default_factory=lambda: [0.85, 1.15], min_length=2, max_length=2)
    max_transpose: int = Field(3, ge=0, le=12)
    styles: list[Literal[CHORALE_STYLES]] = Field(default_factory=lambda: list(CHORALE_STYLES), min_length=1)  # type: ignore[valid-type]
    soundfont: str = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

    @model_validator(mode="after")
    def _fits(self) -> "NotesChoralesConfig":
        if self.val_share + self.test_share >= 1:
            raise ValueError(f"val_share + test_share ({self.val_share + self.test_share:g}) must be < 1")
        if not 0 < self.tempo_range[0] <= self.tempo_range[1]:
            raise ValueError(f"tempo_range {self.tempo_range}: need 0 < low <= high")
        return self


class PitchNotesConfig(StoreEncodingConfig):
    """Note-labelled audio → fixed windows of frames with per-frame onset / frame / velocity targets per pitch."""

    sources: list[Literal["synthetic", "chorales"]] = Field(default_factory=lambda: ["synthetic", "chorales"], min_length=1)
    sample_rate: int = Field(16000, ge=8000, le=48000)
    frame_hop: int = Field(256, ge=16)  # samples per frame (16 ms at 16 kHz)
    window_frames: int = Field(128, ge=8)  # frames per stored row
    min_midi: int = Field(21, ge=0, le=127)  # A0: the piano's range by default
    n_pitches: int = Field(88, ge=1, le=128)
    max_notes: int = Field(128, ge=1)  # note-list rows stored per window (more are dropped, counted)
    onset_frames: int = Field(2, ge=1)  # frames an onset target spans from the note's start (2 × 16 ms, as Onsets and Frames)
    synthetic: NotesSyntheticConfig = Field(default_factory=NotesSyntheticConfig)
    chorales: NotesChoralesConfig = Field(default_factory=NotesChoralesConfig)
    dtype: Literal["float16", "float32", "int16"] = "float16"
    compressor: Compressor = "none"
    target_compressor: Literal["same", "none", "zstd", "blosc"] = "zstd"
    shard_mb: float = Field(16.0, gt=0)

    @model_validator(mode="after")
    def _pitch_range(self) -> "PitchNotesConfig":
        if self.min_midi + self.n_pitches > 128:
            raise ValueError(f"min_midi + n_pitches ({self.min_midi + self.n_pitches}) must be <= 128 (MIDI pitches 0-127)")
        return self

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.frame_hop

    @property
    def hop_samples(self) -> int:
        return self.window_samples

    @property
    def frames_per_s(self) -> float:
        return self.sample_rate / self.frame_hop


class NoteNetConfig(Section):
    """One transcription network (pitch_onset or pitch_frame): its shape and how it trains."""

    n_fft: int = Field(4096, ge=64)  # STFT under the log-frequency spectrogram (long: low keys are 1.6 Hz apart)
    bins_per_semitone: int = Field(3, ge=1, le=8)
    harmonics: list[float] = Field(default_factory=lambda: [0.5, 1, 2, 3, 4, 5], min_length=1)
    channels: list[int] = Field(default_factory=lambda: [16, 8, 8], min_length=1)
    lstm_hidden: int = Field(8, ge=1)
    context_frames: int = Field(9, ge=1, le=63)  # frames the LSTM reads around each frame (the 5-15)
    bidirectional: bool = True
    seed: int = 0
    device: Device = "auto"
    sets: list[Literal["synthetic", "chorales"]] = Field(default_factory=lambda: ["synthetic", "chorales"], min_length=1)
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-2, gt=0)  # small networks, short schedules: 1e-2 learns in tens of steps
    pos_weight: float = Field(1.0, gt=0)  # BCE weight of the positive (onset / sounding) cells
    conv_l2: float = Field(0.0, ge=0)
    fc_l2: float = Field(0.0, ge=0)
    threshold: float = Field(0.5, ge=0, le=1)  # frame-level P/R/F1 are read at this probability
    patience: int = Field(5, ge=1)  # early stop after this many epochs without a better eval F1
    eval_windows: int = Field(256, ge=1)  # windows of each split scored per epoch (train and eval)

    def ddp_batch(self, section: str) -> tuple[str, int]:
        """(the keys that set it, the batch DDP ranks split): the rows drawn from each set per step."""
        return (f"{section}.batch_size / len({section}.sets) ({self.batch_size} / {len(self.sets)})",
                max(1, self.batch_size // len(self.sets)))

    @model_validator(mode="after")
    def _fits(self) -> "NoteNetConfig":
        if min(self.harmonics) <= 0:
            raise ValueError(f"harmonics {self.harmonics}: every entry must be > 0")
        return self


def _onset_net() -> NoteNetConfig:
    # the team's current best L2 for the onset network; a 1024-point STFT (64 ms) resolves onsets in time
    return NoteNetConfig(conv_l2=0.0, fc_l2=1e-4, n_fft=1024)


def _frame_net() -> NoteNetConfig:
    return NoteNetConfig(conv_l2=5e-3, fc_l2=0.0)  # ... and for the pitch (frame) network


def _transcriber_registry() -> "RegistryConfig":
    return RegistryConfig(
        model_name="musicid-transcriber", bundle_index=False,
        gates=GatesConfig(min={"chorales_note_onset_f1": 0.4}, max={"chorales_seconds_per_audio_minute": 30.0}),
    )


class PitchProdConfig(ProdTrainConfig):
    """pitch-train-prod: the transcriber's networks on every train + val track (folds by track,
    stratified by piece, per set); the test tracks stay held out, scored every epoch."""

    networks: list[Literal["onset", "frame"]] = Field(default_factory=lambda: ["onset", "frame"], min_length=1)
    early_stop_on: Literal["synthetic", "chorales"] = "chorales"  # the test set the final runs select their best epoch on


POST_PROCESSING = ("onset_threshold", "frame_threshold", "adjacent_time_s", "min_note_s")  # what turns probabilities into notes
TUNED = ("onset_threshold", "frame_threshold", "min_note_s")  # what pitch-transcribe-evaluate may choose on validation
Probability = Annotated[float, Field(ge=0, le=1)]


class TuneConfig(Section):
    """Post-processing chosen on the validation pieces (never the test ones) before the test is scored:
    every combination of the lists below is tried and the one with the best note onset F1 (mean over
    the validation pieces of `pitch_transcribe.sets`) is evaluated and registered. An empty list keeps
    the fixed value."""

    enabled: bool = True
    onset_threshold: list[Probability] = Field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5])
    frame_threshold: list[Probability] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    min_note_s: list[Annotated[float, Field(ge=0)]] = Field(default_factory=lambda: [0.02, 0.05])

    def grid(self, fixed: dict[str, Any]) -> list[dict[str, Any]]:
        """Every combination to try, in a fixed order (ties go to the first)."""
        import itertools

        axes = [getattr(self, key) or [fixed[key]] for key in TUNED]
        return [dict(zip(TUNED, combo)) for combo in itertools.product(*axes)]


class TranscribeConfig(Section):
    """Onset and frame probabilities → notes, how notes are scored (mir_eval) on the test pieces, and
    the registered transcriber (`musicid-transcriber`: both networks + the post-processing)."""

    onset_threshold: float = Field(0.5, ge=0, le=1)  # an onset needs this probability (a local peak in time)
    frame_threshold: float = Field(0.6, ge=0, le=1)  # a note lasts while its frame probability stays this high
    adjacent_time_s: float = Field(0.05, ge=0)  # onsets of one pitch closer than this merge into one note
    min_note_s: float = Field(0.05, ge=0)  # shorter notes are dropped
    tune: TuneConfig = Field(default_factory=TuneConfig)  # chosen on validation (the thresholds above are then the fallback)
    onset_tolerance_s: float = Field(0.05, gt=0)  # mir_eval: an estimated onset this close to a reference one matches
    offset_ratio: float = Field(0.2, gt=0)  # mir_eval onset+offset: offset within max(0.05 s, ratio × duration)
    sets: list[Literal["synthetic", "chorales"]] = Field(default_factory=lambda: ["synthetic", "chorales"], min_length=1)
    device: Device = "auto"
    registry: RegistryConfig = Field(default_factory=_transcriber_registry)

    def post_processing(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in POST_PROCESSING}


class ServeConfig(Section):
    """`musicid serve`: one HTTP service answering with every family's registered model."""

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=1, le=65535)
    alias: str = Field("champion", min_length=1)  # the registry alias each family follows (MUSICID_<FAMILY>_MODEL_URI overrides)
    poll_s: float = Field(5.0, gt=0)  # how often the aliases are read; a moved alias is loaded, checked and swapped in
    max_upload_mb: float = Field(20.0, gt=0)  # larger uploads are refused with 413


class Params(Section):
    """All of params.yaml: common sections, then one section per model family. Unknown keys are refused."""

    synth: SynthConfig = Field(default_factory=SynthConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    train: SpineTrainConfig = Field(default_factory=SpineTrainConfig)
    fingerprint: FingerprintParams = Field(default_factory=FingerprintParams)
    works: WorksParams = Field(default_factory=WorksParams)
    pitch: PitchParams = Field(default_factory=PitchParams)
    pitch_notes: PitchNotesConfig = Field(default_factory=PitchNotesConfig)
    pitch_onset: NoteNetConfig = Field(default_factory=_onset_net)
    pitch_frame: NoteNetConfig = Field(default_factory=_frame_net)
    pitch_transcribe: TranscribeConfig = Field(default_factory=TranscribeConfig)
    pitch_prod: PitchProdConfig = Field(default_factory=lambda: PitchProdConfig(later_lr=2e-3, epochs=3, final_epochs=3))
    serve: ServeConfig = Field(default_factory=ServeConfig)

    def family(self, name: str) -> Section:
        """A family's params section by family name."""
        return getattr(self, name)


def _format_error(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        parent: type[BaseModel] = Params
        for part in error["loc"][:-1]:
            annotation = parent.model_fields[str(part)].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                parent = annotation
        allowed = ", ".join(parent.model_fields)
        return f"{source}: unknown key {key}; allowed keys here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"].startswith(("value_error", "assertion")):
        return f"{source}: {key}: {message}"
    return f"{source}: {key}: {message} (got {error.get('input')!r})"


def parse_params(raw: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ConfigError naming the first bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(_format_error(exc.errors()[0], source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read params.yaml (or another file); missing sections take their defaults."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (run from the repository root or pass --params)")
    try:
        raw = yaml.load(path.read_text(), Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return parse_params(raw, source=str(path))
