import pytest
import torch
from torch import nn

from reuse.study.training.models import build_model, conv_layer_names
from reuse.toolkit.gpu import prepare_model
from reuse.toolkit.metrics import PRIMARY_METRIC, evaluate
from reuse.toolkit.scoring import score_states
from reuse.toolkit.surgery import KERNEL_TYPES, prefix, select_keys, suffix, swap_state


def _trained_like(architecture, task, n_out, seed):
    """A model with non-trivial BN statistics (a few training-mode forwards)."""
    torch.manual_seed(seed)
    m = build_model(architecture, task, 1, n_out, width=2, depth=2).train()
    for _ in range(3):
        m(torch.rand(8, 1, 16, 16))
    return m.eval()


def _looped(model, states, x, y, task, n_out, metric, batch_size=512):
    out = []
    for s in states:
        model.load_state_dict(s)
        out.append(evaluate(model, x, y, task, n_out, batch_size, (metric,))[metric])
    return out


def _e1_states(model, target, source):
    layers = conv_layer_names(model)
    key_sets = [select_keys(model, layers, KERNEL_TYPES)]
    for k in range(1, len(layers) + 1):
        key_sets += [select_keys(model, prefix(layers, k), KERNEL_TYPES),
                     select_keys(model, suffix(layers, k), KERNEL_TYPES)]
    key_sets += [select_keys(model, None, (t,)) for t in ("conv_bias", "bn_running_mean")]
    return [swap_state(target, source, keys) for keys in key_sets]


class _ConvCount:
    """Counts convolutions actually computed."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = nn.Conv2d._conv_forward

        def counting(module, *args):
            self.n += 1
            return original(module, *args)
        monkeypatch.setattr(nn.Conv2d, "_conv_forward", counting)


@pytest.mark.parametrize("task", ["segmentation", "autoencoder"])
@pytest.mark.parametrize("architecture", ["unet", "pspnet", "plain"])
def test_shared_scoring_equals_the_loop_and_skips_shared_work(task, architecture, monkeypatch):
    n_out = 4 if task == "segmentation" else 1
    x = torch.rand(40, 1, 16, 16)
    y = (x[:, 0] * n_out).long().clamp(max=n_out - 1) if task == "segmentation" else x.clone()
    target, source = (_trained_like(architecture, task, n_out, s) for s in (0, 1))
    model = prepare_model(_trained_like(architecture, task, n_out, 0), torch.device("cpu"))
    states = _e1_states(model, target.state_dict(), source.state_dict())
    metric = PRIMARY_METRIC[task]
    looped = _looped(model, states, x, y, task, n_out, metric, batch_size=16)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    count = _ConvCount(monkeypatch)
    scores = score_states(model, states, x, y, task, n_out, (metric,), batch_size=16)
    assert [s[metric] for s in scores] == looped  # exact: replayed tensors are the same tensors
    assert len(set(looped)) > 1  # the states really differ
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())  # state restored
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    batches = 3
    assert count.n < 0.8 * batches * len(states) * n_conv  # suffix/prefix swaps share work


class _InPlaceAndOwnParameter(nn.Module):
    """A container with its own parameter, and an in-place op on a leaf's output."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        h = self.bn(self.conv1(x))
        h += 1.0  # modifies the BN output in place
        return self.conv2(h * self.scale)


def test_replay_survives_in_place_ops_and_sees_container_parameters():
    torch.manual_seed(0)
    base = _InPlaceAndOwnParameter().eval()
    states = []
    for scale, conv2_seed in [(1.0, 1), (1.0, 2), (2.0, 2), (2.0, 3)]:
        s = {k: v.clone() for k, v in base.state_dict().items()}
        s["scale"] = torch.tensor([scale])
        torch.manual_seed(conv2_seed)
        s["conv2.weight"] = torch.randn_like(s["conv2.weight"])
        states.append(s)
    x, y = torch.rand(12, 1, 8, 8), torch.randint(0, 2, (12, 8, 8))
    looped = _looped(base, states, x, y, "segmentation", 2, "miou")
    shared = [s["miou"] for s in score_states(base, states, x, y, "segmentation", 2, ("miou",))]
    assert shared == looped and len(set(looped)) == 4


class _Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.a(x) if x.mean() > 0 else self.b(x)


def test_input_dependent_call_order_is_refused():
    model = _Branching().eval()
    x = -3 * torch.ones(4, 1, 4, 4)
    x[:2] = 2.0  # the trial's first two samples take branch a, the whole batch takes b
    state = model.state_dict()
    with pytest.raises(RuntimeError, match="call order depends on its input"):
        score_states(model, [state, state], x, torch.zeros(4, 4, 4, dtype=torch.long),
                     "segmentation", 2, ("miou",))


def test_bad_states():
    model = build_model("unet", "segmentation", 1, 3, width=2, depth=1)
    assert score_states(model, [], torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 8), "segmentation", 3) == []
    with pytest.raises(ValueError, match="states lack model entries"):
        score_states(model, [{"x": torch.zeros(1)}], torch.rand(2, 1, 8, 8),
                     torch.zeros(2, 8, 8, dtype=torch.long), "segmentation", 3)
