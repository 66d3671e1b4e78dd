#!/usr/bin/python3
"""The peer of rqvae_bench: the seed pipeline's RQ-VAE (LC-Rec / LETTER `index/models`) in
PyTorch, timed on one CPU thread over the same .npy embeddings.

    /usr/bin/python3 bench/rqvae_torch_peer.py --data=Beauty --levels=3 --steps=120

The model is written out here as the seed's files define it (we do not ship LC-Rec):
  - MLPLayers: per layer Dropout, Linear, [BatchNorm1d], ReLU (no BN or activation after the
    last Linear), Xavier-normal weights and zero biases;
  - VectorQuantizer: an nn.Embedding codebook, squared distances
    |x|^2 + |e|^2 - 2 x e^T, argmin codes, or at a level with sk_epsilon > 0 the distances
    centred into [-1, 1] (center_distance_for_constraint), in double, through
    sinkhorn_algorithm (exp(-d / epsilon), sk_iters alternating normalisations) and argmax;
    loss = codebook mse(x_q, sg(x)) + beta * commitment mse(sg(x_q), x); straight-through
    x + sg(x_q - x);
  - ResidualVectorQuantizer: residual = residual - x_res level after level, loss = mean over
    levels;
  - RQVAE: loss = mse(decoder(x_q), x) + quant_loss_weight * rq_loss; AdamW (weight decay
    1e-4), linear warm-up then constant learning rate (the seed's default scheduler).
Codebooks start from k-means on the first batch (the seed calls sklearn's KMeans with
max_iter 10; sklearn is not in Debian's python3-torch stack, so Lloyd's algorithm in torch,
10 iterations, seeded from random rows). That initialisation and the first (warm-up) step are
not timed. Every timed step is a full forward, backward and optimizer step on a batch from a
shuffled pass over the data, the last batch of a pass partial as the seed's DataLoader gives it.

Prints ms per step, ms per 1024 items, and the share of the step spent in sinkhorn_algorithm
(wall clock), and the process CPU time per step (the figure to compare on a loaded machine).
Needs Debian's python3-torch (`apt-get install python3-torch`); nothing in the build or the
tests runs it.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SINKHORN_SECONDS = [0.0]  # wall
SINKHORN_CPU = [0.0]


class MLPLayers(nn.Module):
    def __init__(self, layers, dropout=0.0, bn=False):
        super().__init__()
        modules = []
        last = len(layers) - 2
        for idx, (input_size, output_size) in enumerate(zip(layers[:-1], layers[1:])):
            modules.append(nn.Dropout(p=dropout))
            modules.append(nn.Linear(input_size, output_size))
            if bn and idx != last:
                modules.append(nn.BatchNorm1d(num_features=output_size))
            if idx != last:
                modules.append(nn.ReLU())
        self.mlp_layers = nn.Sequential(*modules)
        self.apply(self.init_weights)

    @staticmethod
    def init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight.data)
            if module.bias is not None:
                module.bias.data.fill_(0.0)

    def forward(self, x):
        return self.mlp_layers(x)


def kmeans(samples, k, iters=10):
    """Lloyd's algorithm from k distinct random rows (stands in for sklearn's KMeans)."""
    x = samples.detach()
    centers = x[torch.randperm(x.shape[0])[:k]].clone()
    for _ in range(iters):
        d = (x * x).sum(1, keepdim=True) + (centers * centers).sum(1) - 2 * x @ centers.t()
        labels = d.argmin(1)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).unsqueeze(1).to(x.dtype)
        centers = torch.where(counts > 0, sums / counts.clamp(min=1), centers)
    return centers


@torch.no_grad()
def sinkhorn_algorithm(distances, epsilon, sinkhorn_iterations):
    start = time.perf_counter()
    cpu_start = time.process_time()
    Q = torch.exp(-distances / epsilon)
    B = Q.shape[0]
    K = Q.shape[1]
    Q /= Q.sum(-1, keepdim=True).sum(-2, keepdim=True)
    for _ in range(sinkhorn_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= B
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= K
    Q *= B
    SINKHORN_SECONDS[0] += time.perf_counter() - start
    SINKHORN_CPU[0] += time.process_time() - cpu_start
    return Q


class VectorQuantizer(nn.Module):
    def __init__(self, n_e, e_dim, beta, sk_epsilon, sk_iters, kmeans_iters=10):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.sk_epsilon, self.sk_iters, self.kmeans_iters = sk_epsilon, sk_iters, kmeans_iters
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.zero_()
        self.initted = False

    @staticmethod
    def center_distance_for_constraint(distances):
        max_distance = distances.max()
        min_distance = distances.min()
        middle = (max_distance + min_distance) / 2
        amplitude = max_distance - middle + 1e-5
        return (distances - middle) / amplitude

    def forward(self, x, use_sk=True):
        latent = x.view(-1, self.e_dim)
        if not self.initted and self.training:
            self.embedding.weight.data.copy_(kmeans(latent, self.n_e, self.kmeans_iters))
            self.initted = True
        d = (torch.sum(latent**2, dim=1, keepdim=True) +
             torch.sum(self.embedding.weight**2, dim=1, keepdim=True).t() -
             2 * torch.matmul(latent, self.embedding.weight.t()))
        if not use_sk or self.sk_epsilon <= 0:
            indices = torch.argmin(d, dim=-1)
        else:
            d = self.center_distance_for_constraint(d).double()
            q = sinkhorn_algorithm(d, self.sk_epsilon, self.sk_iters)
            if torch.isnan(q).any() or torch.isinf(q).any():
                print("Sinkhorn Algorithm returns nan/inf values.")
            indices = torch.argmax(q, dim=-1)
        x_q = self.embedding(indices).view(x.shape)
        commitment_loss = F.mse_loss(x_q.detach(), x)
        codebook_loss = F.mse_loss(x_q, x.detach())
        loss = codebook_loss + self.beta * commitment_loss
        x_q = x + (x_q - x).detach()
        return x_q, loss, indices.view(x.shape[:-1])


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, n_e_list, e_dim, sk_epsilons, beta, sk_iters):
        super().__init__()
        self.vq_layers = nn.ModuleList([
            VectorQuantizer(n_e, e_dim, beta, eps, sk_iters)
            for n_e, eps in zip(n_e_list, sk_epsilons)
        ])

    def forward(self, x, use_sk=True):
        losses, indices, x_q, residual = [], [], 0, x
        for quantizer in self.vq_layers:
            x_res, loss, idx = quantizer(residual, use_sk=use_sk)
            residual = residual - x_res
            x_q = x_q + x_res
            losses.append(loss)
            indices.append(idx)
        return x_q, torch.stack(losses).mean(), torch.stack(indices, dim=-1)


class RQVAE(nn.Module):
    def __init__(self, in_dim, layers, e_dim, num_emb_list, sk_epsilons, beta=0.25,
                 quant_loss_weight=1.0, sk_iters=50, dropout=0.0, bn=False):
        super().__init__()
        self.quant_loss_weight = quant_loss_weight
        self.encoder = MLPLayers([in_dim] + layers + [e_dim], dropout, bn)
        self.rq = ResidualVectorQuantizer(num_emb_list, e_dim, sk_epsilons, beta, sk_iters)
        self.decoder = MLPLayers([e_dim] + layers[::-1] + [in_dim], dropout, bn)

    def forward(self, x, use_sk=True):
        x_q, rq_loss, indices = self.rq(self.encoder(x), use_sk=use_sk)
        return self.decoder(x_q), rq_loss, indices

    def compute_loss(self, out, quant_loss, xs):
        recon = F.mse_loss(out, xs, reduction="mean")
        return recon + self.quant_loss_weight * quant_loss, recon


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="Beauty", help="Beauty or Instruments")
    parser.add_argument("--data_dir",
                        default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "../../shared/data/sasrec"))
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--layers", default="512,256,128,64")
    parser.add_argument("--e_dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup_epochs", type=int, default=50)
    parser.add_argument("--sk_last", type=float, default=0.003)
    parser.add_argument("--sk_iters", type=int, default=50)
    parser.add_argument("--bn", type=int, default=0)
    parser.add_argument("--steps", type=int, default=120, help="timed steps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(2024)
    data = torch.from_numpy(
        np.load(os.path.join(args.data_dir, f"{args.data}-32d-sasrec.npy")).astype(np.float32))
    n, d = data.shape
    layers = [int(s) for s in args.layers.split(",")]
    sk = [0.0] * (args.levels - 1) + [args.sk_last]
    model = RQVAE(d, layers, args.e_dim, [args.k] * args.levels, sk, sk_iters=args.sk_iters,
                  bn=bool(args.bn))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(n / args.batch)
    warmup_steps = args.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
    model.train()

    def batches():
        while True:
            order = torch.randperm(n)
            for b in range(steps_per_epoch):
                yield data[order[b * args.batch:(b + 1) * args.batch]]

    def step(xb):
        optimizer.zero_grad()
        out, rq_loss, _ = model(xb)
        loss, _ = model.compute_loss(out, rq_loss, xb)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()

    source = batches()
    step(next(source))  # k-means initialisation of the codebooks and warm-up: not timed
    SINKHORN_SECONDS[0] = 0.0
    SINKHORN_CPU[0] = 0.0
    items = 0
    loss = float("nan")
    start = time.perf_counter()
    cpu_start = time.process_time()
    for _ in range(args.steps):
        xb = next(source)
        items += xb.shape[0]
        loss = step(xb)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(f"torch {torch.__version__} peer: {args.data} {n} x {d}, layers {args.layers}, "
          f"e_dim {args.e_dim}, {args.levels} x {args.k}, batch {args.batch}, sk_last "
          f"{args.sk_last} ({args.sk_iters} iters), bn {args.bn}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"timed {args.steps} steps, {items} items ({items / n:.2f} passes), last loss "
          f"{loss:.5f}: {1e3 * seconds / args.steps:.2f} ms per step, "
          f"{1e3 * seconds * 1024 / items:.2f} ms per 1024 items, {items / seconds:.0f} "
          f"samples/s, Sinkhorn {1e3 * SINKHORN_SECONDS[0] / args.steps:.2f} ms per step "
          f"({100 * SINKHORN_SECONDS[0] / seconds:.0f}% of wall)")
    print(f"process CPU time: {1e3 * cpu / args.steps:.2f} ms per step, "
          f"{1e3 * cpu * 1024 / items:.2f} ms per 1024 items (wall / CPU {seconds / cpu:.2f}; "
          f"above 1 means the thread waited for a core); Sinkhorn "
          f"{1e3 * SINKHORN_CPU[0] / args.steps:.2f} ms per step ({100 * SINKHORN_CPU[0] / cpu:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
