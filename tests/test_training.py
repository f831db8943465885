import torch
from torch.utils.data import DataLoader, TensorDataset

import utils
from conftest import make_digits
from model import Net
from utils import (
    MEAN,
    STD,
    confusion_matrix,
    fit,
    get_loss,
    get_optimizer,
    get_scheduler,
    new_history,
    predictions,
    seed_everything,
)

CPU = torch.device("cpu")


def tiny_loader(n=64, batch_size=32, seed=0):
    """Synthetic digits (the label is where a bright bar sits), normalised like MNIST."""
    images, labels = make_digits(n, seed)
    x = (images.float().unsqueeze(1) / 255 - MEAN) / STD
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, labels.long()), batch_size=batch_size, shuffle=True, generator=g)


def test_a_few_steps_lower_the_loss():
    seed_everything(0)
    model, loader = Net(), tiny_loader(64, 64)
    optimizer, criterion = get_optimizer(model, lr=0.05), get_loss()
    before, _ = utils.test(model, CPU, loader, criterion)
    for _ in range(15):
        utils.train(model, CPU, loader, optimizer, criterion)
    after, _ = utils.test(model, CPU, loader, criterion)
    assert after < 0.5 * before


def test_fit_returns_one_history_row_per_epoch_and_steps_the_scheduler():
    seed_everything(0)
    model = Net()
    optimizer = get_optimizer(model, lr=0.01)
    scheduler = get_scheduler(optimizer, step_size=1, gamma=0.5)
    history = fit(model, CPU, tiny_loader(), tiny_loader(32), optimizer, scheduler, get_loss(), epochs=3)
    assert set(history) == set(new_history())
    assert all(len(values) == 3 for values in history.values())
    assert history["lr"] == [0.01, 0.005, 0.0025]
    assert all(0 <= acc <= 100 for acc in history["train_acc"] + history["test_acc"])


def test_fit_continues_a_history():
    seed_everything(0)
    model = Net()
    optimizer = get_optimizer(model)
    history = fit(model, CPU, tiny_loader(), tiny_loader(32), optimizer, None, get_loss(), epochs=1)
    history = fit(model, CPU, tiny_loader(), tiny_loader(32), optimizer, None, get_loss(), epochs=2, history=history)
    assert len(history["train_loss"]) == 2


def run_once(seed):
    seed_everything(seed)
    model = Net()
    history = fit(model, CPU, tiny_loader(seed=seed), tiny_loader(32), get_optimizer(model), None, get_loss(), 1)
    return history, model.fc2.weight.detach().clone()


def test_same_seed_same_result():
    (h1, w1), (h2, w2), (_, w3) = run_once(1), run_once(1), run_once(2)
    assert h1["train_loss"] == h2["train_loss"] and torch.equal(w1, w2)
    assert not torch.equal(w1, w3)


def test_predictions_and_confusion_matrix():
    images, targets, preds = predictions(Net(), CPU, tiny_loader(40, 16))
    assert images.shape == (40, 1, 28, 28) and targets.shape == preds.shape == (40,)
    cm = confusion_matrix(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0]), num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
