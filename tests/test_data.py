import gzip
import shutil

import pytest
import torch
from PIL import Image

import mnist
import training
from conftest import make_digits, write_idx
from mnist import MEAN, STD, Data, MNISTDataError, classic_loaders, mnist_dataset
from recipes import Recipe

CPU = torch.device("cpu")


def test_local_folder_of_uncompressed_files_goes_through_torchvision(mnist_dir, data_root):
    train = mnist_dataset(True, Data(mnist_dir=mnist_dir, root=data_root))
    test = mnist_dataset(False, Data(mnist_dir=mnist_dir, root=data_root))
    images, labels = make_digits(96, 0)
    assert len(train) == 96 and len(test) == 48
    assert torch.equal(train.data, images) and torch.equal(train.targets, labels.long())
    assert (data_root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_mnist_dir_comes_from_the_environment(mnist_dir, data_root, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    assert len(mnist_dataset(False, Data(root=data_root))) == 48


def test_a_torchvision_root_works_as_mnist_dir(mnist_dir, data_root, tmp_path):
    tv_root = tmp_path / "tv"
    shutil.copytree(mnist_dir, tv_root / "MNIST" / "raw")
    assert len(mnist_dataset(True, Data(mnist_dir=tv_root, root=data_root))) == 96


def test_original_gz_files_offline(real_mnist_dir, data_root, offline):
    train = mnist_dataset(True, Data(mnist_dir=real_mnist_dir, root=data_root))
    test = mnist_dataset(False, Data(mnist_dir=real_mnist_dir, root=data_root))
    assert train.data.shape == (60_000, 28, 28) and len(test) == 10_000
    assert train.targets[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels


def test_no_data_and_no_internet_gives_one_clear_message(data_root, offline):
    with pytest.raises(MNISTDataError, match="MNIST_DIR") as info:
        mnist_dataset(True, Data(root=data_root))
    assert info.value.__suppress_context__  # no chained traceback behind it


def test_mnist_dir_that_is_not_a_folder(tmp_path, data_root):
    with pytest.raises(MNISTDataError, match="is not a folder"):
        mnist_dataset(True, Data(mnist_dir=tmp_path / "nowhere", root=data_root))


def test_mnist_dir_missing_a_file_names_it(mnist_dir, data_root):
    (mnist_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(MNISTDataError, match="t10k-labels-idx1-ubyte"):
        mnist_dataset(True, Data(mnist_dir=mnist_dir, root=data_root))


def test_corrupt_gz_names_the_file(mnist_dir, data_root):
    bad = mnist_dir / "train-images-idx3-ubyte"
    gz = write_idx(bad, make_digits(96, 0)[0], compress=True)
    bad.unlink()
    with pytest.raises(MNISTDataError, match=r"train-images-idx3-ubyte\.gz is corrupt"):
        mnist_dataset(True, Data(mnist_dir=mnist_dir, root=data_root))
    assert gzip.decompress(gz.read_bytes())  # the file itself is untouched


def test_truncated_file_names_the_file(mnist_dir, data_root):
    path = mnist_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MNISTDataError, match="train-images-idx3-ubyte is not a valid MNIST idx file"):
        mnist_dataset(True, Data(mnist_dir=mnist_dir, root=data_root))


def test_wrong_magic_names_the_file(mnist_dir, data_root):
    path = mnist_dir / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x56\x78" + path.read_bytes()[4:])
    with pytest.raises(MNISTDataError, match="t10k-labels-idx1-ubyte is not a valid"):
        mnist_dataset(False, Data(mnist_dir=mnist_dir, root=data_root))


def test_broken_file_already_in_the_data_root_is_named(mnist_dir, data_root):
    mnist_dataset(True, Data(mnist_dir=mnist_dir, root=data_root))
    staged = data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    staged.write_bytes(staged.read_bytes()[:100])
    with pytest.raises(MNISTDataError, match="t10k-images-idx3-ubyte is not a valid"):
        mnist_dataset(False, Data(root=data_root))


def test_transforms_shape_and_normalisation():
    black_and_white = Image.fromarray(torch.tensor([[0] * 28] * 14 + [[255] * 28] * 14, dtype=torch.uint8).numpy())
    x = mnist.test_transforms()(black_and_white)
    assert x.shape == (1, 28, 28)
    torch.testing.assert_close(x[0, 0, 0].item(), -MEAN / STD)
    torch.testing.assert_close(x[0, -1, 0].item(), (1 - MEAN) / STD)
    y = mnist.train_transforms(Recipe())(black_and_white)
    assert y.shape == (1, 28, 28) and y.min() >= -MEAN / STD - 1e-6 and y.max() <= (1 - MEAN) / STD + 1e-6


def test_classic_loaders(mnist_dir, data_root):
    train_loader, test_loader = classic_loaders(Recipe(batch_size=32), Data(mnist_dir, data_root), 0, CPU)
    x, y = next(iter(train_loader))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (32,)
    assert len(train_loader) == 3 and len(test_loader) == 1  # test batches of Data.test_batch_size
    labels = torch.cat([y for _, y in test_loader])
    assert torch.equal(labels, make_digits(48, 1)[1].long())  # test set in file order


def test_training_order_is_seeded(mnist_dir, data_root):
    def first_labels(seed):
        loader, _ = classic_loaders(Recipe(batch_size=96), Data(mnist_dir, data_root), seed, CPU)
        return next(iter(loader))[1]

    assert torch.equal(first_labels(3), first_labels(3))
    assert not torch.equal(first_labels(3), first_labels(4))


def test_subsets_keep_the_first_images(mnist_dir, data_root):
    data = Data(mnist_dir, data_root, train_size=20, test_size=10)
    train_loader, test_loader = classic_loaders(Recipe(batch_size=8), data, 0, CPU)
    assert len(train_loader.dataset) == 20 and len(test_loader.dataset) == 10


def test_a_new_mnist_dir_replaces_the_staged_files(mnist_dir, data_root, tmp_path):
    assert len(mnist_dataset(False, Data(mnist_dir=mnist_dir, root=data_root))) == 48
    other = tmp_path / "other"
    other.mkdir()
    for prefix, n in (("train", 10), ("t10k", 5)):
        images, labels = make_digits(n, 7)
        write_idx(other / f"{prefix}-images-idx3-ubyte", images)
        write_idx(other / f"{prefix}-labels-idx1-ubyte", labels)
    assert len(mnist_dataset(False, Data(mnist_dir=other, root=data_root))) == 5
    assert len(mnist_dataset(False, Data(root=data_root))) == 5  # without MNIST_DIR: what is staged


@pytest.mark.parametrize("pipeline", ["fast", "classic"])
def test_a_validation_split_holds_out_the_last_training_images(mnist_dir, data_root, pipeline):
    data = Data(mnist_dir, data_root, valid_size=16)
    train_loader, eval_loader = mnist.make_loaders(Recipe(pipeline=pipeline, batch_size=8), data, 0, CPU)
    _, labels = make_digits(96, 0)
    assert len(train_loader.dataset) == 80 and len(eval_loader.dataset) == 16
    assert torch.equal(torch.cat([y for _, y in eval_loader]), labels[80:].long())  # in order, not augmented
    held_out = torch.cat([x for x, _ in eval_loader])
    assert torch.allclose(held_out[:, 0], (make_digits(96, 0)[0][80:].float() / 255 - MEAN) / STD, atol=1e-6)
    sizes = Data(mnist_dir, data_root, valid_size=16, train_size=10, test_size=4)
    train_loader, eval_loader = mnist.make_loaders(Recipe(pipeline=pipeline, batch_size=8), sizes, 0, CPU)
    assert len(train_loader.dataset) == 10 and len(eval_loader.dataset) == 4


def test_the_run_says_what_it_evaluates_on(mnist_dir, data_root, capsys):
    t = training.prepare("final", Recipe(epochs=1, batch_size=32), Data(mnist_dir, data_root, valid_size=16), CPU)
    training.test(t)
    assert capsys.readouterr().out.startswith("Validation set: average loss")


@pytest.mark.parametrize("field, value, message", [("valid_size", 60_000, "must leave training images"),
                                                   ("train_size", -1, "train_size must be >= 0")])
def test_bad_sizes_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        Data(**{field: value})
