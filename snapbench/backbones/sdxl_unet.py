"""SDXL-class UNets (diffusers `UNet2DConditionModel` with `addition_embed_type="text_time"`), and the
SnapGen-style UNets built on them: the second `Backbone`.

The structure is the SD UNet's, so the family reuses `UNetBackbone` and differs where SDXL does:
- one more auxiliary slot, `TextTimeEmbedding` (`add_embedding`): the pooled text embedding and the six
  size / crop ids, embedded and added to the time embedding (`specs/layout.py`, `model/units.py`);
- two more inputs after the context, `text_embeds` [B, 1280] and `time_ids` [B, 6] (`blocks/cut.py:
  example_inputs`, which the elastic UNet takes positionally);
- deeper transformer blocks (2 and 10 layers): one CA block each, the depth in its signature (`layers=`);
- block variants (`model/variants.py`) that arch specs of this family use (SnapGen); the SD family can
  use them too, since they live in the shared elastic UNet.
"""

from __future__ import annotations

from collections.abc import Mapping

from snapbench.backbones.unet import UNetBackbone
from snapbench.specs.layout import text_embeds_dim


class SDXLUNetBackbone(UNetBackbone):
    name = "sdxl-unet"

    def accepts(self, config: Mapping[str, object]) -> bool:
        return super().accepts(config) and config.get("addition_embed_type") == "text_time"

    def conditioning_width(self, config: Mapping[str, object]) -> int | None:
        """The pooled text embedding's width (SDXL: 1280)."""
        return text_embeds_dim(config)
