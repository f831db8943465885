import pytest
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


def test_schedulers_by_name():
    optimizer = get_optimizer(Net(), lr=0.1)
    assert isinstance(get_scheduler(optimizer, "step"), torch.optim.lr_scheduler.StepLR)
    assert get_scheduler(optimizer, "none") is None
    onecycle = get_scheduler(optimizer, "onecycle", epochs=2, steps_per_epoch=5)
    assert onecycle.total_steps == 10 and optimizer.param_groups[0]["lr"] < 0.1  # starts low, peaks at 0.1
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        get_scheduler(optimizer, "cosine")


def test_onecycle_is_stepped_per_batch_by_fit():
    seed_everything(0)
    model = Net()
    optimizer = get_optimizer(model, lr=0.05)
    scheduler = get_scheduler(optimizer, "onecycle", epochs=2, steps_per_epoch=2)
    fit(model, CPU, tiny_loader(64, 32), tiny_loader(32), optimizer, scheduler, get_loss(), epochs=2)
    assert scheduler.last_epoch == 4  # 2 epochs x 2 batches, and no error for stepping past the end


def test_plateau_scheduler_watches_the_test_loss(monkeypatch):
    """ReduceLROnPlateau cuts the rate once the test loss has not improved for `step_size` epochs."""
    seed_everything(0)
    model = Net()
    optimizer = get_optimizer(model, lr=0.01)
    scheduler = get_scheduler(optimizer, "plateau", step_size=1, gamma=0.5)
    test_losses = iter([1.0, 0.5, 0.6, 0.7, 0.8])
    monkeypatch.setattr(utils, "test", lambda *args, **kwargs: (next(test_losses), 50.0))
    history = fit(model, CPU, tiny_loader(32, 32), tiny_loader(32), optimizer, scheduler, get_loss(), epochs=5)
    assert history["lr"] == [0.01, 0.01, 0.01, 0.01, 0.005]  # 2 epochs worse than the best > patience 1


def test_label_smoothing_loss_works_on_log_probabilities():
    log_probs = torch.log_softmax(torch.randn(8, 10), dim=1)
    target = torch.randint(0, 10, (8,))
    torch.testing.assert_close(get_loss(0.0)(log_probs, target), torch.nn.CrossEntropyLoss()(log_probs, target))
    assert get_loss(0.1)(log_probs, target) != get_loss(0.0)(log_probs, target)


def test_ctrl_c_keeps_the_history_and_the_checkpoint(monkeypatch, tmp_path, capsys):
    seed_everything(0)
    model = Net()
    optimizer = get_optimizer(model)
    real_train, calls = utils.train, []

    def train_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(utils, "train", train_then_ctrl_c)
    loader = tiny_loader()
    history = fit(model, CPU, loader, tiny_loader(32), optimizer, None, get_loss(), 5, checkpoint=tmp_path / "c.pt")
    assert len(history["train_loss"]) == 1 and "kept the history of 1 finished epoch" in capsys.readouterr().out
    restored, _ = utils.load_checkpoint(tmp_path / "c.pt", Net())
    assert restored["train_loss"] == history["train_loss"]


def test_diverging_loss_raises_with_the_history():
    seed_everything(0)
    model = Net()
    optimizer = get_optimizer(model, lr=1e6)  # far too high: the loss overflows within a few steps
    with pytest.raises(utils.TrainingDiverged, match="lower the learning rate") as info:
        fit(model, CPU, tiny_loader(128, 16), tiny_loader(32), optimizer, None, get_loss(), epochs=3)
    assert len(info.value.history["train_loss"]) < 3


def test_checkpoint_errors(tmp_path):
    with pytest.raises(utils.CheckpointError, match="no checkpoint at"):
        utils.read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(utils.CheckpointError, match="not a readable checkpoint"):
        utils.read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(utils.CheckpointError, match="not a checkpoint written by this repo"):
        utils.read_checkpoint(tmp_path / "other.pt")


def test_train_model_and_results_row():
    from model import S7Final

    seed_everything(0)
    model = S7Final()
    recipe = utils.Recipe(epochs=2, batch_size=32, lr=0.05, schedule="onecycle")
    monkey_loaders = (tiny_loader(64, 32), tiny_loader(32))
    original = utils.make_loaders
    utils.make_loaders = lambda *args, **kwargs: monkey_loaders
    try:
        history = utils.train_model(model, recipe, seed=0)
    finally:
        utils.make_loaders = original
    row = utils.results_row("final", model, history)
    assert row["params"] == 7280 and row["epochs"] == 2 and row["final_test"] == history["test_acc"][-1]
    assert row["last_3_at_target"] == all(acc >= 99.4 for acc in history["test_acc"])


def test_log_interval_prints_every_n_batches_instead_of_a_bar(capsys):
    model, loader = Net(), tiny_loader(64, 8)  # 8 batches
    utils.train(model, CPU, loader, get_optimizer(model), get_loss(), log_interval=3)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train [")]
    assert [line.split("]")[0] for line in lines] == ["train [24/64", "train [48/64"]
