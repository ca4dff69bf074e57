"""End to end on a real network: train a small MLP on scikit-learn's digits, turn it into
its graph and back, and check that nothing was lost.

Run: python examples/convert_network.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from scalegmn.weightgraph import Network, NetworkSpec, forward, from_graph, to_graph


def main() -> None:
    """Train, convert, decode, compare."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    with torch.no_grad():
        torch_out = model(torch.from_numpy(xte)).numpy()

    spec = NetworkSpec.mlp([64, 32, 10], activation="relu")
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    net = Network(spec, [m.weight.detach().numpy() for m in linears],
                  [m.bias.detach().numpy() for m in linears])
    graph = to_graph(net)
    back = from_graph(graph)
    ours = forward(back, xte)

    print(f"network          {net}")
    print(f"graph            {graph.n_nodes} nodes, {graph.n_edges} edges, "
          f"node features {graph.node_features.shape}, edge features {graph.edge_features.shape}")
    print(f"round trip exact {back.equals(net)}")
    print(f"max |numpy - torch| on the test set: {np.abs(ours - torch_out).max():.2e}")
    print(f"test accuracy    torch {np.mean(torch_out.argmax(1) == yte):.3f}, "
          f"decoded network {np.mean(ours.argmax(1) == yte):.3f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    if not back.equals(net) or np.abs(ours - torch_out).max() > 1e-4:
        raise SystemExit("conversion was not exact")


if __name__ == "__main__":
    main()
