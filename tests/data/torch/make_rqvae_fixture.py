#!/usr/bin/python3
"""Makes the PyTorch RQ-VAE checkpoints of tests/torch_checkpoint_test.cc.

Run once with Debian's PyTorch (apt-get install python3-torch; not needed by the build or the
tests) from this directory:  /usr/bin/python3 make_rqvae_fixture.py

The model classes below re-implement the seed's pipeline (LC-Rec's index/: models/layers.py
MLPLayers, models/vq.py VectorQuantizer, models/rq.py ResidualVectorQuantizer, models/rqvae.py
RQVAE, main.py's argparse, trainer.py's checkpoint dict) so that the module names, hence the
state-dict names, are the pipeline's: MLPLayers is an nn.Sequential `mlp_layers` of, per layer,
Dropout, Linear, [BatchNorm1d,] activation (no batch norm or activation after the last Linear),
so the Linears are mlp_layers.1, .4, .7 without batch norm and .1, .5, .9 with it; each level of
`rq.vq_layers` is an nn.Embedding `embedding`; codes are argmin of the seed's distance
sum(x^2) + sum(e^2) - 2 x e^T (use_sk=False, as generate_indices' first pass and the evaluation).

Writes, for `bn` (bn=True, dropout 0) and `dropout` (bn=False, dropout 0.1):
  rqvae_<name>.pth   torch.save(state, pickle_protocol=4) of trainer.py's dict: args (an
                     argparse.Namespace from the seed's parser), epoch, best_loss,
                     best_collision_rate, state_dict, optimizer (AdamW's state_dict)
  rqvae_<name>.npz   inputs (n x 32 float32), codes (n x 3 int64) and latents (n x 16 float32)
                     of the model in eval mode
and rqvae_bn_state_dict.pth, the bn model's bare state dict (torch.save's default protocol 2).

The inputs kept in the .npz are those whose nearest codeword wins by a clear margin at every
level (see MARGIN): a float32 near-tie is decided by rounding, which no two implementations
(PyTorch's kernels, quantd's GEMM) need to share, so only clear winners make an exact test.
"""

import argparse
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DIM = 32
N_TRAIN = 400
N_KEEP = 300
STEPS = 300
BATCH = 100
# Smallest accepted gap between the two nearest codewords' distances, relative to the nearest.
MARGIN = 1e-3


def activation_module(name):
    name = name.lower()
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU,
            "leakyrelu": nn.LeakyReLU}.get(name, lambda: None)()


class MLPLayers(nn.Module):
    """The seed's MLPLayers: module indices as there, Xavier-normal weights, zero biases."""

    def __init__(self, layers, dropout=0.0, activation="relu", bn=False):
        super().__init__()
        modules = []
        last = len(layers) - 2
        for idx, (d_in, d_out) in enumerate(zip(layers[:-1], layers[1:])):
            modules.append(nn.Dropout(p=dropout))
            modules.append(nn.Linear(d_in, d_out))
            if bn and idx != last:
                modules.append(nn.BatchNorm1d(num_features=d_out))
            act = activation_module(activation)
            if act is not None and idx != last:
                modules.append(act)
        self.mlp_layers = nn.Sequential(*modules)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight.data)
                m.bias.data.fill_(0.0)

    def forward(self, x):
        return self.mlp_layers(x)


