import pytest
import torch
import torch.nn.functional as F

from model import MODELS, S7_MODELS, Net, S7Final, S7Regularised, S7Skeleton, S7Small, get_model

PARAMS = {S7Skeleton: 33_050, S7Small: 8_188, S7Regularised: 8_046, S7Final: 7_280}
S7_CLASSES = list(S7_MODELS.values())


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cls", S7_CLASSES, ids=list(S7_MODELS))
def test_parameter_count(cls):
    assert n_params(cls()) == PARAMS[cls]


def test_final_model_is_the_seeds_model_9_and_under_the_budget():
    assert n_params(S7Final()) == 7_280 < 8_000
    assert n_params(S7Small()) < 10_000 and n_params(S7Regularised()) < 10_000


def test_final_model_has_batchnorm_dropout_and_a_gap_head():
    model = S7Final(dropout=0.05)
    kinds = {type(m) for m in model.modules()}
    assert {torch.nn.BatchNorm2d, torch.nn.Dropout, torch.nn.AdaptiveAvgPool2d} <= kinds
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert all(m.p == 0.05 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert not any(isinstance(m, torch.nn.Dropout) for m in S7Final().modules())  # off by default


@pytest.mark.parametrize("cls", [S7Skeleton, S7Small], ids=["skeleton", "small"])
def test_early_steps_have_no_batchnorm_or_dropout(cls):
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)) for m in cls().modules())


@pytest.mark.parametrize("cls", S7_CLASSES, ids=list(S7_MODELS))
def test_output_is_log_probabilities_of_ten_classes(cls):
    torch.manual_seed(0)
    out = cls().eval()(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("cls", S7_CLASSES, ids=list(S7_MODELS))
def test_channels_last_gives_the_same_output(cls):
    torch.manual_seed(0)
    model, x = cls().eval(), torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("cls", S7_CLASSES, ids=list(S7_MODELS))
def test_one_sgd_step_changes_every_parameter(cls):
    torch.manual_seed(0)
    model = cls().train()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    optimizer.zero_grad()
    loss = F.nll_loss(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for (name, p), old in zip(model.named_parameters(), before):
        assert torch.isfinite(p).all(), name
        assert not torch.equal(p, old), f"{name} did not change"


@pytest.mark.parametrize("cls", S7_CLASSES, ids=list(S7_MODELS))
def test_summary_prints_the_layer_table(cls, capsys):
    stats = cls().summary()
    table = capsys.readouterr().out
    assert stats.total_params == PARAMS[cls]
    for text in ("Total params", f"{PARAMS[cls]:,}", "Output Shape", "conv1", "trans1", "head", "[1, 10]"):
        assert text in table


def test_final_summary_matches_the_seeds_layer_shapes(capsys):
    S7Final().summary()
    table = capsys.readouterr().out
    for shape, params in (
        ("[1, 8, 26, 26]", "72"),
        ("[1, 16, 24, 24]", "1,152"),
        ("[1, 10, 24, 24]", "160"),
        ("[1, 14, 10, 10]", "1,260"),
        ("[1, 16, 8, 8]", "2,016"),
        ("[1, 8, 6, 6]", "1,152"),
        ("[1, 16, 1, 1]", "--"),
        ("[1, 10, 1, 1]", "160"),
    ):
        assert any(shape in line and params in line for line in table.splitlines()), (shape, params)


def test_registry_holds_net_and_the_s7_models():
    assert list(MODELS) == ["net", "skeleton", "small", "regularised", "final"]
    assert MODELS["net"] is Net
    assert all(MODELS[name] is cls for name, cls in S7_MODELS.items())


@pytest.mark.parametrize("name", list(MODELS))
def test_get_model_returns_a_new_instance(name):
    model = get_model(name)
    assert type(model) is MODELS[name]
    assert model is not get_model(name)


def test_get_model_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet': choose one of net, skeleton, small"):
        get_model("resnet")
