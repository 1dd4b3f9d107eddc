"""The built-in model's networks: text -> layout -> image.

Three learned parts, all diffusers / transformers components, saved together as one pipeline:

1. A word-level tokenizer and a small BERT text encoder (`transformers.BertModel`). The input is
   `[CLS] [R:<ratio>] [OBJ1] [OBJ2] [OBJ3] [BG] <prompt words> [SEP]`, followed for edits by 64
   tokens that encode the source image (a small CNN on the source, one token per 8x8 cell).
2. `LayoutModel` reads the encoder's states at the four query tokens and predicts the scene layout:
   for each object slot whether it exists, its shape, its colour, and a Gaussian over its centre
   and radius; for the background, its colour. (GLIGEN-style grounding: the prompt becomes
   explicit object slots before any pixel is drawn.)
3. A `diffusers.UNet2DModel` denoiser trained with rectified flow, preconditioned as in EDM (see
   `preconditioning`) to predict the clean image; sampling turns that prediction into the flow's
   velocity. It sees the noisy image and the layout rendered as maps: inside each
   object's disk the object's offset from its centre (in radii), its learned shape and colour
   embeddings; everywhere the background's embedding. The maps are resolution-independent, so one
   network draws at any size.

For training, the layout part is supervised directly by the scene generator's ground truth and the
denoiser is conditioned on ground-truth layouts; at sampling time the denoiser follows the layout
the text encoder predicted.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from daguerre.engine.builtin.scenes import COLOURS, SHAPES
from daguerre.wire import ASPECT_RATIOS

SLOTS = 3
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[OBJ1]", "[OBJ2]", "[OBJ3]", "[BG]"] + [
    f"[R:{ratio}]" for ratio in ASPECT_RATIOS
]
QUERY_OFFSET = 2  # [CLS] [R:..] come first, then the slot queries and [BG]
MAX_TEXT_TOKENS = 48
IMAGE_GRID = 8  # the source image becomes IMAGE_GRID x IMAGE_GRID tokens
IMAGE_SIZE = 64  # the source is resized to this square before encoding (normalised positions survive)
MASK_RADIUS = 1.4  # object maps cover the disk of this many radii around each centre
UNSHUFFLE = 2  # the denoiser runs at half resolution on 2x2 pixel blocks
MIN_FLOW_T = 0.05  # the velocity implied by a predicted clean image is (x_t - x0) / max(t, MIN_FLOW_T)


@dataclass
class Layout:
    """A batch of layouts. Shapes: exists/shape/colour (B, SLOTS); x/y/radius (B, SLOTS);
    background (B,). Positions are normalised (x right, y down); radius is a fraction of the short
    side. Missing slots have exists == 0 and are ignored."""

    exists: torch.Tensor
    shape: torch.Tensor
    colour: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    radius: torch.Tensor
    background: torch.Tensor

    def to(self, device: torch.device | str) -> Layout:
        return Layout(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass
class LayoutPrediction:
    exists_logit: torch.Tensor  # (B, SLOTS)
    shape_logits: torch.Tensor  # (B, SLOTS, len(SHAPES))
    colour_logits: torch.Tensor  # (B, SLOTS, len(COLOURS))
    geometry_mean: torch.Tensor  # (B, SLOTS, 3): x, y, radius
    geometry_log_std: torch.Tensor  # (B, SLOTS, 3)
    background_logits: torch.Tensor  # (B, len(COLOURS))


class LayoutModel(ModelMixin, ConfigMixin):
    """Layout heads, the source-image encoder, and the embeddings the layout maps are made of."""

    @register_to_config
    def __init__(
        self,
        hidden_size: int = 128,
        num_shapes: int = len(SHAPES),
        num_colours: int = len(COLOURS),
        map_embedding_dim: int = 4,
    ) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(
            nn.Conv2d(5, 32, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(64, hidden_size, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden_size, hidden_size, 1),
        )
        self.image_position = nn.Parameter(torch.zeros(IMAGE_GRID * IMAGE_GRID, hidden_size))
        # Each word sees its two neighbours on either side before attention: "a small red star" puts
        # "small red" into the state of "star", so a slot that finds the noun also finds its adjectives.
        self.phrase = nn.Conv1d(hidden_size, hidden_size, kernel_size=5, padding=2)
        self.slot_head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU())
        self.exists = nn.Linear(hidden_size, 1)
        self.shape = nn.Linear(hidden_size, num_shapes)
        self.colour = nn.Linear(hidden_size, num_colours)
        self.geometry = nn.Linear(hidden_size, 6)
        self.background = nn.Linear(hidden_size, num_colours)
        self.shape_embedding = nn.Embedding(num_shapes, map_embedding_dim)
        self.colour_embedding = nn.Embedding(num_colours, map_embedding_dim)
        self.background_embedding = nn.Embedding(num_colours, map_embedding_dim)

    @property
    def map_channels(self) -> int:
        return 3 + 3 * int(self.config["map_embedding_dim"])

    def mix_phrases(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) word embeddings -> the same with local phrase context added."""
        return embeddings + self.phrase(embeddings.transpose(1, 2)).transpose(1, 2)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 64, hidden) source tokens."""
        images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        b = images.shape[0]
        ys = (
            torch.linspace(-1, 1, IMAGE_SIZE, device=images.device)
            .view(1, 1, -1, 1)
            .expand(b, 1, -1, IMAGE_SIZE)
        )
        xs = (
            torch.linspace(-1, 1, IMAGE_SIZE, device=images.device)
            .view(1, 1, 1, -1)
            .expand(b, 1, IMAGE_SIZE, -1)
        )
        features = self.image_encoder(torch.cat([images, xs, ys], dim=1))
        return features.flatten(2).transpose(1, 2) + self.image_position

    def predict(self, states: torch.Tensor) -> LayoutPrediction:
        """Heads on the encoder's states at [OBJ1..3] and [BG]."""
        slots = self.slot_head(states[:, QUERY_OFFSET : QUERY_OFFSET + SLOTS])
        geometry = self.geometry(slots)
        return LayoutPrediction(
            exists_logit=self.exists(slots).squeeze(-1),
            shape_logits=self.shape(slots),
            colour_logits=self.colour(slots),
            geometry_mean=geometry[..., :3],
            geometry_log_std=geometry[..., 3:].clamp(-6, 1),
            background_logits=self.background(states[:, QUERY_OFFSET + SLOTS]),
        )

    def maps(self, layout: Layout, width: int, height: int) -> torch.Tensor:
        """The layout as (B, map_channels, height, width) conditioning maps for the denoiser."""
        device = layout.x.device
        short = min(width, height)
        u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        # offsets from each centre in radii: (B, SLOTS, H, W)
        radius = layout.radius.clamp(min=1e-3)[..., None, None]
        dx = (u.view(1, 1, 1, -1) - layout.x[..., None, None]) * (width / short) / radius
        dy = (v.view(1, 1, -1, 1) - layout.y[..., None, None]) * (height / short) / radius
        dx, dy = torch.broadcast_tensors(dx, dy)
        inside = ((dx**2 + dy**2) <= MASK_RADIUS**2).float() * layout.exists[..., None, None].float()
        shape = self.shape_embedding(layout.shape)  # (B, SLOTS, D)
        colour = self.colour_embedding(layout.colour)
        per_slot = torch.cat(
            [
                (dx * inside)[:, :, None],
                (dy * inside)[:, :, None],
                inside[:, :, None],
                shape[..., None, None] * inside[:, :, None],
                colour[..., None, None] * inside[:, :, None],
            ],
            dim=2,
        )  # (B, SLOTS, 3 + 2D, H, W)
        objects = per_slot.sum(dim=1)
        background = self.background_embedding(layout.background)[..., None, None].expand(
            -1, -1, height, width
        )
        return torch.cat([objects, background], dim=1)

    def loss(
        self, prediction: LayoutPrediction, target: Layout, match: bool = False
    ) -> dict[str, torch.Tensor]:
        """Supervised layout losses. With `match`, the target objects are first assigned to the slots
        that predict them best (set prediction, as in DETR), so the slots need no fixed order."""
        if match:
            target = matched(prediction, target)
        exists = target.exists.float()
        present = exists.bool()
        terms = {
            "exists": F.binary_cross_entropy_with_logits(prediction.exists_logit, exists),
            "background": F.cross_entropy(prediction.background_logits, target.background),
        }
        if present.any():
            terms["shape"] = F.cross_entropy(prediction.shape_logits[present], target.shape[present])
            terms["colour"] = F.cross_entropy(prediction.colour_logits[present], target.colour[present])
            geometry = torch.stack([target.x, target.y, target.radius], dim=-1)[present]
            mean = prediction.geometry_mean[present]
            log_std = prediction.geometry_log_std[present]
            # Gaussian negative log-likelihood, so the model says how sure it is (sampling uses it)
            terms["geometry"] = (log_std + 0.5 * ((geometry - mean) / log_std.exp()) ** 2).mean() + math.log(
                math.sqrt(2 * math.pi)
            )
        return terms


