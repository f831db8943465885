import torch

from model import Net, flat_features


def test_net_has_the_seeds_parameter_count():
    assert sum(p.numel() for p in Net().parameters()) == 593_200


def test_first_linear_size_is_derived_from_the_conv_stack():
    net = Net()
    assert flat_features(net.features) == 256 * 4 * 4 == net.fc1.in_features


def test_output_is_log_probabilities_of_ten_classes():
    out = Net()(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(5))


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    net, x = Net(), torch.randn(4, 1, 28, 28)
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.to(memory_format=torch.channels_last)), expected)


def test_summary_prints_the_layer_table(capsys):
    stats = Net().summary()
    table = capsys.readouterr().out
    assert stats.total_params == 593_200
    for text in ("Input Shape", "Output Shape", "Param #", "Param %", "Total params: 593,200",
                 "conv1", "[1, 256, 8, 8]", "fc1", "204,850", "34.53%"):
        assert text in table
