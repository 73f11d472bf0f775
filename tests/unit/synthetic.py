"""Synthetic sweep results from known laws, shared by the fitting and CLI tests."""

from __future__ import annotations

import numpy as np

PAPER_BUDGETS = [1e17, 3e17, 6e17, 1e18, 3e18, 6e18]

# A known surface L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla's published values).
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
A_TRUE = BETA / (ALPHA + BETA)  # N* ~ C^a
DECAY_TRUE = ALPHA * BETA / (ALPHA + BETA)  # L* - E ~ C^-decay


def paper_rows(
    n_coef: float = 0.0009,
    n_exp: float = 0.5681,
    l_coef: float = 2.3943,
    l_exp: float = -0.0273,
    noise: float = 0.0,
    seed: int = 0,
    sizes: int = 7,
) -> list[dict[str, float]]:
    """isoFLOP points whose parabola minima lie exactly on the given laws (C = 6ND)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in PAPER_BUDGETS:
        n_opt, l_opt = n_coef * c**n_exp, l_coef * c**l_exp
        for dx in np.linspace(-0.6, 0.6, sizes):
            n = n_opt * 10**dx
            loss = (l_opt + 0.05 * dx**2) * (1 + noise * rng.normal())
            rows.append({"budget": c, "params": n, "tokens": c / (6 * n), "loss": loss})
    return rows


def surface_rows(seed: int = 0, noise: float = 0.004) -> list[dict[str, float]]:
    """Trials on the known surface, ladders centred on the true optimum, multiplicative noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in [1e18, 3e18, 1e19, 3e19, 1e20, 3e20]:
        n_opt = G * (c / 6) ** A_TRUE
        for dx in np.linspace(-0.8, 0.8, 9):
            n = n_opt * 10**dx
            d = c / (6 * n)
            loss = (E + A / n**ALPHA + B / d**BETA) * np.exp(rng.normal(0, noise))
            rows.append({"budget": c, "params": n, "tokens": d, "loss": loss})
    return rows
