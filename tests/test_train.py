import pytest
import torch
from diffusers import DDPMScheduler

from dpmlatent import train, zoo
from dpmlatent.classifier import DigitClassifier


def test_diffusion_loss_falls_and_ema_is_returned(tiny_unet):
    images = train.training_data("handwritten").images[:256]
    result = train.train_diffusion(tiny_unet, zoo.make_scheduler(), images, steps=60,
                                   batch_size=32, lr=2e-3, progress=False)
    losses = torch.tensor(result.losses)
    assert len(losses) == 60 and losses[-10:].mean() < 0.7 * losses[:10].mean()
    assert result.model is not tiny_unet and not result.model.training
    assert not any(p.requires_grad for p in result.model.parameters())


def test_training_is_reproducible(tiny_unet):
    import copy

    images = train.training_data("typeset-digits").images[:64]
    a = train.train_diffusion(copy.deepcopy(tiny_unet), zoo.make_scheduler(), images, steps=3,
                              batch_size=8, seed=5, progress=False)
    b = train.train_diffusion(copy.deepcopy(tiny_unet), zoo.make_scheduler(), images, steps=3,
                              batch_size=8, seed=5, progress=False)
    assert a.losses == b.losses
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_bad_training_arguments(tiny_unet):
    images = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="steps"):
        train.train_diffusion(tiny_unet, zoo.make_scheduler(), images, steps=0)
    with pytest.raises(ValueError, match="ema_decay"):
        train.train_diffusion(tiny_unet, zoo.make_scheduler(), images, steps=1, ema_decay=1.0)
    with pytest.raises(ValueError, match="prediction_type 'epsilon', 'sample' or 'v_prediction'"):
        train.train_diffusion(tiny_unet, DDPMScheduler(prediction_type="flow"), images, steps=1)
    with pytest.raises(ValueError, match="dataset"):
        train.training_data("cifar10")
    with pytest.raises(ValueError, match="batch_size"):
        train.train_classifier(DigitClassifier(), train.training_data("handwritten"), steps=1, batch_size=0)


def test_classifier_learns_quickly():
    data = train.training_data("digits-mixed")
    torch.manual_seed(0)
    result = train.train_classifier(DigitClassifier(), data, steps=150, progress=False)
    assert train.accuracy(result.model, train.training_data("handwritten", "test")) > 0.7


def test_toy_training_data_and_model_shapes():
    d = train.training_data("toy-moons")
    assert d.images.shape == (4000, 2, 1, 1)
    assert not torch.equal(train.training_data("toy-moons", "test").images[:100], d.images[:100])
    unet = zoo.make_unet(0, "toy-moons")
    with torch.no_grad():
        assert unet(d.images[:5], 10).sample.shape == (5, 2, 1, 1)


def test_classifier_architectures():
    from dpmlatent.classifier import ClassifierConfig

    x = torch.rand(3, 1, 8, 8) * 2 - 1
    for arch in ("cnn", "mlp"):
        model = DigitClassifier(ClassifierConfig(arch=arch, feature_dim=24)).eval()
        assert model(x).shape == (3, 10) and model.features(x).shape == (3, 24)
    with pytest.raises(ValueError, match="arch must be one of"):
        ClassifierConfig(arch="resnet")
    with pytest.raises(ValueError, match="shape"):
        DigitClassifier(ClassifierConfig(arch="mlp"))(torch.zeros(2, 64))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_diffusion_loss_targets_what_the_scheduler_predicts(prediction_type):
    """A network that always outputs 0 sees loss = mean(target^2): 0.25 for x0 = 0.5 everywhere
    ("sample"), about 1 for the noise, and E[abar eps^2 + (1 - abar) x0^2] for the velocity."""
    import types

    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        @property
        def device(self):
            return self.w.device

        def forward(self, x, t):
            return types.SimpleNamespace(sample=x * self.w)

    sched = DDPMScheduler.from_config(zoo.make_scheduler().config, prediction_type=prediction_type)
    images = torch.full((64, 1, 8, 8), 0.5)
    result = train.train_diffusion(Zero(), sched, images, steps=1, batch_size=4096, lr=0.0, progress=False)
    expected = {"epsilon": 1.0, "sample": 0.25,
                "v_prediction": (sched.alphas_cumprod * 1.0 + (1 - sched.alphas_cumprod) * 0.25).mean().item()}
    assert result.losses[0] == pytest.approx(expected[prediction_type], rel=0.02 if prediction_type != "sample" else 1e-6)


def test_fit_names_an_unlogged_record():
    from dpmlatent.fitting import fit

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    losses, history = fit(lambda: ((w ** 2).sum(), {"norm": float(w.detach().norm())}), opt, steps=3, record="norm",
                          progress=False)
    assert len(losses) == 3 and losses == history["norm"] and losses[1] < losses[0]
    with pytest.raises(ValueError, match="record must be 'loss' or a name that loss_fn logs"):
        fit(lambda: (w ** 2).sum(), opt, steps=1, record="kl", progress=False)
