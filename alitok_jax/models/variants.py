"""Model sizes: the single source of truth for every AliTok model this package builds.

The released sizes follow ALITOK_REFERENCE.md (sections 1-3): the tokenizer's ViT-B encoder and
ViT-L decoder (`modeling/alitok.py`, `train_tokenizer/model/vae_stage{1,2}.py`) and the AR models
B / L / XL (`modeling/ar.py`, `configs/alitok_*.yaml`). `tiny` variants keep every structural
choice (273 latent tokens, 4096 codes, 1000 classes) and shrink only widths and depths, so that
tests and the demo run on a CPU.

Every size follows from a config's image size, patch size and codebook (issue 16): the grid is
image_size / patch_size, the prefix is 1 + the grid width (the top-left patch and the first
patch row: 17 at 256, 33 at 512) and the codes are prefix + grid cells (273 at 256, 1,057 at
512). `sized` gives any variant at another resolution or codebook size (the paper's 512 x 512 of
Table 5 and the 16,384-entry codebook of Table 6), e.g. `sized(AR['L'], image_size=512)`.

Configs are frozen dataclasses: hashable (usable as static jit arguments), serialisable with
`to_dict` / `from_dict` (the converter writes them next to the params as JSON).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from alitok_jax.errors import ConfigError


def prefix_tokens_of(grid_size: int) -> int:
  """Prefix tokens of a grid: the top-left patch, then the first patch row (17 for 16 x 16)."""
  return 1 + grid_size


def codes_of(grid_size: int) -> int:
  """Codes per image: the prefix, then one per grid cell (273 for 16 x 16, 1,057 for 32 x 32)."""
  return prefix_tokens_of(grid_size) + grid_size**2


# Names of the kernel initialisations a model config can ask for (models/layers.kernel_init).
KERNEL_INITS = ('reference', 'fan_in')


def _check_heads(width: int, heads: int) -> None:
  if width % heads:
    raise ValueError(f'width {width} is not divisible by heads {heads}')


def _round_up(n: int, multiple: int) -> int:
  return n if n % multiple == 0 else n + multiple - n % multiple


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """One pre-LN transformer stack (the tokenizer's encoder or decoder)."""

  width: int
  layers: int
  heads: int
  mlp_ratio: float = 4.0

  def __post_init__(self):
    _check_heads(self.width, self.heads)

  @property
  def mlp_width(self) -> int:
    return int(self.width * self.mlp_ratio)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """The AliTok tokenizer.

  stage 1 (training): causal decoder with one class token and the prefix head;
  stage 2 (released `AliTok.pth`): bidirectional decoder with `buffer_tokens` (32) buffer tokens.
  """

  encoder: ViTConfig
  decoder: ViTConfig
  stage: Literal[1, 2] = 2
  image_size: int = 256
  patch_size: int = 16
  prefix_tokens: int | None = None  # None: 1 + the grid width (the prefix rule)
  token_size: int = 32
  codebook_size: int = 4096
  commitment_cost: float = 0.25
  # How linear and convolution kernels start (models/layers.kernel_init): 'reference' is the
  # reference's N(0, 0.02); 'fan_in' (N(0, 1 / fan_in)) suits narrow models such as the demo's.
  kernel_init: str = 'reference'

  def __post_init__(self):
    if self.kernel_init not in KERNEL_INITS:
      raise ValueError(f'kernel_init must be one of {KERNEL_INITS}, got {self.kernel_init!r}')
    if self.stage not in (1, 2):
      raise ValueError(f'tokenizer stage must be 1 or 2, got {self.stage!r}')
    if self.image_size % self.patch_size:
      raise ValueError(f'image_size {self.image_size} is not a multiple of patch_size {self.patch_size}')
    if self.prefix_tokens is None:
      object.__setattr__(self, 'prefix_tokens', prefix_tokens_of(self.grid_size))
    if self.prefix_tokens != prefix_tokens_of(self.grid_size):
      raise ValueError(f'prefix_tokens {self.prefix_tokens} breaks the prefix rule: a '
                       f'{self.grid_size} x {self.grid_size} grid has 1 + {self.grid_size} = '
                       f'{prefix_tokens_of(self.grid_size)} prefix tokens (the top-left patch '
                       'and the first patch row)')
    if self.codebook_size < 2:
      raise ValueError(f'codebook_size must be at least 2, got {self.codebook_size}')

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid_size**2

  @property
  def num_latent_tokens(self) -> int:
    """Codes per image: the prefix tokens followed by one token per grid cell (17 + 256 = 273)."""
    return self.prefix_tokens + self.num_patches

  @property
  def causal_decoder(self) -> bool:
    return self.stage == 1

  @property
  def buffer_tokens(self) -> int:
    """Learned tokens the decoder prepends: 1 class token (stage 1), 32 buffer tokens (stage 2)."""
    return 1 if self.stage == 1 else 32

  def to_dict(self) -> dict[str, Any]:
    return {'kind': 'tokenizer', **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
    d = {k: v for k, v in d.items() if k != 'kind'}
    return cls(**{**d, 'encoder': ViTConfig(**d['encoder']), 'decoder': ViTConfig(**d['decoder'])})


@dataclasses.dataclass(frozen=True)
class ARConfig:
  """The class-conditional decoder-only AR model (LlamaGen-style, ALITOK_REFERENCE.md section 3)."""

  width: int
  depth: int
  heads: int
  codebook_size: int = 4096
  num_classes: int = 1000
  image_seq_len: int = 273
  prefix_tokens: int = 17
  rope_base: float = 10000.0
  dropout: float = 0.1
  attn_dropout: float = 0.1
  token_dropout: float = 0.1
  class_dropout: float = 0.1

  def __post_init__(self):
    _check_heads(self.width, self.heads)
    if self.head_dim % 4:
      raise ValueError(f'head_dim {self.head_dim} must be a multiple of 4 for the 2D rotary table')
    grid = self.image_seq_len - self.prefix_tokens
    if grid < 1 or int(round(grid**0.5)) ** 2 != grid:
      raise ValueError(f'image_seq_len - prefix_tokens = {grid} is not a square grid')
    if self.prefix_tokens != prefix_tokens_of(self.grid_size):
      raise ValueError(f'prefix_tokens {self.prefix_tokens} breaks the prefix rule: a '
                       f'{self.grid_size} x {self.grid_size} grid has '
                       f'{prefix_tokens_of(self.grid_size)} prefix tokens')

  @property
  def head_dim(self) -> int:
    return self.width // self.heads

  @property
  def ffn_hidden(self) -> int:
    """SwiGLU hidden width: int(2 * 4 * width / 3) rounded up to a multiple of 256."""
    return _round_up(int(2 * 4 * self.width / 3), 256)

  @property
  def grid_size(self) -> int:
    return int(round((self.image_seq_len - self.prefix_tokens) ** 0.5))

  @property
  def seq_len(self) -> int:
    """Positions of one sequence: the class token followed by the image codes (274)."""
    return self.image_seq_len + 1

  @property
  def vocab_size(self) -> int:
    """Rows of the shared embedding: codes, one unused row, classes, "no class" (5098)."""
    return self.codebook_size + 1 + self.num_classes + 1

  @property
  def class_offset(self) -> int:
    """Embedding row of class 0 (4097)."""
    return self.codebook_size + 1

  @property
  def no_class_id(self) -> int:
    """Embedding row of the "no class" token used for CFG and label dropout (5097)."""
    return self.codebook_size + 1 + self.num_classes

  def to_dict(self) -> dict[str, Any]:
    return {'kind': 'ar', **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ARConfig:
    return cls(**{k: v for k, v in d.items() if k != 'kind'})


# Released sizes. Encoder ViT-B, decoder ViT-L.
TOKENIZER_ENCODER = ViTConfig(width=768, layers=12, heads=12)
TOKENIZER_DECODER = ViTConfig(width=1024, layers=24, heads=16)

TOKENIZER = {
    'stage1': TokenizerConfig(TOKENIZER_ENCODER, TOKENIZER_DECODER, stage=1),
    'stage2': TokenizerConfig(TOKENIZER_ENCODER, TOKENIZER_DECODER, stage=2),
    # CPU-sized, same token layout (the parity fixtures use these widths).
    'tiny_stage1': TokenizerConfig(ViTConfig(64, 2, 4), ViTConfig(96, 2, 4), stage=1),
    'tiny_stage2': TokenizerConfig(ViTConfig(64, 2, 4), ViTConfig(96, 2, 4), stage=2),
    # The CPU demo's: AliTok's token layout at a laptop's scale. 32-pixel images in 8-pixel
    # patches give a 4 x 4 grid, so 5 prefix tokens (the top-left patch, then the first patch
    # row) + 16 grid tokens = 21 codes, from a codebook of 4096. 'fan_in' kernels: at these
    # widths the reference's N(0, 0.02) starts the model as a near-constant function.
    'demo_stage1': TokenizerConfig(ViTConfig(64, 2, 4), ViTConfig(96, 2, 4), stage=1,
                                   image_size=32, patch_size=8, codebook_size=4096,
                                   kernel_init='fan_in'),
    'demo_stage2': TokenizerConfig(ViTConfig(64, 2, 4), ViTConfig(96, 2, 4), stage=2,
                                   image_size=32, patch_size=8, codebook_size=4096,
                                   kernel_init='fan_in'),
}

AR = {
    'B': ARConfig(width=768, depth=24, heads=16),
    'L': ARConfig(width=1024, depth=24, heads=16),
    'XL': ARConfig(width=1280, depth=32, heads=16),
    'tiny': ARConfig(width=128, depth=2, heads=8),
    # The CPU demo's: over the demo tokenizer's 21 codes from 4096, for 10 synthetic classes.
    'demo': ARConfig(width=128, depth=2, heads=8, codebook_size=4096, num_classes=10,
                     image_seq_len=21, prefix_tokens=5),
}

# The paper's sizes beyond the released models: 512 x 512 images (Table 5; the tokenizer and the
# AR model fine-tuned from their 256 weights) and a 16,384-entry codebook (Table 6).
RESOLUTIONS = (256, 512)
CODEBOOK_SIZES = (4096, 16384)


def sized(cfg: TokenizerConfig | ARConfig, *, image_size: int | None = None,
          codebook_size: int | None = None, patch_size: int | None = None
          ) -> TokenizerConfig | ARConfig:
  """`cfg` at another image size and / or codebook size, every size derived (None keeps cfg's).

  A tokenizer keeps its patch size (patch_size overrides it); its prefix and code count follow
  the grid. An AR model has no patch size of its own: its grid is image_size / patch_size
  (default 16, the released tokenizer's), so `sized(AR['L'], image_size=512)` samples 1,057
  codes. Widths, depths and everything else stay.
  """
  if isinstance(cfg, TokenizerConfig):
    patch = patch_size or cfg.patch_size
    size = image_size or cfg.image_size
    return dataclasses.replace(cfg, image_size=size, patch_size=patch, prefix_tokens=None,
                               codebook_size=codebook_size or cfg.codebook_size)
  if isinstance(cfg, ARConfig):
    if image_size is None:
      grid = cfg.grid_size
    else:
      patch = patch_size or 16
      if image_size % patch:
        raise ValueError(f'image_size {image_size} is not a multiple of patch_size {patch}')
      grid = image_size // patch
    return dataclasses.replace(cfg, image_seq_len=codes_of(grid),
                               prefix_tokens=prefix_tokens_of(grid),
                               codebook_size=codebook_size or cfg.codebook_size)
  raise TypeError(f'sized takes a TokenizerConfig or an ARConfig, got {type(cfg).__name__}')


def sized_from_config(cfg: TokenizerConfig | ARConfig, config: Any) -> TokenizerConfig | ARConfig:
  """`sized(cfg, ...)` at a run config's `image_size` and `codebook_size` (configs/*.py's `res`
  and `codebook` arguments) and `patch_size` (the tokenizer's, for an AR model's grid; only the
  demo sets it: every released tokenizer has 16); a field that is absent or 0 keeps cfg's. The one place configs meet
  sizes: a bad combination is a ConfigError naming the fields."""
  image_size = int(config.get('image_size', 0) or 0) or None
  codebook_size = int(config.get('codebook_size', 0) or 0) or None
  patch_size = int(config.get('patch_size', 0) or 0) or None
  try:
    return sized(cfg, image_size=image_size, codebook_size=codebook_size, patch_size=patch_size)
  except ValueError as exc:
    raise ConfigError(f'config.image_size={image_size}, config.codebook_size={codebook_size}: '
                      f'{exc}') from None


# The released AR models' sampling settings (ALITOK_REFERENCE.md section 3, the reference's
# README / sample_imagenet.py): guidance scale g and power p of the pow-cosine schedule, with
# temperature 1.0 and no top-k / top-p. The one place they live: configs/ar.py (sample grids),
# configs/sample.py and the API's messages read them from here.
RELEASED_GUIDANCE = {'B': (16.0, 1.8), 'L': (6.0, 0.7), 'XL': (13.0, 1.4)}

# Heads cannot be read off weight shapes; these are the released widths' head counts, which the
# converter uses when a checkpoint gives no other hint.
KNOWN_HEADS = {768: 12, 1024: 16}


def config_from_dict(d: dict[str, Any]) -> TokenizerConfig | ARConfig:
  """Rebuilds a config written by `to_dict` (dispatching on its `kind`)."""
  kind = d.get('kind')
  if kind == 'tokenizer':
    return TokenizerConfig.from_dict(d)
  if kind == 'ar':
    return ARConfig.from_dict(d)
  if kind == 'convnext':  # the perceptual loss's network (models/convnext.py)
    from alitok_jax.models.convnext import ConvNeXtConfig  # noqa: PLC0415

    return ConvNeXtConfig.from_dict(d)
  if kind == 'inception':  # the FID Inception of the evaluation (models/inception.py)
    from alitok_jax.models.inception import InceptionConfig  # noqa: PLC0415

    return InceptionConfig.from_dict(d)
  if kind == 'lpips':  # LPIPS VGG16 v0.1 (models/lpips.py)
    from alitok_jax.models.lpips import LPIPSConfig  # noqa: PLC0415

    return LPIPSConfig.from_dict(d)
  raise ValueError(f'unknown model kind {kind!r} (expected "tokenizer" or "ar")')
