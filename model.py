"""Models for MNIST: the S5 `Net` (593,200 parameters) and the compact S7 models.

Every model takes normalised (B, 1, 28, 28) images and returns (B, 10) log-probabilities,
and has `summary()` for the torchinfo table.
"""

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
    """The seeds' S5 CNN: 4 conv (3x3, no padding) + 2 FC, 593,200 parameters."""

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
