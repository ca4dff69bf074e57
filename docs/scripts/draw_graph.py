"""Draw the graph of a small 2-3-2 MLP (docs/img/graph_example.png)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from scalegmn.weightgraph import NetworkSpec, random_network, to_graph


def main() -> None:
    """Draw nodes by layer with their bias, edges with their weight."""
    net = random_network(NetworkSpec.mlp([2, 3, 2], "relu"), rng=3)
    g = to_graph(net)
    lay = g.layout
    pos = {}
    for i in range(g.n_nodes):
        layer, p = int(lay.node_layer[i]), int(lay.node_pos[i])
        n = lay.widths[layer]
        pos[i] = (layer * 3.0, (n - 1) / 2 - p)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (s, t) in enumerate(g.edge_index.T):
        (x0, y0), (x1, y1) = pos[int(s)], pos[int(t)]
        w = float(g.edge_features[k, 0])
        ax.plot([x0, x1], [y0, y1], color="tab:blue" if w > 0 else "tab:red", lw=0.5 + 2 * min(abs(w), 1.5), alpha=0.7, zorder=1)
        ax.text(x0 + 0.62 * (x1 - x0), y0 + 0.62 * (y1 - y0), f"{w:+.2f}", fontsize=7, ha="center", va="center",
                bbox={"fc": "white", "ec": "none", "pad": 0.5}, zorder=2)
    names = {0: "input", 1: "hidden", 2: "output"}
    for i, (x, y) in pos.items():
        role = int(lay.node_role[i])
        ax.scatter([x], [y], s=1300, color=["#cfe8cf", "#ffe0b3", "#d6d6f5"][role], edgecolor="k", zorder=3)
        label = f"x{lay.node_pos[i]}" if role == 0 else f"b={g.node_features[i, 0]:+.2f}"
        ax.text(x, y, label, ha="center", va="center", fontsize=6.5, zorder=4)
    for layer in range(3):
        ax.text(layer * 3.0, -1.9, f"layer {layer} ({names[min(layer, 2) if layer < 2 else 2]})", ha="center", fontsize=9)
    ax.set_title("to_graph of a 2-3-2 ReLU MLP: node feature = bias, edge feature = weight (blue +, red -)", fontsize=9)
    ax.axis("off")
    ax.set_ylim(-2.1, 1.5)
    fig.tight_layout()
    out = Path(__file__).parents[1] / "img" / "graph_example.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
