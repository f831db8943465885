"""Models for MNIST: the S5 `Net` (593,200 parameters) and the compact S7 models.

Every model takes normalised (B, 1, 28, 28) images and returns (B, 10) log-probabilities,
and has `summary()` for the torchinfo table.
"""

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchinfo import summary as torchinfo_summary

INPUT_SIZE = (1, 1, 28, 28)  # one grey 28x28 digit, batch of 1


class MNISTModel(nn.Module):
    """Base class: the torchinfo summary every model here shares."""

    def summary(self, input_size=INPUT_SIZE, **kwargs):
        """Print and return the layer table (input/output shapes, params and their share)."""
        device = next(self.parameters()).device
        kwargs.setdefault("col_names", ("input_size", "output_size", "num_params", "params_percent"))
        kwargs.setdefault("col_width", 20)
        kwargs.setdefault("row_settings", ("var_names",))
        stats = torchinfo_summary(self, input_size=input_size, device=device, verbose=0, **kwargs)
        print(stats)  # torchinfo stays quiet in notebooks; print so every front end shows the table
        return stats


class Net(MNISTModel):
    """The original S5 CNN: 4 conv (3x3, no padding) + 2 FC, 593,200 parameters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3)
        self.conv4 = nn.Conv2d(128, 256, kernel_size=3)
        self.fc1 = nn.Linear(flat_features(self.features), 50)  # 256 * 4 * 4 = 4096 inputs
        self.fc2 = nn.Linear(50, 10)

    def features(self, x):
        x = F.relu(self.conv1(x))  # (B, 32, 26, 26)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 24, 24) -> (B, 64, 12, 12)
        x = F.relu(self.conv3(x))  # (B, 128, 10, 10)
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)  # (B, 256, 8, 8) -> (B, 256, 4, 4)
        return x

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)  # (B, 4096); flatten also copes with channels_last
        x = F.relu(self.fc1(x))  # (B, 50)
        return F.log_softmax(self.fc2(x), dim=1)  # (B, 10)


def flat_features(features, input_size=INPUT_SIZE):
    """Number of features `features` makes of one input: the size the first Linear needs."""
    with torch.no_grad():
        return features(torch.zeros(input_size)).flatten(1).shape[1]


# ---------------------------------------------------------------------------------------------------------------------
# S7: compact models, built step by step from a skeleton to a < 8,000-parameter network (the original S7 Model_1..9)
# ---------------------------------------------------------------------------------------------------------------------


def conv_block(c_in, c_out, kernel_size=3, padding=0, bn=False, dropout=0.0):
    """Conv -> ReLU -> [BatchNorm] -> [Dropout], the original S7 unit; the conv has no bias when BatchNorm follows."""
    layers = [nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=not bn), nn.ReLU()]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def transition(c_in, c_out):
    """1x1 conv squeezing c_in channels to c_out, then a 2x2 max-pool halving the size (the original S7 order)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, bias=False), nn.MaxPool2d(2))


def gap_head(c_in, n_classes=10):
    """Global average pooling then a 1x1 conv to the class scores: no large fully connected head."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, n_classes, kernel_size=1, bias=False))


def blocks(**layers):
    """An nn.Sequential whose layers keep their names (conv1, trans1, ...) in summary() and state_dict keys."""
    return nn.Sequential(OrderedDict(layers))


class S7Model(MNISTModel):
    """Base of the S7 models: `features` (conv blocks and a transition), then `head` down to (B, 10, 1, 1)."""

    def forward(self, x):
        x = self.head(self.features(x))  # (B, 10, 1, 1)
        return F.log_softmax(x.flatten(1), dim=1)  # (B, 10); flatten, not view: copes with channels_last


class S7Skeleton(S7Model):
    """Step 1: get the structure right (two conv blocks, transition, three conv blocks, conv head); no BN/dropout."""

    def __init__(self):
        super().__init__()
        self.features = blocks(
            conv1=conv_block(1, 16),  # (B, 16, 26, 26), receptive field 3
            conv2=conv_block(16, 32),  # (B, 32, 24, 24), RF 5
            trans1=transition(32, 16),  # (B, 16, 12, 12), RF 6
            conv3=conv_block(16, 16),  # (B, 16, 10, 10), RF 10
            conv4=conv_block(16, 32),  # (B, 32, 8, 8), RF 14
            conv5=conv_block(32, 32),  # (B, 32, 6, 6), RF 18
        )
        self.head = nn.Conv2d(32, 10, kernel_size=6)  # (B, 10, 1, 1): a 6x6 conv acting as the FC layer


class S7Small(S7Model):
    """Step 2: same structure with fewer channels, to fit the parameter budget (< 10k) before regularising."""

    def __init__(self):
        super().__init__()
        self.features = blocks(
            conv1=conv_block(1, 8),  # (B, 8, 26, 26)
            conv2=conv_block(8, 16),  # (B, 16, 24, 24)
            trans1=transition(16, 8),  # (B, 8, 12, 12)
            conv3=conv_block(8, 8),  # (B, 8, 10, 10)
            conv4=conv_block(8, 16),  # (B, 16, 8, 8)
            conv5=conv_block(16, 10),  # (B, 10, 6, 6)
        )
        self.head = nn.Conv2d(10, 10, kernel_size=6)  # (B, 10, 1, 1): still the largest layer, 3,610 params


class S7Regularised(S7Model):
    """Step 3: BatchNorm (faster, steadier training), dropout (less overfitting) and GAP in place of the big head."""

    def __init__(self, dropout=0.1):
        super().__init__()
        reg = {"bn": True, "dropout": dropout}
        self.features = blocks(
            conv1=conv_block(1, 10, **reg),  # (B, 10, 26, 26)
            conv2=conv_block(10, 16, **reg),  # (B, 16, 24, 24)
            trans1=transition(16, 10),  # (B, 10, 12, 12)
            conv3=conv_block(10, 16, **reg),  # (B, 16, 10, 10)
            conv4=conv_block(16, 16, **reg),  # (B, 16, 8, 8)
            conv5=conv_block(16, 16, **reg),  # (B, 16, 6, 6)
        )
        self.head = gap_head(16)  # (B, 16, 1, 1) -> (B, 10, 1, 1)


class S7Final(S7Model):
    """Step 4, the original S7 notebook's Model_9 (7,280 params): trimmed channels, a 16->8->16 squeeze at 6x6.

    Dropout is off by default: with augmentation, dropout makes this small model underfit (its train accuracy
    stays below its test accuracy) and cost accuracy on a validation split (docs/experiments.md).
    """

    def __init__(self, dropout=0.0):
        super().__init__()
        reg = {"bn": True, "dropout": dropout}
        self.features = blocks(
            conv1=conv_block(1, 8, **reg),  # (B, 8, 26, 26)
            conv2=conv_block(8, 16, **reg),  # (B, 16, 24, 24)
            trans1=transition(16, 10),  # (B, 10, 12, 12)
            conv3=conv_block(10, 14, **reg),  # (B, 14, 10, 10)
            conv4=conv_block(14, 16, **reg),  # (B, 16, 8, 8)
            conv5=conv_block(16, 8, **reg),  # (B, 8, 6, 6)
            conv6=conv_block(8, 16, padding=1, **reg),  # (B, 16, 6, 6)
        )
        self.head = gap_head(16)  # (B, 16, 1, 1) -> (B, 10, 1, 1)


S7_MODELS = {"skeleton": S7Skeleton, "small": S7Small, "regularised": S7Regularised, "final": S7Final}
MODELS = {"net": Net, **S7_MODELS}


def get_model(name):
    """A new instance of the model registered as `name` in MODELS."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name]()