_PERMUTATIONS = torch.tensor(list(itertools.permutations(range(SLOTS))))


@torch.no_grad()
def matched(prediction: LayoutPrediction, target: Layout) -> Layout:
    """The target with its objects moved to the slot permutation of lowest cost (all SLOTS! tried)."""
    fields = ("exists", "shape", "colour", "x", "y", "radius")
    shape_logp = prediction.shape_logits.log_softmax(-1)
    colour_logp = prediction.colour_logits.log_softmax(-1)
    costs = []
    for permutation in _PERMUTATIONS:
        t = {name: getattr(target, name)[:, permutation] for name in fields}
        exists = t["exists"].float()
        cost = F.binary_cross_entropy_with_logits(prediction.exists_logit, exists, reduction="none")
        cost = cost - exists * shape_logp.gather(-1, t["shape"][..., None]).squeeze(-1)
        cost = cost - exists * colour_logp.gather(-1, t["colour"][..., None]).squeeze(-1)
        geometry = torch.stack([t["x"], t["y"], t["radius"]], dim=-1)
        distance = ((geometry - prediction.geometry_mean) / prediction.geometry_log_std.exp()).pow(2).sum(-1)
        costs.append((cost + exists * 0.5 * distance).sum(-1))
    best = _PERMUTATIONS[torch.stack(costs, dim=-1).argmin(-1)]  # (B, SLOTS)
    moved = {name: getattr(target, name).gather(1, best) for name in fields}
    return Layout(**moved, background=target.background)


