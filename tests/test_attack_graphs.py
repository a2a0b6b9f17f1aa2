"""The CUDA-graph cache of fastmix.attacks.graphs (issue 12 item 4).

On the CPU the capture itself is stubbed (a stand-in that runs the attack once and replays
its outputs), so the cache logic runs: one graph per attacked module, settings and input
layout; the normalisation wrapper is reused, so repeated calls replay instead of
re-capturing; nothing keeps a dead model's graphs; clearing frees them. The same is checked
with real CUDA graphs on a GPU.
"""
import gc
import weakref

import pytest
import torch
from torch import nn

import fastmix.attacks as A
from fastmix.attacks import graphs
from _single_thread import _single_thread  # noqa: F401  (autouse fixture)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.head(self.conv(x))


class StubCapture:
    """Stands in for graphs._Captured: runs the attack once at 'capture' and replays its
    outputs; records every instance (weakly) so the test can see which are freed."""
    made: list = []

    def __init__(self, fn, tensors, model, check):
        self.outputs = fn(*[t.clone() for t in tensors], check=check)
        StubCapture.made.append(weakref.ref(self))

    def __call__(self, tensors):
        return tuple(None if o is None else o.clone() for o in self.outputs)

    @classmethod
    def alive(cls) -> int:
        gc.collect()
        return sum(r() is not None for r in cls.made)


@pytest.fixture
def stub(monkeypatch):
    A.clear_graphs()
    StubCapture.made = []
    monkeypatch.setattr(graphs, "_Captured", StubCapture)
    monkeypatch.setattr(graphs, "capturable", lambda x: True)
    yield StubCapture
    A.clear_graphs()


MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def _data(b=4):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, 6, 6, generator=g)
    return x, torch.randint(0, 5, (b,), generator=g)


def _normalised(x):
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x - m) / s


def test_repeated_calls_with_a_normalisation_build_one_graph(stub):
    torch.manual_seed(0)
    net = Net().eval()
    atk = A.PGD(net, eps=0.1, alpha=0.02, steps=3, random_start=False, cuda_graph=True)
    atk.set_normalization_used(MEAN, STD)
    x, y = _data()
    eager = A.PGD(net, eps=0.1, alpha=0.02, steps=3, random_start=False)
    eager.set_normalization_used(MEAN, STD)
    want = eager(_normalised(x), y)
    outs = [atk(_normalised(x), y) for _ in range(4)]
    assert len(stub.made) == 1 and len(graphs.GRAPHS) == 1  # before the fix: one per call
    assert atk._net(x.device) is atk._net(x.device)  # one wrapper, reused
    for o in outs:
        torch.testing.assert_close(o, want)
    atk(_normalised(torch.cat([x, x])), torch.cat([y, y]))  # a new shape: a second graph
    assert len(stub.made) == 2 and graphs.GRAPHS.count(atk._net(x.device)) == 2


def _two_graphs():
    """A model attacked through a normalisation wrapper and bare: two keys, one graph each."""
    net = Net().eval()
    atk = A.PGD(net, eps=0.1, alpha=0.02, steps=2, cuda_graph=True)
    atk.set_normalization_used(MEAN, STD)
    x, y = _data()
    atk(_normalised(x), y)
    A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=2, cuda_graph=True)  # the bare model: its own key
    return net, atk


def test_clearing_frees_the_graphs(stub):
    net, atk = _two_graphs()
    assert len(graphs.GRAPHS) == 2 and stub.alive() == 2
    A.clear_graphs(net)  # one module's graphs only
    assert len(graphs.GRAPHS) == 1 and stub.alive() == 1
    A.clear_graphs()
    assert len(graphs.GRAPHS) == 0 and stub.alive() == 0


def test_a_dead_model_leaves_no_graph_behind(stub):
    net, atk = _two_graphs()
    assert stub.alive() == 2
    probe = weakref.ref(net)
    del atk, net
    gc.collect()
    assert probe() is None  # the cache kept no model alive
    assert len(graphs.GRAPHS) == 0 and stub.alive() == 0


def test_new_weight_storage_drops_the_old_graphs(stub):
    net = Net().eval()
    x, y = _data()
    kw = dict(eps=0.1, alpha=0.02, steps=2, cuda_graph=True)
    A.pgd(net, x, y, **kw)
    A.pgd(net, x, y, **kw)
    assert len(stub.made) == 1
    with torch.no_grad():
        for p in net.parameters():
            p.data = p.data.clone()  # what .to()/.cuda() does: same module, new storage
    A.pgd(net, x, y, **kw)
    assert len(stub.made) == 2 and graphs.GRAPHS.count(net) == 1 and stub.alive() == 1


def test_callables_are_matched_by_identity(stub):
    net = Net().eval()
    x, y = _data()
    kw = dict(eps=0.1, alpha=0.02, steps=2, cuda_graph=True)

    def ce(out, t):
        return nn.functional.cross_entropy(out, t, reduction="none")

    def margin(out, t):
        return -out.gather(1, t[:, None]).squeeze(1)

    A.pgd(net, x, y, loss=ce, **kw)
    A.pgd(net, x, y, loss=ce, **kw)
    assert len(stub.made) == 1
    A.pgd(net, x, y, loss=margin, **kw)
    assert len(stub.made) == 2
    entry = next(iter(graphs.GRAPHS._modules[net].entries.values()))
    assert entry.matches([ce]) and not entry.matches([margin])


def test_least_recently_used_graph_is_evicted_and_freed(stub):
    cache = graphs.GraphCache(size=2)
    net = Net()
    x = torch.zeros(1)
    for n in (1, 2, 3, 1):
        cache(net, ("k", n), lambda x, check: (x + n,), [x], False)
    assert cache.count(net) == 2 and len(stub.made) == 4  # 1 was evicted, then re-captured
    assert stub.alive() == 2
    with pytest.raises(ValueError, match="size"):
        graphs.GraphCache(size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_with_a_normalisation_builds_one_graph_on_gpu():
    A.clear_graphs()
    torch.manual_seed(0)
    net = Net().cuda().eval()
    x, y = (t.cuda() for t in _data())
    atk = A.PGD(net, eps=0.1, alpha=0.02, steps=3, random_start=False, cuda_graph=True)
    atk.set_normalization_used(MEAN, STD)
    eager = A.PGD(net, eps=0.1, alpha=0.02, steps=3, random_start=False)
    eager.set_normalization_used(MEAN, STD)
    xn = _normalised(x.cpu()).cuda()
    want = eager(xn, y)
    for _ in range(3):
        torch.testing.assert_close(atk(xn, y), want)
    assert len(graphs.GRAPHS) == 1
    A.clear_graphs()
    assert len(graphs.GRAPHS) == 0