class VectorQuantizer(nn.Module):
    def __init__(self, n_e, e_dim, beta=0.25):
        super().__init__()
        self.n_e = n_e
        self.e_dim = e_dim
        self.beta = beta
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    def distances(self, latent):
        w = self.embedding.weight
        return (torch.sum(latent ** 2, dim=1, keepdim=True)
                + torch.sum(w ** 2, dim=1, keepdim=True).t()
                - 2 * torch.matmul(latent, w.t()))

    def forward(self, x):
        latent = x.view(-1, self.e_dim)
        indices = torch.argmin(self.distances(latent), dim=-1)
        x_q = self.embedding(indices).view(x.shape)
        commitment_loss = F.mse_loss(x_q.detach(), x)
        codebook_loss = F.mse_loss(x_q, x.detach())
        loss = codebook_loss + self.beta * commitment_loss
        x_q = x + (x_q - x).detach()
        return x_q, loss, indices.view(x.shape[:-1])


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, n_e_list, e_dim, sk_epsilons, beta=0.25):
        super().__init__()
        # zip() as the seed: a shorter sk_epsilons gives fewer levels.
        self.vq_layers = nn.ModuleList(
            [VectorQuantizer(n_e, e_dim, beta=beta) for n_e, _ in zip(n_e_list, sk_epsilons)])

    def forward(self, x):
        losses, all_indices = [], []
        x_q = 0
        residual = x
        for quantizer in self.vq_layers:
            x_res, loss, indices = quantizer(residual)
            residual = residual - x_res
            x_q = x_q + x_res
            losses.append(loss)
            all_indices.append(indices)
        return x_q, torch.stack(losses).mean(), torch.stack(all_indices, dim=-1)


class RQVAE(nn.Module):
    def __init__(self, in_dim, args):
        super().__init__()
        dims = [in_dim] + args.layers + [args.e_dim]
        self.quant_loss_weight = args.quant_loss_weight
        self.encoder = MLPLayers(dims, dropout=args.dropout_prob, bn=args.bn)
        self.rq = ResidualVectorQuantizer(args.num_emb_list, args.e_dim, args.sk_epsilons,
                                          beta=args.beta)
        self.decoder = MLPLayers(dims[::-1], dropout=args.dropout_prob, bn=args.bn)

    def forward(self, x):
        x_q, rq_loss, indices = self.rq(self.encoder(x))
        out = self.decoder(x_q)
        loss_recon = F.mse_loss(out, x, reduction="mean")
        return loss_recon + self.quant_loss_weight * rq_loss, indices