SIGMA_DATA = 0.5
"""Standard deviation of the images (flat colours in [-1, 1]), for the preconditioning below."""


def preconditioning(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's preconditioning, for the flow x_t = (1 - t) x0 + t noise: (c_in, c_skip, c_out).

    The network sees the noisy image scaled to unit variance (c_in) and its output F is turned into
    the clean image as c_skip * x_t + c_out * F, so F's target has unit variance at every t: near
    t = 0 the image is mostly kept from x_t, near t = 1 it is drawn from the layout alone."""
    variance = (1 - t) ** 2 * SIGMA_DATA**2 + t**2
    return variance.rsqrt(), (1 - t) * SIGMA_DATA**2 / variance, t * SIGMA_DATA * variance.rsqrt()


def network_output(
    unet: torch.nn.Module, noisy: torch.Tensor, maps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """F(c_in x_t, maps, t): the denoiser's raw output at full resolution. `t` has shape (B,)."""
    c_in, _, _ = preconditioning(t.view(-1, 1, 1, 1))
    packed = F.pixel_unshuffle(torch.cat([c_in * noisy, maps], dim=1), UNSHUFFLE)
    return F.pixel_shuffle(unet(packed, t * 1000).sample, UNSHUFFLE)


def predict_clean(
    unet: torch.nn.Module, noisy: torch.Tensor, maps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The denoiser's estimate of the clean image."""
    _, c_skip, c_out = preconditioning(t.view(-1, 1, 1, 1))
    return c_skip * noisy + c_out * network_output(unet, noisy, maps, t)
