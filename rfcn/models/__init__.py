"""R-FCN detector: builders rfcn_resnet18/50/101 and the RFCN module."""

from rfcn.models.builders import rfcn_resnet18, rfcn_resnet50, rfcn_resnet101
from rfcn.models.rfcn import RFCN

__all__ = ["RFCN", "rfcn_resnet18", "rfcn_resnet50", "rfcn_resnet101"]