def seed_parser():
    """main.py's parser: the seed's option names, its defaults where its notes give them, and
    its type=bool flags (so `--bn False` would be True, as in the seed's scripts)."""
    p = argparse.ArgumentParser(description="Index")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=5000)
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--eval_step", type=int, default=50)
    p.add_argument("--learner", type=str, default="AdamW")
    p.add_argument("--lr_scheduler_type", type=str, default="constant")
    p.add_argument("--warmup_epochs", type=int, default=50)
    p.add_argument("--data_path", type=str, default="../data/Games/Games.emb-llama-td.npy")
    p.add_argument("--weight_decay", type=float, default=1e-4)
    p.add_argument("--dropout_prob", type=float, default=0.0)
    p.add_argument("--bn", type=bool, default=False)
    p.add_argument("--loss_type", type=str, default="mse")
    p.add_argument("--kmeans_init", type=bool, default=True)
    p.add_argument("--large_scale_kmeans", type=bool, default=False)
    p.add_argument("--kmeans_iters", type=int, default=100)
    p.add_argument("--sk_epsilons", type=float, nargs="+", default=[0.0, 0.0, 0.0])
    p.add_argument("--sk_iters", type=int, default=50)
    p.add_argument("--device", type=str, default="cuda:0")
    p.add_argument("--num_emb_list", type=int, nargs="+", default=[256, 256, 256])
    p.add_argument("--e_dim", type=int, default=32)
    p.add_argument("--quant_loss_weight", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--layers", type=int, nargs="+", default=[2048, 1024, 512, 256, 128, 64])
    p.add_argument("--save_limit", type=int, default=5)
    p.add_argument("--ckpt_dir", type=str, default="")
    p.add_argument("--use_wandb", type=bool, default=False)
    p.add_argument("--wandb_project", type=str, default="rqvae")
    p.add_argument("--wandb_name", type=str, default=None)
    return p


def mixture(rng, n):
    centers = rng.normal(size=(8, DIM)) * 2.0
    labels = rng.integers(0, 8, size=n)
    return (centers[labels] + rng.normal(size=(n, DIM)) * 0.5).astype(np.float32)


def kmeans_init(model, x):
    """Codebooks from a few Lloyd iterations on the first batch's residuals (the seed fits
    sklearn's KMeans there; any clustering will do for a fixture)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        residual = model.encoder(x)
        for vq in model.rq.vq_layers:
            centers = residual[torch.randperm(len(residual), generator=g)[:vq.n_e]].clone()
            for _ in range(10):
                labels = torch.cdist(residual, centers).argmin(dim=1)
                for k in range(vq.n_e):
                    members = residual[labels == k]
                    if len(members):
                        centers[k] = members.mean(dim=0)
            vq.embedding.weight.data.copy_(centers)
            residual = residual - centers[torch.cdist(residual, centers).argmin(dim=1)]


def clear_margins(model, x):
    """Boolean per row: every level's nearest codeword wins by MARGIN (relative)."""
    keep = torch.ones(len(x), dtype=torch.bool)
    with torch.no_grad():
        residual = model.encoder(x).double()
        for vq in model.rq.vq_layers:
            w = vq.embedding.weight.double()
            d = torch.cdist(residual, w) ** 2
            top2 = torch.topk(d, 2, dim=1, largest=False).values
            keep &= (top2[:, 1] - top2[:, 0]) > MARGIN * (top2[:, 0] + 1e-3)
            residual = residual - w[d.argmin(dim=1)]
    return keep


def make(name, argv, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    args = seed_parser().parse_args(argv)
    x = torch.from_numpy(mixture(rng, N_TRAIN))
    model = RQVAE(DIM, args)
    kmeans_init(model, x[:BATCH])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    best_loss = math.inf
    model.train()
    for step in range(STEPS):
        batch = x[torch.randperm(N_TRAIN)[:BATCH]]
        opt.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        best_loss = min(best_loss, loss.item() * (N_TRAIN // BATCH))
    model.eval()
    with torch.no_grad():
        latents = model.encoder(x)
        _, _, codes = model.rq(latents)
    full = ["-".join(map(str, c.tolist())) for c in codes]
    collision_rate = (len(full) - len(set(full))) / len(full)
    keep = clear_margins(model, x)
    assert keep.sum() >= N_KEEP, f"{name}: only {int(keep.sum())} clear rows"
    rows = torch.nonzero(keep).flatten()[:N_KEEP]
    state = {
        "args": args,
        "epoch": STEPS // (N_TRAIN // BATCH) - 1,
        "best_loss": best_loss,
        "best_collision_rate": collision_rate,
        "state_dict": model.state_dict(),
        "optimizer": opt.state_dict(),
    }
    torch.save(state, f"rqvae_{name}.pth", pickle_protocol=4)
    np.savez(f"rqvae_{name}.npz", inputs=x[rows].numpy(), codes=codes[rows].numpy().astype(np.int64),
             latents=latents[rows].numpy())
    used = [len(set(codes[:, l].tolist())) for l in range(codes.shape[1])]
    print(f"{name}: loss {best_loss:.4f}, collision rate {collision_rate:.4f}, codes used {used}, "
          f"{int(keep.sum())} clear rows")
    return model


COMMON = ["--layers", "64", "32", "--e_dim", "16", "--num_emb_list", "16", "16", "16",
          "--lr", "0.003", "--batch_size", str(BATCH), "--epochs", str(STEPS * BATCH // N_TRAIN),
          "--device", "cpu", "--kmeans_iters", "10", "--eval_step", "1"]

if __name__ == "__main__":
    bn_model = make("bn", COMMON + ["--bn", "True"], seed=2024)
    torch.save(bn_model.state_dict(), "rqvae_bn_state_dict.pth")
    make("dropout", COMMON + ["--dropout_prob", "0.1"], seed=2025)
